// The recurrent cells of the contract (charlstm/backends/contract.py), each a type that the one
// kernel skeleton takes as a compile-time parameter: its gate count, what it saves, whether it
// carries a cell state, and its pointwise step forward and backward for one (batch row, unit)
// pair once the recurrent matmul of that pair is summed.  Everything else -- the matmul (FMA or
// tensor cores), staging, the grid barrier, packed rows, the exchange between steps -- is
// written once, for every cell, in the other files (cell_update.cuh calls these steps).
//
// A Cell has
//   kCode              its enum charlstm_cell code (launch.h);
//   kGates             G: gate blocks of H in xproj and in the rows of W_hh;
//   kSaved             S: blocks of H it saves per step in `gates` (float32);
//   kHasC              whether it carries a cell state c (c0, cT, cs, dcT, dc0);
//   kCarry             what its backward carries per (row, unit) to the previous step besides
//                      the matmul (in dcbuf): nothing, the LSTM's dc, or the GRU's dh * z;
//   kHidIsDgates       whether the gradient of h[t-1] W_hh^T (dhid, the backward's matmul
//                      operand) equals d xproj (dgates); the GRU's n block is scaled by r;
//   forward(a, xr, ...)  the step: a[g] = (h[t-1] W_hh^T) of gate g in float32, xr the row of
//                      xproj[t]; returns h[t] before rounding, fills the S saved values and,
//                      for the LSTM, c[t-1] and c[t];
//   backward(p, ...)   its derivative from the saved values: d xproj and dhid of every gate,
//                      returns what it carries (kCarry).
#pragma once

#include "device_common.cuh"

namespace charlstm {

// ---------------------------------------------------------------- parameters
// The fields a cell does not use are null (c0, cT, cs: LSTM only; b_hn: GRU only).
template <typename T>
struct FwdParams {
  const T* xproj;      // [T, B, G*H]
  const T* w;          // [G*H, H]
  const T* h0;         // [B, H]
  const T* c0;         // [B, H]
  const T* b_hn;       // [H] or nullptr (zero)
  const int* lengths;  // [B] or nullptr
  T* hs;               // [T, B, H]
  T* hT;               // [B, H]
  T* cT;               // [B, H]
  float* cs;           // [T, B, H]
  float* gates;        // [T, B, S*H]
  T* hbuf;             // [2, B, H]: h state, double-buffered by step parity
  unsigned* counter;   // grid barrier arrivals (persistent path)
  int Tn, B, H;
};

// The fields a cell does not use are null (dcT, dc0: LSTM; dcbuf: RNN).  The LSTM reads c0/cs,
// the GRU h0/hs (h[t-1] enters its backward), the RNN neither: they share storage.  (A 15th
// pointer made the struct larger than 128 bytes, and ptxas 13.0 then gave the LSTM's stepwise
// backward 48 registers instead of 40 on sm_90: 5 blocks per SM instead of 6.)
template <typename T>
struct BwdParams {
  const T* dhs;        // [T, B, H]
  const T* dhT;        // [B, H]
  const T* dcT;        // [B, H]
  const T* wt;         // [H, G*H] (w_hh transposed)
  union {
    const T* c0;  // LSTM: [B, H]
    const T* h0;  // GRU: [B, H]
  };
  union {
    const float* cs;  // LSTM: [T, B, H]
    const T* hs;      // GRU: [T, B, H]
  };
  const float* gates;  // [T, B, S*H]
  const int* lengths;  // [B] or nullptr
  T* dgates;           // [T, B, G*H]
  T* dh0;              // [B, H]
  T* dc0;              // [B, H]
  float* dzbuf;        // [2, B, G*H]: dhid exchange, double-buffered by step parity
  float* dcbuf;        // [B, H]: the carry between steps (each element owned by one thread)
  unsigned* counter;
  int Tn, B, H;
};

enum class Carry { kNone, kCellState, kHidden };

// The cell state of one (row, unit) across a forward step: c[t-1] and c[t] (LSTM only).
struct CState {
  float prev = 0.0f, next = 0.0f;
};

// ---------------------------------------------------------------- LSTM
// i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (x + a); c[t] = f*c[t-1] + i*g (float32);
// h[t] = o*tanh(c[t]).  Saved: i, f, g, o.
struct LstmCell {
  static constexpr int kCode = CHARLSTM_CELL_LSTM, kGates = 4, kSaved = 4;
  static constexpr bool kHasC = true, kHidIsDgates = true;
  static constexpr Carry kCarry = Carry::kCellState;

