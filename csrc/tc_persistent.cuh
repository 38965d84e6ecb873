// The persistent paths with the per-step matmul on tensor cores (path persistent_tc; AUTO for
// 16-bit inputs from CHARLSTM_TC_MIN_BATCH rows), for every cell: the FMA persistent paths'
// ownership, staging and grid barrier with Z = A . X^T on WMMA (wmma_tiles.cuh) in place of the
// FMA sums; the cell update is the same (cell_update.cuh).
//   forward:  A = W_hh rows (gate g, local unit u) -> row m = g*units + u, K = H, X = h[t-1];
//   backward: A = W_hh^T rows (local unit u)       -> row m = u,           K = G*H, X = the
//             recurrent gradient dhid[s+1] of the previous iteration in the input dtype: for
//             the LSTM and the RNN the gate gradients dgates[s+1] (the values the backward
//             returns, as cuDNN's 16-bit backward multiplies them too), for the GRU its float32
//             dhid (n block scaled by r) from the exchange buffer, rounded when staged; the FMA
//             backward multiplies the float32 dhid.
// kernels.cuh wraps them as kernels; the host emulator runs them too.
#pragma once

#include "device_common.cuh"
#include "grid_barrier.cuh"
#include "cell_update.cuh"
#include "wmma_tiles.cuh"

namespace charlstm {

// Forward: block owns units [blockIdx.x*units, +units); its G*units W_hh rows sit in the A tile
// for all steps; per step and chunk of 16 rows, h[t-1] (written by every block at step t-1,
// read through L2) is staged as X and Z[g*units + u][q] are the gate sums of fwd_cell.
template <class Cell, typename T>
__device__ __forceinline__ void fwd_persistent_tc_body(const FwdParams<T>& p,
                                                       const PersistentGeometry& g,
                                                       unsigned char* smem) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  constexpr int G = Cell::kGates;
  const int H = p.H, B = p.B, units = g.units;
  const TcLayout L = tc_layout(H, units, G, sizeof(T));
  const TcTiles<T> tl = tc_tiles<T>(smem, L);
  const int j0 = blockIdx.x * units;
  const int nu = min(units, H - j0);
  tc_stage_weights<T>(tl.a, H, L, [&](int m, int k) {
    const int gate = m / units, u = m % units;
    return u < nu ? p.w[((long long)gate * H + j0 + u) * H + k] : from_f<T>(0.0f);
  });
  for (int t = 0; t < p.Tn; ++t) {
    const T* hsrc = (t == 0) ? p.h0 : p.hbuf + (long long)(t & 1) * B * H;
    T* hdst = p.hbuf + (long long)((t + 1) & 1) * B * H;
    for (int bc = 0; bc < B; bc += 16) {
      const int nb = min(16, B - bc);
      tc_stage_and_multiply<T>(hsrc + (long long)bc * H, H, nb, tl, L);
      for (int idx = threadIdx.x; idx < nu * nb; idx += blockDim.x) {
        const int u = idx % nu, q = idx / nu;
        float a[G];
#pragma unroll
        for (int gate = 0; gate < G; ++gate) a[gate] = tc_sum(tl.z, L, gate * units + u, q);
        fwd_cell<Cell, T>(p, t, bc + q, j0 + u, a, tl.x[q * L.ld + j0 + u], hdst);
      }
    }
    if (t + 1 < p.Tn) grid_barrier(p.counter, gridDim.x * (unsigned)(t + 1));
  }
#else
  tc_unsupported_arch(p, g, smem);
#endif
}

// Backward (column ownership, as bwd_persistent_body): block owns units
// [blockIdx.x*units, +units); its W_hh^T rows sit in the A tile for all iterations; per
// iteration s and chunk of 16 rows, dhid[s+1] (written by every block at iteration s+1, read
// through L2: dgates[s+1], or the GRU's float32 dzbuf[(s+1)&1]) is staged as X, and
// mv = Z[u][q] feeds bwd_cell.
template <class Cell, typename T>
__device__ __forceinline__ void bwd_persistent_tc_body(const BwdParams<T>& p,
                                                       const PersistentGeometry& g,
                                                       unsigned char* smem) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  const int H = p.H, B = p.B, units = g.units;
  const long long G = (long long)Cell::kGates * H;  // the length of a row of W^T and of dhid
  const TcLayout L = tc_bwd_layout(H, units, Cell::kGates, sizeof(T));
  const TcTiles<T> tl = tc_tiles<T>(smem, L);
  const int j0 = blockIdx.x * units;
  const int nu = min(units, H - j0);
  tc_stage_weights<T>(tl.a, (int)G, L, [&](int m, int r) {
    return m < nu ? p.wt[(long long)(j0 + m) * G + r] : from_f<T>(0.0f);
  });
  for (int s = p.Tn - 1; s >= -1; --s) {
    const bool need_mv = s < p.Tn - 1;
    float* dzdst = p.dzbuf + (long long)(s & 1) * B * G;  // used only when s >= 0
    for (int bc = 0; bc < B; bc += 16) {
      const int nb = min(16, B - bc);
      if (need_mv) {
        if constexpr (Cell::kHidIsDgates) {
          const T* src = p.dgates + ((long long)(s + 1) * B + bc) * G;
          tc_stage_and_multiply<T>(src, (int)G, nb, tl, L);
        } else {
          const float* src = p.dzbuf + ((long long)((s + 1) & 1) * B + bc) * G;
          tc_stage_and_multiply<T>(src, (int)G, nb, tl, L);
        }
      }
      for (int idx = threadIdx.x; idx < nu * nb; idx += blockDim.x) {
        const int u = idx % nu, q = idx / nu;
        bwd_cell<Cell, T>(p, s, bc + q, j0 + u, need_mv ? tc_sum(tl.z, L, u, q) : 0.0f, dzdst);
      }
    }
    if (s >= 0) grid_barrier(p.counter, gridDim.x * (unsigned)(p.Tn - s));
  }
#else
  tc_unsupported_arch(p, g, smem);
#endif
}

}  // namespace charlstm
