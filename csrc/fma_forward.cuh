// The forward of the FMA paths, for every cell (the template parameter Cell, cells.cuh): the
// per-step matmul in float32 FMA on CUDA cores, then the cell update (cell_update.cuh), for the
// persistent kernel (one cooperative launch for the whole sequence, W_hh slice in shared
// memory, a grid barrier per step) and the stepwise kernel (one launch per step, W_hh read
// through L2).  The kernels in kernels.cuh only declare the dynamic shared memory and call these
// bodies, which the host emulator (csrc/emu) runs too.
//
// Persistent: block i owns hidden units j0 = i*units .. j0+units-1, i.e. the G*units rows of
// W_hh (all G gates of those units: LSTM i, f, g, o; GRU r, z, n; RNN one), copied once into
// shared memory and kept for all steps.  Step t: stage h[t-1] (all B rows, in chunks of bb rows)
// from the global exchange buffer hbuf[t&1] into shared memory, the G sums of
// h[t-1] @ W_slice^T for the block's units, the cell update and the write of h[t] into
// hbuf[(t+1)&1] -- all fused -- then one grid barrier before step t+1.  The cell state of a
// (row, unit) pair never leaves its owner thread's hands: c[t-1] is re-read from cs[t-1],
// which that same thread wrote.
#pragma once

#include "device_common.cuh"
#include "grid_barrier.cuh"
#include "cell_update.cuh"

namespace charlstm {

// One forward step for the block's units [j0, j0+nu) and batch rows [b_begin, b_end).
// W row (gate g, local unit u) starts at wrows + g * gate_stride + u * H.  Each warp item keeps
// a register tile of G gates x kNB rows of sums.
// hsm: shared staging for `bb` rows of h[t-1] (nullptr: read h[t-1] from global directly).
// kCoherent: h[t-1] was written by other blocks of this launch (persistent path).
template <class Cell, typename T, bool kCoherent>
__device__ void fwd_block_step(const FwdParams<T>& p, int t, const T* __restrict__ wrows,
                               long long gate_stride, int j0, int nu, int b_begin, int b_end,
                               int bb, T* hsm) {
  constexpr int G = Cell::kGates;
  const int H = p.H, B = p.B;
  const T* hsrc = (t == 0) ? p.h0 : p.hbuf + (long long)(t & 1) * B * H;
  T* hdst = p.hbuf + (long long)((t + 1) & 1) * B * H;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int bc = b_begin; bc < b_end; bc += bb) {
    const int nb = min(bb, b_end - bc);
    const T* hrow;
    if (hsm != nullptr) {
      __syncthreads();  // the previous chunk's readers are done with hsm
      const long long n = (long long)nb * H;
      const T* src = hsrc + (long long)bc * H;
      for (long long e = threadIdx.x; e < n; e += blockDim.x) hsm[e] = ld_x<kCoherent>(src + e);
      __syncthreads();
      hrow = hsm;
    } else {
      hrow = hsrc + (long long)bc * H;
    }
    const int ngroups = (nb + kNB - 1) / kNB;
    for (int item = warp; item < nu * ngroups; item += kWarps) {  // warp-uniform loop
      const int u = item % nu;
      const int q0 = (item / nu) * kNB;
      const int nq = min(kNB, nb - q0);
      float acc[G][kNB];
#pragma unroll
      for (int g = 0; g < G; ++g)
#pragma unroll
        for (int q = 0; q < kNB; ++q) acc[g][q] = 0.0f;
      const T* w0 = wrows + (long long)u * H;
      for (int k = lane; k < H; k += 32) {
        float wv[G];
#pragma unroll
        for (int g = 0; g < G; ++g) wv[g] = to_f(w0[g * gate_stride + k]);
#pragma unroll
        for (int q = 0; q < kNB; ++q) {
          if (q < nq) {
            const float hv = to_f(hrow[(long long)(q0 + q) * H + k]);
#pragma unroll
            for (int g = 0; g < G; ++g) acc[g][q] = fmaf(wv[g], hv, acc[g][q]);
          }
        }
      }
#pragma unroll
      for (int g = 0; g < G; ++g)
#pragma unroll
        for (int q = 0; q < kNB; ++q) acc[g][q] = warp_sum(acc[g][q]);
#pragma unroll
      for (int q = 0; q < kNB; ++q) {
        if (lane == q && q < nq) {
          const int j = j0 + u;
          const T h_prev = hrow[(long long)(q0 + q) * H + j];
          float a[G];
#pragma unroll
          for (int g = 0; g < G; ++g) a[g] = acc[g][q];
          fwd_cell<Cell, T>(p, t, bc + q0 + q, j, a, h_prev, hdst);
        }
      }
    }
  }
}

// Persistent forward: block blockIdx.x owns units [blockIdx.x*g.units, +g.units); smem holds
// its G*units W_hh rows (g.stage_offset bytes) then g.bb staged rows of h.
template <class Cell, typename T>
__device__ __forceinline__ void fwd_persistent_body(const FwdParams<T>& p,
                                                    const PersistentGeometry& g,
                                                    unsigned char* smem) {
  const int units = g.units, bb = g.bb;
  T* wsm = reinterpret_cast<T*>(smem);
  T* hsm = reinterpret_cast<T*>(smem + g.stage_offset);
  const int H = p.H;
  const int j0 = blockIdx.x * units;
  const int nu = min(units, H - j0);
  // W rows g*H + j0 .. g*H + j0 + nu - 1 are contiguous in W: copy them as one run per gate.
  const long long per_gate = (long long)nu * H;
  for (long long e = threadIdx.x; e < Cell::kGates * per_gate; e += blockDim.x) {
    const int gate = (int)(e / per_gate);
    const long long r = e - gate * per_gate;
    wsm[(long long)gate * units * H + r] = p.w[((long long)gate * H + j0) * H + r];
  }
  __syncthreads();
  for (int t = 0; t < p.Tn; ++t) {
    fwd_block_step<Cell, T, true>(p, t, wsm, (long long)units * H, j0, nu, 0, p.B, bb, hsm);
    if (t + 1 < p.Tn) grid_barrier(p.counter, gridDim.x * (unsigned)(t + 1));
  }
}

// Stepwise forward, step t: block (x, y) runs the step_tile, staging stage_rows rows of h at a
// time in smem (stage_rows == 0: no staging).
template <class Cell, typename T>
__device__ __forceinline__ void fwd_step_body(const FwdParams<T>& p, int t, int units, int rows,
                                              int stage_rows, unsigned char* smem) {
  const StepTile k = step_tile(p.H, p.B, units, rows);
  T* hsm = stage_rows > 0 ? reinterpret_cast<T*>(smem) : nullptr;
  fwd_block_step<Cell, T, false>(p, t, p.w + (long long)k.j0 * p.H, (long long)p.H * p.H, k.j0,
                                 k.nu, k.b0, k.b1, stage_rows > 0 ? stage_rows : rows, hsm);
}

}  // namespace charlstm