  // load_c_prev() reads c[t-1]; it is called after the gates (loading c[t-1] first made ptxas
  // 13.0 spill in the float16 persistent forward on sm_90).
  template <typename T, class LoadC>
  static __device__ __forceinline__ float forward(const float (&a)[4], const T* xr, int H, int j,
                                                  float /*h_prev*/, float /*b_hn*/,
                                                  LoadC load_c_prev, CState& c, float (&sv)[4]) {
    const float ig = sigmoidf_(a[0] + to_f(xr[j]));
    const float fg = sigmoidf_(a[1] + to_f(xr[H + j]));
    const float gg = tanhf(a[2] + to_f(xr[2 * H + j]));
    const float og = sigmoidf_(a[3] + to_f(xr[3 * H + j]));
    c.prev = load_c_prev();
    c.next = fg * c.prev + ig * gg;
    sv[0] = ig;
    sv[1] = fg;
    sv[2] = gg;
    sv[3] = og;
    return og * tanhf(c.next);
  }

  // dh: the full gradient of h[t]; carry: dc from step t+1 (dcT at the row's last step).
  template <typename T>
  static __device__ __forceinline__ float backward(const BwdParams<T>& p, long long row, int s,
                                                   int b, int j, float dh, float carry,
                                                   float (&dz)[4], float (&dhid)[4]) {
    const int H = p.H;
    const float* gr = p.gates + row * (4LL * H);
    const float ig = gr[j], fg = gr[H + j], gg = gr[2 * H + j], og = gr[3 * H + j];
    const float ct = p.cs[row * H + j];
    const float cp = (s > 0) ? p.cs[(row - p.B) * H + j] : to_f(p.c0[(long long)b * H + j]);
    const float tc = tanhf(ct);
    const float dc = carry + dh * og * (1.0f - tc * tc);
    dz[0] = dc * gg * ig * (1.0f - ig);
    dz[1] = dc * cp * fg * (1.0f - fg);
    dz[2] = dc * ig * (1.0f - gg * gg);
    dz[3] = dh * tc * og * (1.0f - og);
#pragma unroll
    for (int g = 0; g < 4; ++g) dhid[g] = dz[g];
    return dc * fg;
  }
};

// ---------------------------------------------------------------- GRU (torch's convention)
// r, z = sigmoid(x_r + a_r), sigmoid(x_z + a_z); hn = a_n + b_hn; n = tanh(x_n + r*hn);
// h[t] = (1-z)*n + z*h[t-1].  Saved: r, z, n, hn.
struct GruCell {
  static constexpr int kCode = CHARLSTM_CELL_GRU, kGates = 3, kSaved = 4;
  static constexpr bool kHasC = false, kHidIsDgates = false;
  static constexpr Carry kCarry = Carry::kHidden;

  template <typename T, class LoadC>
  static __device__ __forceinline__ float forward(const float (&a)[3], const T* xr, int H, int j,
                                                  float h_prev, float b_hn, LoadC, CState&,
                                                  float (&sv)[4]) {
    const float r = sigmoidf_(a[0] + to_f(xr[j]));
    const float z = sigmoidf_(a[1] + to_f(xr[H + j]));
    const float hn = a[2] + b_hn;
    const float n = tanhf(to_f(xr[2 * H + j]) + r * hn);
    sv[0] = r;
    sv[1] = z;
    sv[2] = n;
    sv[3] = hn;
    return (1.0f - z) * n + z * h_prev;
  }

