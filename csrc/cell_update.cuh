// The pointwise update of one (batch row, unit) pair in each direction, for every cell: what
// every path (FMA or tensor-core matmul, persistent or stepwise) calls once the recurrent matmul
// of that pair is summed.  It owns what is the same for every cell -- packed rows (inactive rows
// keep their state, write hs = 0 and dgates = 0, and pass dhT/dcT through until their last
// step), the state and carry a thread keeps between steps, the final states -- and calls the
// cell's own step (cells.cuh) for the math.
#pragma once

#include "cells.cuh"
#include "device_common.cuh"

namespace charlstm {

// ---------------------------------------------------------------- forward
// a[g]: the sum (h[t-1] @ W_hh^T)[b][g*H + j] without xproj; h_prev: the D-typed state; hdst:
// the exchange buffer h[t] goes to.  Writes hs[t], gates[t], hdst, and c[t] to cs[t] (the same
// thread re-reads it next step: every path maps (b, j) to the same thread at every step), and
// hT/cT at the last step.  (The order of the loads and stores is the LSTM kernel's from before
// the cells were generalised: ptxas's register allocation is sensitive to it.)
template <class Cell, typename T>
__device__ __forceinline__ void fwd_cell(const FwdParams<T>& p, int t, int b, int j,
                                         const float (&a)[Cell::kGates], T h_prev, T* hdst) {
  const int H = p.H, B = p.B;
  const long long row = (long long)t * B + b;
  const long long bj = (long long)b * H + j;
  const T* xr = p.xproj + row * Cell::kGates * H;
  float* gr = p.gates + row * Cell::kSaved * H;
  // c[t-1] (LSTM): the same thread wrote cs[t-1][b][j] at the previous step.
  auto load_c_prev = [&] { return (t == 0) ? to_f(p.c0[bj]) : p.cs[(row - B) * H + j]; };
  float b_hn = 0.0f;
  if constexpr (Cell::kCode == CHARLSTM_CELL_GRU) b_hn = p.b_hn ? to_f(p.b_hn[j]) : 0.0f;
  CState c;
  float sv[Cell::kSaved];
  const T h_new = from_f<T>(
      Cell::template forward<T>(a, xr, H, j, to_f(h_prev), b_hn, load_c_prev, c, sv));
  const bool active = (p.lengths == nullptr) || (t < p.lengths[b]);
#pragma unroll
  for (int g = 0; g < Cell::kSaved; ++g) gr[g * H + j] = sv[g];
  const T h_keep = active ? h_new : h_prev;
  if constexpr (Cell::kHasC) {
    const float c_keep = active ? c.next : c.prev;
    p.cs[row * H + j] = c_keep;
    if (t == p.Tn - 1) p.cT[bj] = from_f<T>(c_keep);
  }
  p.hs[row * H + j] = active ? h_new : from_f<T>(0.0f);
  hdst[bj] = h_keep;
  if (t == p.Tn - 1) p.hT[bj] = h_keep;
}

// ---------------------------------------------------------------- backward
// Iteration s (T-1 down to 0; s == -1 writes dh0/dc0).  mv = (dhid[s+1] @ W_hh)[b][j] (0 when
// s == T-1).  Writes dgates[s] (d xproj, dtype D) and dhid[s] (float32) to dzdst, the carry to
// dcbuf (read back by this same thread at iteration s-1).
template <class Cell, typename T>
__device__ __forceinline__ void bwd_cell(const BwdParams<T>& p, int s, int b, int j, float mv,
                                         float* dzdst) {
  constexpr int G = Cell::kGates;
  const int H = p.H, B = p.B;
  const long long bj = (long long)b * H + j;
  // Contract: 1 <= lengths[b] <= T.  Clamping to T keeps a too-long row well defined; a row
  // with length <= 0 never ran and passes dhT/dcT straight through to dh0/dc0.
  const int len = (p.lengths == nullptr) ? p.Tn : min(p.lengths[b], p.Tn);
  if (s < 0) {  // after step 0: dh0 = dhid[0] @ W (+ the GRU's carry), dc0 = the LSTM's carry
    if (len >= 1) {
      float dh0 = mv;
      if constexpr (Cell::kCarry == Carry::kHidden) dh0 += p.dcbuf[bj];
      p.dh0[bj] = from_f<T>(dh0);
      if constexpr (Cell::kHasC) p.dc0[bj] = from_f<T>(p.dcbuf[bj]);
    } else {
      p.dh0[bj] = p.dhT[bj];
      if constexpr (Cell::kHasC) p.dc0[bj] = p.dcT[bj];
    }
    return;
  }
  const long long row = (long long)s * B + b;
  const long long GH = (long long)G * H;
  T* dgr = p.dgates + row * GH;
  float* dzr = dzdst + b * GH;
  if (s >= len) {  // inactive: no gradient; zeros keep the exchange buffer defined
#pragma unroll
    for (int g = 0; g < G; ++g) {
      dgr[g * H + j] = from_f<T>(0.0f);
      dzr[g * H + j] = 0.0f;
    }
    return;
  }
  // Row b's last active step is len-1; before it (in backward order) dh/dc pass through.
  float dh_in, carry = 0.0f;
  if (s == len - 1) {
    dh_in = to_f(p.dhT[bj]);
    if constexpr (Cell::kHasC) carry = to_f(p.dcT[bj]);
  } else {
    dh_in = mv;
    if constexpr (Cell::kCarry != Carry::kNone) carry = p.dcbuf[bj];  // this thread, at s+1
  }
  const float dh = dh_in + to_f(p.dhs[row * H + j]);
  float dz[G], dhid[G];
  const float carry_out = Cell::template backward<T>(p, row, s, b, j, dh, carry, dz, dhid);
  if constexpr (Cell::kCarry != Carry::kNone) p.dcbuf[bj] = carry_out;
#pragma unroll
  for (int g = 0; g < G; ++g) dgr[g * H + j] = from_f<T>(dz[g]);
#pragma unroll
  for (int g = 0; g < G; ++g) dzr[g * H + j] = dhid[g];
}

}  // namespace charlstm
