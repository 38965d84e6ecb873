// The backward of the FMA paths (column ownership), for every cell: the per-iteration matmul
// mv = dhid[s+1] @ W_hh in float32 FMA, then the cell's backward (cell_update.cuh), for the
// persistent kernel and the stepwise kernel; kernels.cuh wraps them as kernels.
//
// Block i owns hidden units j0 .. j0+units-1 and keeps the columns W_hh[:, j0:j0+units]
// (G*H x units, stored transposed: units rows of G*H) in shared memory.  Iteration s = T-1 .. 0:
// mv[b, j] = (dhid[s+1] @ W_hh)[b, j] for the block's j, reading all of dhid[s+1] (float32,
// [B, G*H], written by every block at the previous iteration) from the exchange buffer
// dzbuf[(s+1)&1]; then the fused pointwise backward of the cell for (b, j), which needs only
// (b, j)-local saved values (gates[s]; the LSTM's cs[s], cs[s-1] or c0; the GRU's h[s-1] from hs
// or h0; dhs[s]; the carry in dcbuf); it writes dgates[s] (dtype D) and dhid[s] (float32) into
// dzbuf[s&1]; one grid barrier.  A final iteration s = -1 computes dh0 = dhid[0] @ W_hh (plus the
// GRU's carry) and the LSTM's dc0.  Rows with s >= lengths[b] write dgates = 0; until a row's
// last active step its dh/dc are the incoming dhT/dcT unchanged (exactly the reference's
// torch.where carry).
#pragma once

#include "device_common.cuh"
#include "grid_barrier.cuh"
#include "cell_update.cuh"

namespace charlstm {

// One backward iteration s for units [j0, j0+nu), rows [b_begin, b_end).
// W^T row of local unit u (G*H contiguous values W[:, j0+u]) starts at wtrows + u * G*H.
// dzsm: shared staging for `bb` rows of dhid[s+1] (float32, G*H each); nullptr: read global.
template <class Cell, typename T, bool kCoherent>
__device__ void bwd_block_step(const BwdParams<T>& p, int s, const T* __restrict__ wtrows, int j0,
                               int nu, int b_begin, int b_end, int bb, float* dzsm) {
  const int H = p.H, B = p.B;
  const int G = Cell::kGates * H;  // the length of a row of W^T and of dhid
  const bool need_mv = s < p.Tn - 1;
  const float* dzsrc = p.dzbuf + (long long)((s + 1) & 1) * B * G;
  float* dzdst = p.dzbuf + (long long)(s & 1) * B * G;  // used only when s >= 0
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int bc = b_begin; bc < b_end; bc += bb) {
    const int nb = min(bb, b_end - bc);
    const float* zrow = dzsrc + (long long)bc * G;
    if (need_mv && dzsm != nullptr) {
      __syncthreads();
      const long long n = (long long)nb * G;
      for (long long e = threadIdx.x; e < n; e += blockDim.x) dzsm[e] = ld_x<kCoherent>(zrow + e);
      __syncthreads();
      zrow = dzsm;
    }
    const int ngroups = (nb + kNB - 1) / kNB;
    for (int item = warp; item < nu * ngroups; item += kWarps) {  // warp-uniform loop
      const int u = item % nu;
      const int q0 = (item / nu) * kNB;
      const int nq = min(kNB, nb - q0);
      float acc[kNB];
#pragma unroll
      for (int q = 0; q < kNB; ++q) acc[q] = 0.0f;
      if (need_mv) {
        const T* w0 = wtrows + (long long)u * G;
        for (int r = lane; r < G; r += 32) {
          const float wv = to_f(w0[r]);
#pragma unroll
          for (int q = 0; q < kNB; ++q)
            if (q < nq) acc[q] = fmaf(wv, zrow[(long long)(q0 + q) * G + r], acc[q]);
        }
#pragma unroll
        for (int q = 0; q < kNB; ++q) acc[q] = warp_sum(acc[q]);
      }
#pragma unroll
      for (int q = 0; q < kNB; ++q)
        if (lane == q && q < nq) bwd_cell<Cell, T>(p, s, bc + q0 + q, j0 + u, acc[q], dzdst);
    }
  }
}

// Persistent backward: block owns units [blockIdx.x*g.units, +g.units); smem holds those rows
// of W^T (g.stage_offset bytes) then g.bb staged rows of dhid.
template <class Cell, typename T>
__device__ __forceinline__ void bwd_persistent_body(const BwdParams<T>& p,
                                                    const PersistentGeometry& g,
                                                    unsigned char* smem) {
  const int units = g.units, bb = g.bb;
  T* wsm = reinterpret_cast<T*>(smem);
  float* zsm = reinterpret_cast<float*>(smem + g.stage_offset);
  const int H = p.H;
  const long long G = (long long)Cell::kGates * H;
  const int j0 = blockIdx.x * units;
  const int nu = min(units, H - j0);
  // Rows j0 .. j0+nu-1 of W^T ([H, G*H]) are one contiguous run.
  const long long n = (long long)nu * G;
  for (long long e = threadIdx.x; e < n; e += blockDim.x) wsm[e] = p.wt[(long long)j0 * G + e];
  __syncthreads();
  for (int s = p.Tn - 1; s >= -1; --s) {
    bwd_block_step<Cell, T, true>(p, s, wsm, j0, nu, 0, p.B, bb, zsm);
    if (s >= 0) grid_barrier(p.counter, gridDim.x * (unsigned)(p.Tn - s));
  }
}

// Stepwise backward, iteration s (T-1 .. -1); grid as in fwd_step_body.
template <class Cell, typename T>
__device__ __forceinline__ void bwd_step_body(const BwdParams<T>& p, int s, int units, int rows,
                                              int stage_rows, unsigned char* smem) {
  const StepTile k = step_tile(p.H, p.B, units, rows);
  float* zsm = stage_rows > 0 ? reinterpret_cast<float*>(smem) : nullptr;
  bwd_block_step<Cell, T, false>(p, s, p.wt + (long long)k.j0 * Cell::kGates * p.H, k.j0, k.nu,
                                 k.b0, k.b1, stage_rows > 0 ? stage_rows : rows, zsm);
}

}  // namespace charlstm