  // dh: the gradient of h[t] through W_hh and hs; carry: the part through z (dh[t+1] * z[t+1]),
  // 0 at the row's last step.  h[t-1] is read back from hs (or h0).
  template <typename T>
  static __device__ __forceinline__ float backward(const BwdParams<T>& p, long long row, int s,
                                                   int b, int j, float dh, float carry,
                                                   float (&dz)[3], float (&dhid)[3]) {
    const int H = p.H;
    const float* gr = p.gates + row * (4LL * H);
    const float r = gr[j], z = gr[H + j], n = gr[2 * H + j], hn = gr[3 * H + j];
    const float hp = (s > 0) ? to_f(p.hs[(row - p.B) * H + j]) : to_f(p.h0[(long long)b * H + j]);
    const float d = dh + carry;
    const float dn = d * (1.0f - z) * (1.0f - n * n);
    dz[0] = dn * hn * r * (1.0f - r);
    dz[1] = d * (hp - n) * z * (1.0f - z);
    dz[2] = dn;
    dhid[0] = dz[0];
    dhid[1] = dz[1];
    dhid[2] = dn * r;
    return d * z;
  }
};

// ---------------------------------------------------------------- vanilla RNN
// h[t] = act(x + a), act = tanh or relu.  Saved: h[t] before rounding (its derivative needs
// only it: 1 - h^2, or h > 0).
enum class Act { kTanh, kRelu };

template <Act kAct>
struct RnnCell {
  static constexpr int kCode = kAct == Act::kTanh ? CHARLSTM_CELL_RNN_TANH : CHARLSTM_CELL_RNN_RELU;
  static constexpr int kGates = 1, kSaved = 1;
  static constexpr bool kHasC = false, kHidIsDgates = true;
  static constexpr Carry kCarry = Carry::kNone;

  template <typename T, class LoadC>
  static __device__ __forceinline__ float forward(const float (&a)[1], const T* xr, int /*H*/,
                                                  int j, float /*h_prev*/, float /*b_hn*/, LoadC,
                                                  CState&, float (&sv)[1]) {
    const float v = a[0] + to_f(xr[j]);
    sv[0] = kAct == Act::kTanh ? tanhf(v) : fmaxf(v, 0.0f);
    return sv[0];
  }

  template <typename T>
  static __device__ __forceinline__ float backward(const BwdParams<T>& p, long long row, int /*s*/,
                                                   int /*b*/, int j, float dh, float /*carry*/,
                                                   float (&dz)[1], float (&dhid)[1]) {
    const float h = p.gates[row * p.H + j];
    dz[0] = kAct == Act::kTanh ? dh * (1.0f - h * h) : (h > 0.0f ? dh : 0.0f);
    dhid[0] = dz[0];
    return 0.0f;
  }
};

using RnnTanhCell = RnnCell<Act::kTanh>;
using RnnReluCell = RnnCell<Act::kRelu>;

// The cell type of an enum charlstm_cell code.
template <int kCell>
struct CellOf;
template <>
struct CellOf<CHARLSTM_CELL_LSTM> {
  using type = LstmCell;
};
template <>
struct CellOf<CHARLSTM_CELL_GRU> {
  using type = GruCell;
};
template <>
struct CellOf<CHARLSTM_CELL_RNN_TANH> {
  using type = RnnTanhCell;
};
template <>
struct CellOf<CHARLSTM_CELL_RNN_RELU> {
  using type = RnnReluCell;
};

// The device cells agree with the host's table of shapes (launch_plan.h).
template <class Cell>
constexpr bool cell_matches_table() {
  return Cell::kGates == cell_gates(Cell::kCode) && Cell::kSaved == cell_saved(Cell::kCode) &&
         Cell::kHasC == cell_has_c(Cell::kCode) &&
         (Cell::kCarry == Carry::kCellState) == Cell::kHasC;
}
static_assert(cell_matches_table<LstmCell>() && cell_matches_table<GruCell>() &&
                  cell_matches_table<RnnTanhCell>() && cell_matches_table<RnnReluCell>(),
              "cells.cuh and launch_plan.h disagree on a cell's shape");

}  // namespace charlstm
