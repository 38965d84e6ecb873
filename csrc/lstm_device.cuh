// Device-side building blocks shared by the forward and backward kernels of charlstm.
//
// Status: compiled for sm_80/sm_90, not yet verified on a GPU.
//
// Work decomposition (both directions, both paths)
// ------------------------------------------------
// A block owns a contiguous range of hidden units j0 .. j0+nu-1 and a range of batch rows.
// Within a block, one warp handles one "item" = (unit u, group of kNB batch rows): its 32 lanes
// split the reduction dimension (k over H in the forward, r over 4H in the backward), each lane
// sums its strided share in float32, then a fixed xor-butterfly of warp shuffles combines the
// 32 partial sums.  The order of every floating-point addition is fixed by (H, kNB, lane), so
// results are bitwise deterministic run to run (no atomics in any reduction).  Lane q of the warp
// then does the fused cell update for batch row q of the group.
//
// The math is float32 FMA for every dtype (no tensor cores yet).
#pragma once

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#if defined(__CUDACC__)
#include <mma.h>  // WMMA (tensor cores); the host emulator's shim provides its own
#endif

namespace charlstm {

#ifndef CHARLSTM_BLOCK_THREADS
#define CHARLSTM_BLOCK_THREADS 256  // the host emulator (csrc/emu) may build with fewer
#endif
constexpr int kThreads = CHARLSTM_BLOCK_THREADS;  // threads per block, all kernels
static_assert(kThreads % 32 == 0, "whole warps only");
constexpr int kWarps = kThreads / 32;
constexpr int kNB = 4;                   // batch rows per warp item (register tile)

// ---------------------------------------------------------------- dtype helpers
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Loads that go to L2 (the point of coherence between SMs), skipping the non-coherent L1.
// Used for data that other blocks of the same persistent launch wrote (h / dz exchange).
__device__ __forceinline__ float ld_cg(const float* p) { return __ldcg(p); }
__device__ __forceinline__ __half ld_cg(const __half* p) {
  return __ushort_as_half(__ldcg(reinterpret_cast<const unsigned short*>(p)));
}
__device__ __forceinline__ __nv_bfloat16 ld_cg(const __nv_bfloat16* p) {
  return __ushort_as_bfloat16(__ldcg(reinterpret_cast<const unsigned short*>(p)));
}

template <bool kCoherent, typename T>
__device__ __forceinline__ T ld_x(const T* p) {
  if constexpr (kCoherent) {
    return ld_cg(p);
  } else {
    return *p;
  }
}

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// Sum over the 32 lanes of a warp; every lane gets the total.  The butterfly order is fixed.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// ---------------------------------------------------------------- grid barrier
// (The #else branches serve nvcc's host pass and the host emulator in csrc/emu/, which runs
// this file's code with std::threads to check indexing and synchronisation on a CPU.)
__device__ __forceinline__ unsigned ld_acquire_gpu(const unsigned* p) {
#if defined(__CUDA_ARCH__)
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
#else
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}

__device__ __forceinline__ void red_release_gpu_add(unsigned* p, unsigned v) {
#if defined(__CUDA_ARCH__)
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
#else
  __atomic_fetch_add(p, v, __ATOMIC_RELEASE);
#endif
}

// Grid-wide barrier on a monotonic arrival counter (zeroed by the host before the launch).
//
// Every block calls it once per step with target = gridDim.x * (number of barriers passed so
// far, this one included).  The counter only grows, so no reset or sense reversal is needed
// and a fast block can never confuse step s with step s+1: it waits for the count of step s
// exactly (the host checks gridDim.x * steps < 2^31, so it cannot wrap).
//
// Why the data exchanged through global memory is visible after the barrier:
//  1. __syncthreads(): all writes (h[t] / dz[t]) and reads of this block's threads for the
//     step happen-before thread 0's next instructions (bar.sync orders memory at CTA scope).
//  2. thread 0: __threadfence() (fence.sc.gpu) then a release add at gpu scope: the block's
//     writes are made visible at gpu scope before the arrival is counted (fence cumulativity).
//  3. thread 0 spins with acquire loads until all gridDim.x arrivals of this step are counted,
//     then __threadfence(): the other blocks' writes happen-before what follows.
//  4. __syncthreads(): the rest of the block waits for thread 0 and inherits the ordering.
// Readers of exchanged data also use ld.global.cg (L2) so no stale L1 line can be hit.
// This is the same protocol as cooperative_groups' grid.sync(); it requires all blocks to be
// co-resident, which the host guarantees by using cudaLaunchCooperativeKernel.
// Write-after-read safety comes from double buffering by step parity: step s reads buffer A
// and writes buffer B; step s+1 reads B and writes A.  A was last read during step s, and every
// block finished step s (its reads included, by step 1 above) before any block passes barrier s,
// so one barrier per step covers both the read-after-write and the write-after-read hazard.
__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    red_release_gpu_add(counter, 1u);
    while (ld_acquire_gpu(counter) < target) {
      __nanosleep(32);
    }
    __threadfence();
  }
  __syncthreads();
}

// ---------------------------------------------------------------- parameters
template <typename T>
struct FwdParams {
  const T* xproj;      // [T, B, 4H]
  const T* w;          // [4H, H]
  const T* h0;         // [B, H]
  const T* c0;         // [B, H]
  const int* lengths;  // [B] or nullptr
  T* hs;               // [T, B, H]
  T* hT;               // [B, H]
  T* cT;               // [B, H]
  float* cs;           // [T, B, H]
  float* gates;        // [T, B, 4H]
  T* hbuf;             // [2, B, H]: h state, double-buffered by step parity
  unsigned* counter;   // grid barrier arrivals (persistent path)
  int Tn, B, H;
};

template <typename T>
struct BwdParams {
  const T* dhs;         // [T, B, H]
  const T* dhT;         // [B, H]
  const T* dcT;         // [B, H]
  const T* wt;          // [H, 4H] (w_hh transposed)
  const T* c0;          // [B, H]
  const float* cs;      // [T, B, H]
  const float* gates;   // [T, B, 4H]
  const int* lengths;   // [B] or nullptr
  T* dgates;            // [T, B, 4H]
  T* dh0;               // [B, H]
  T* dc0;               // [B, H]
  float* dzbuf;         // [2, B, 4H]: dz exchange, double-buffered by step parity
  float* dcbuf;         // [B, H]: dc carried between steps (each element owned by one thread)
  unsigned* counter;
  int Tn, B, H;
};

// ---------------------------------------------------------------- forward cell update
// Lane-level: z sums (without xproj) for row b, unit j at step t; h_prev is the D-typed state.
template <typename T>
__device__ __forceinline__ void fwd_cell(const FwdParams<T>& p, int t, int b, int j, float si,
                                         float sf, float sg, float so, T h_prev, T* hdst) {
  const int H = p.H, B = p.B;
  const long long G = 4LL * H;
  const long long row = (long long)t * B + b;
  const T* xr = p.xproj + row * G;
  const float ig = sigmoidf_(si + to_f(xr[j]));
  const float fg = sigmoidf_(sf + to_f(xr[H + j]));
  const float gg = tanhf(sg + to_f(xr[2 * H + j]));
  const float og = sigmoidf_(so + to_f(xr[3 * H + j]));
  // c[t-1]: the same thread wrote cs[t-1][b][j] at the previous step (same item mapping).
  const float c_prev = (t == 0) ? to_f(p.c0[(long long)b * H + j]) : p.cs[(row - B) * H + j];
  const float c_new = fg * c_prev + ig * gg;
  const T h_new = from_f<T>(og * tanhf(c_new));
  const bool active = (p.lengths == nullptr) || (t < p.lengths[b]);
  float* gr = p.gates + row * G;
  gr[j] = ig;
  gr[H + j] = fg;
  gr[2 * H + j] = gg;
  gr[3 * H + j] = og;
  const float c_keep = active ? c_new : c_prev;
  const T h_keep = active ? h_new : h_prev;
  p.cs[row * H + j] = c_keep;
  p.hs[row * H + j] = active ? h_new : from_f<T>(0.0f);
  hdst[(long long)b * H + j] = h_keep;
  if (t == p.Tn - 1) {
    p.hT[(long long)b * H + j] = h_keep;
    p.cT[(long long)b * H + j] = from_f<T>(c_keep);
  }
}

// One forward step for the block's units [j0, j0+nu) and batch rows [b_begin, b_end).
// W row (gate g, local unit u) starts at wrows + g * gate_stride + u * H.
// hsm: shared staging for `bb` rows of h[t-1] (nullptr: read h[t-1] from global directly).
// kCoherent: h[t-1] was written by other blocks of this launch (persistent path).
template <typename T, bool kCoherent>
__device__ void fwd_block_step(const FwdParams<T>& p, int t, const T* __restrict__ wrows,
                               long long gate_stride, int j0, int nu, int b_begin, int b_end,
                               int bb, T* hsm) {
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
      float acc[4][kNB];
#pragma unroll
      for (int g = 0; g < 4; ++g)
#pragma unroll
        for (int q = 0; q < kNB; ++q) acc[g][q] = 0.0f;
      const T* w0 = wrows + (long long)u * H;
      for (int k = lane; k < H; k += 32) {
        float wv[4];
#pragma unroll
        for (int g = 0; g < 4; ++g) wv[g] = to_f(w0[g * gate_stride + k]);
#pragma unroll
        for (int q = 0; q < kNB; ++q) {
          if (q < nq) {
            const float hv = to_f(hrow[(long long)(q0 + q) * H + k]);
#pragma unroll
            for (int g = 0; g < 4; ++g) acc[g][q] = fmaf(wv[g], hv, acc[g][q]);
          }
        }
      }
#pragma unroll
      for (int g = 0; g < 4; ++g)
#pragma unroll
        for (int q = 0; q < kNB; ++q) acc[g][q] = warp_sum(acc[g][q]);
#pragma unroll
      for (int q = 0; q < kNB; ++q) {
        if (lane == q && q < nq) {
          const int j = j0 + u;
          const T h_prev = hrow[(long long)(q0 + q) * H + j];
          fwd_cell<T>(p, t, bc + q0 + q, j, acc[0][q], acc[1][q], acc[2][q], acc[3][q], h_prev,
                      hdst);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- backward cell update
// Iteration s (T-1 down to 0; s == -1 writes dh0/dc0).  mv = (dz[s+1] @ W)[b][j] (0 when s==T-1).
template <typename T>
__device__ __forceinline__ void bwd_cell(const BwdParams<T>& p, int s, int b, int j, float mv,
                                         float* dzdst) {
  const int H = p.H, B = p.B;
  const long long G = 4LL * H;
  const long long bj = (long long)b * H + j;
  // Contract: 1 <= lengths[b] <= T.  Clamping to T keeps a too-long row well defined; a row
  // with length <= 0 never ran and passes dhT/dcT straight through to dh0/dc0.
  const int len = (p.lengths == nullptr) ? p.Tn : min(p.lengths[b], p.Tn);
  if (s < 0) {  // after step 0: dh0 = dz[0] @ W, dc0 = dc[0] * f[0]
    if (len >= 1) {
      p.dh0[bj] = from_f<T>(mv);
      p.dc0[bj] = from_f<T>(p.dcbuf[bj]);
    } else {
      p.dh0[bj] = p.dhT[bj];
      p.dc0[bj] = p.dcT[bj];
    }
    return;
  }
  const long long row = (long long)s * B + b;
  T* dgr = p.dgates + row * G;
  float* dzr = dzdst + (long long)b * G;
  if (s >= len) {  // inactive: no gradient; zeros keep the exchange buffer defined
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      dgr[g * H + j] = from_f<T>(0.0f);
      dzr[g * H + j] = 0.0f;
    }
    return;
  }
  // Row b's last active step is len-1; before it (in backward order) dh/dc pass through.
  float dh_in, dc_in;
  if (s == len - 1) {
    dh_in = to_f(p.dhT[bj]);
    dc_in = to_f(p.dcT[bj]);
  } else {
    dh_in = mv;
    dc_in = p.dcbuf[bj];  // written by this same thread at iteration s+1
  }
  const float* gr = p.gates + row * G;
  const float ig = gr[j], fg = gr[H + j], gg = gr[2 * H + j], og = gr[3 * H + j];
  const float ct = p.cs[row * H + j];
  const float cp = (s > 0) ? p.cs[(row - B) * H + j] : to_f(p.c0[bj]);
  const float tc = tanhf(ct);
  const float dh = dh_in + to_f(p.dhs[row * H + j]);
  const float dc = dc_in + dh * og * (1.0f - tc * tc);
  const float dzi = dc * gg * ig * (1.0f - ig);
  const float dzf = dc * cp * fg * (1.0f - fg);
  const float dzg = dc * ig * (1.0f - gg * gg);
  const float dzo = dh * tc * og * (1.0f - og);
  p.dcbuf[bj] = dc * fg;
  dgr[j] = from_f<T>(dzi);
  dgr[H + j] = from_f<T>(dzf);
  dgr[2 * H + j] = from_f<T>(dzg);
  dgr[3 * H + j] = from_f<T>(dzo);
  dzr[j] = dzi;
  dzr[H + j] = dzf;
  dzr[2 * H + j] = dzg;
  dzr[3 * H + j] = dzo;
}

// One backward iteration s for units [j0, j0+nu), rows [b_begin, b_end).
// W^T row of local unit u (4H contiguous values W[:, j0+u]) starts at wtrows + u * 4H.
// dzsm: shared staging for `bb` rows of dz[s+1] (float32, 4H each); nullptr: read global.
template <typename T, bool kCoherent>
__device__ void bwd_block_step(const BwdParams<T>& p, int s, const T* __restrict__ wtrows, int j0,
                               int nu, int b_begin, int b_end, int bb, float* dzsm) {
  const int H = p.H, B = p.B;
  const int G = 4 * H;
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
        if (lane == q && q < nq) bwd_cell<T>(p, s, bc + q0 + q, j0 + u, acc[q], dzdst);
    }
  }
}

// ---------------------------------------------------------------- kernel bodies
// The __global__ wrappers in lstm_forward.cu / lstm_backward.cu only add the dynamic shared
// memory declaration; the bodies live here so the host emulator (csrc/emu/) runs the same code.

// Persistent forward: block blockIdx.x owns units [blockIdx.x*units, +units); smem holds its
// 4*units W_hh rows (stage_offset bytes) then bb staged rows of h.
template <typename T>
__device__ __forceinline__ void fwd_persistent_body(const FwdParams<T>& p, int units, int bb,
                                                    unsigned stage_offset, unsigned char* smem) {
  T* wsm = reinterpret_cast<T*>(smem);
  T* hsm = reinterpret_cast<T*>(smem + stage_offset);
  const int H = p.H;
  const int j0 = blockIdx.x * units;
  const int nu = min(units, H - j0);
  // W rows g*H + j0 .. g*H + j0 + nu - 1 are contiguous in W: copy them as one run per gate.
  const long long per_gate = (long long)nu * H;
  for (long long e = threadIdx.x; e < 4 * per_gate; e += blockDim.x) {
    const int g = (int)(e / per_gate);
    const long long r = e - g * per_gate;
    wsm[(long long)g * units * H + r] = p.w[((long long)g * H + j0) * H + r];
  }
  __syncthreads();
  for (int t = 0; t < p.Tn; ++t) {
    fwd_block_step<T, true>(p, t, wsm, (long long)units * H, j0, nu, 0, p.B, bb, hsm);
    if (t + 1 < p.Tn) grid_barrier(p.counter, gridDim.x * (unsigned)(t + 1));
  }
}

// The tile of a stepwise block (x, y): units [j0, j0+nu) = [x*units, +units) and rows
// [b0, b1) = [y*rows, +rows), clipped to H and B.  Both directions use it.
struct StepTile {
  int j0, nu, b0, b1;
};
__device__ __forceinline__ StepTile step_tile(int H, int B, int units, int rows) {
  StepTile s;
  s.j0 = blockIdx.x * units;
  s.nu = min(units, H - s.j0);
  s.b0 = blockIdx.y * rows;
  s.b1 = min(B, s.b0 + rows);
  return s;
}

// Stepwise forward, step t: block (x, y) runs the step_tile, staging stage_rows rows of h at a
// time in smem (stage_rows == 0: no staging).
template <typename T>
__device__ __forceinline__ void fwd_step_body(const FwdParams<T>& p, int t, int units, int rows,
                                              int stage_rows, unsigned char* smem) {
  const StepTile k = step_tile(p.H, p.B, units, rows);
  T* hsm = stage_rows > 0 ? reinterpret_cast<T*>(smem) : nullptr;
  fwd_block_step<T, false>(p, t, p.w + (long long)k.j0 * p.H, (long long)p.H * p.H, k.j0, k.nu,
                           k.b0, k.b1, stage_rows > 0 ? stage_rows : rows, hsm);
}

// Persistent backward: block owns units [blockIdx.x*units, +units); smem holds those rows of
// W^T (stage_offset bytes) then bb staged rows of dz.
template <typename T>
__device__ __forceinline__ void bwd_persistent_body(const BwdParams<T>& p, int units, int bb,
                                                    unsigned stage_offset, unsigned char* smem) {
  T* wsm = reinterpret_cast<T*>(smem);
  float* zsm = reinterpret_cast<float*>(smem + stage_offset);
  const int H = p.H;
  const long long G = 4LL * H;
  const int j0 = blockIdx.x * units;
  const int nu = min(units, H - j0);
  // Rows j0 .. j0+nu-1 of W^T ([H, 4H]) are one contiguous run.
  const long long n = (long long)nu * G;
  for (long long e = threadIdx.x; e < n; e += blockDim.x) wsm[e] = p.wt[(long long)j0 * G + e];
  __syncthreads();
  for (int s = p.Tn - 1; s >= -1; --s) {
    bwd_block_step<T, true>(p, s, wsm, j0, nu, 0, p.B, bb, zsm);
    if (s >= 0) grid_barrier(p.counter, gridDim.x * (unsigned)(p.Tn - s));
  }
}

// Stepwise backward, iteration s (T-1 .. -1); grid as in fwd_step_body.
template <typename T>
__device__ __forceinline__ void bwd_step_body(const BwdParams<T>& p, int s, int units, int rows,
                                              int stage_rows, unsigned char* smem) {
  const StepTile k = step_tile(p.H, p.B, units, rows);
  float* zsm = stage_rows > 0 ? reinterpret_cast<float*>(smem) : nullptr;
  bwd_block_step<T, false>(p, s, p.wt + (long long)k.j0 * 4 * p.H, k.j0, k.nu, k.b0, k.b1,
                           stage_rows > 0 ? stage_rows : rows, zsm);
}

// ---------------------------------------------------------------- tensor cores
// The persistent paths with the per-step matmul on tensor cores (WMMA m16n16k16, float16 or
// bfloat16 inputs, float32 accumulation); selected with path "persistent_tc" (and by AUTO for
// 16-bit inputs from CHARLSTM_TC_MIN_BATCH rows).  Everything but the matmul is the FMA path's
// code (fwd_cell / bwd_cell).  Both directions compute, per chunk of 16 batch rows,
//   Z[M x 16] = A[M x K] . X[16 x K]^T
// with A the block's weights (shared memory, for all steps) and X the 16 staged rows:
//   forward:  A = W_hh rows (gate g, local unit u) -> row m = g*units + u, K = H, X = h[t-1];
//   backward: A = W_hh^T rows (local unit u)       -> row m = u,           K = 4H, X = the
//             gate gradients dgates[s+1] of the previous iteration (in the input dtype: the
//             values the backward returns, as cuDNN's 16-bit backward multiplies them too).
// Shared memory of a block:
//   A tile   [M x Kpad] of T, columns zero-padded
//   X tile   [16 x Kpad] of T, zero-padded
//   Z        [nsplit][Mpad x 16] float: partial sums, one slab per K slice
// Mpad = M rounded up to 16, Kpad = K rounded up to 16; every region starts at a multiple
// of 32 bytes and every leading dimension is a multiple of 16 elements, as WMMA requires.
// The A tile holds only its M real rows: the last M tile's 16-row fragment load runs past
// them into the X tile (at most 15 rows of its 16, always inside the allocation), and those
// junk rows only produce rows m >= M of Z, which nobody reads (each output row of an mma
// depends on its own A row only).  This halves the backward's A tile for U <= 8 units.
// Warps take (M tile, K slice) pairs; the cell update sums the nsplit slabs in a fixed order,
// so the result is deterministic.
struct TcLayout {
  int m, mpad, kpad, mtiles, ktiles, nsplit;
  size_t w_bytes, h_bytes, z_bytes;
  __host__ __device__ size_t total() const { return w_bytes + h_bytes + z_bytes; }
};

__host__ __device__ inline TcLayout tc_layout_mk(int m, int k, size_t elem) {
  TcLayout L;
  L.m = m;
  L.mpad = (m + 15) / 16 * 16;
  L.kpad = (k + 15) / 16 * 16;
  L.mtiles = L.mpad / 16;
  L.ktiles = L.kpad / 16;
  int ns = kWarps / L.mtiles;
  if (ns < 1) ns = 1;
  if (ns > L.ktiles) ns = L.ktiles;
  L.nsplit = ns;
  L.w_bytes = ((size_t)m * L.kpad * elem + 31) & ~(size_t)31;
  L.h_bytes = (size_t)16 * L.kpad * elem;
  L.z_bytes = (size_t)L.nsplit * L.mpad * 16 * sizeof(float);
  return L;
}

// Forward layout: M = 4*units (gates x units), K = H.
__host__ __device__ inline TcLayout tc_layout(int H, int units, size_t elem) {
  return tc_layout_mk(4 * units, H, elem);
}

// Backward layout: M = units, K = 4H.
__host__ __device__ inline TcLayout tc_bwd_layout(int H, int units, size_t elem) {
  return tc_layout_mk(units, 4 * H, elem);
}

// Z = A . X^T for one staged chunk: warps take (M tile, K slice) tasks and store their partial
// sums to slab `sp` of zs (row-major [Mpad x 16]).  Call between two __syncthreads().
template <typename T>
__device__ __forceinline__ void tc_chunk_products(const T* at, const T* xt, float* zs,
                                                  const TcLayout& L) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  const int warp = threadIdx.x >> 5;
  for (int task = warp; task < L.mtiles * L.nsplit; task += kWarps) {  // warp-uniform
    const int mt = task % L.mtiles, sp = task / L.mtiles;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kt = sp; kt < L.ktiles; kt += L.nsplit) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
      wmma::load_matrix_sync(a, at + (size_t)mt * 16 * L.kpad + kt * 16, L.kpad);
      wmma::load_matrix_sync(b, xt + kt * 16, L.kpad);  // X^T(k, n) = X[n][k]
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(zs + ((size_t)sp * L.mpad + mt * 16) * 16, acc, 16,
                            wmma::mem_row_major);
  }
#else
  (void)at;
  (void)xt;
  (void)zs;
  (void)L;
#endif
}

// Z[m][n] summed over the slabs in a fixed order.
__device__ __forceinline__ float tc_sum(const float* zs, const TcLayout& L, int m, int n) {
  float sum = 0.0f;
  for (int sp = 0; sp < L.nsplit; ++sp) sum += zs[((size_t)sp * L.mpad + m) * 16 + n];
  return sum;
}

// One chunk of both directions: stage rows 0..nb-1 of `src` (row stride and length `k`,
// written by other blocks of this launch: read through L2) as the zero-padded X tile, then
// Z = A . X^T into zs.  Ends with a __syncthreads(), so zs may be read right after; starts
// with one, so the previous chunk's readers of xt/zs (and the A tile's writers) are done.
template <typename T>
__device__ __forceinline__ void tc_stage_and_multiply(const T* src, int k, int nb, const T* at,
                                                      T* xt, float* zs, const TcLayout& L) {
  const T zero = from_f<T>(0.0f);
  __syncthreads();
  for (int e = threadIdx.x; e < 16 * L.kpad; e += blockDim.x) {
    const int n = e / L.kpad, c = e % L.kpad;
    xt[e] = (n < nb && c < k) ? ld_cg(src + (long long)n * k + c) : zero;
  }
  __syncthreads();
  tc_chunk_products<T>(at, xt, zs, L);
  __syncthreads();
}

template <typename T>
__device__ __forceinline__ void fwd_persistent_tc_body(const FwdParams<T>& p, int units,
                                                       unsigned char* smem) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  const int H = p.H, B = p.B;
  const TcLayout L = tc_layout(H, units, sizeof(T));
  T* wt = reinterpret_cast<T*>(smem);
  T* ht = reinterpret_cast<T*>(smem + L.w_bytes);
  float* zs = reinterpret_cast<float*>(smem + L.w_bytes + L.h_bytes);
  const int j0 = blockIdx.x * units;
  const int nu = min(units, H - j0);
  const T zero = from_f<T>(0.0f);
  for (long long e = threadIdx.x; e < (long long)L.m * L.kpad; e += blockDim.x) {
    const int m = (int)(e / L.kpad), k = (int)(e % L.kpad);
    const int g = m / units, u = m % units;
    wt[e] = (u < nu && k < H) ? p.w[((long long)g * H + j0 + u) * H + k] : zero;
  }
  for (int t = 0; t < p.Tn; ++t) {
    const T* hsrc = (t == 0) ? p.h0 : p.hbuf + (long long)(t & 1) * B * H;
    T* hdst = p.hbuf + (long long)((t + 1) & 1) * B * H;
    for (int bc = 0; bc < B; bc += 16) {
      const int nb = min(16, B - bc);
      tc_stage_and_multiply<T>(hsrc + (long long)bc * H, H, nb, wt, ht, zs, L);
      for (int idx = threadIdx.x; idx < nu * nb; idx += blockDim.x) {
        const int u = idx % nu, q = idx / nu;
        fwd_cell<T>(p, t, bc + q, j0 + u, tc_sum(zs, L, u, q), tc_sum(zs, L, units + u, q),
                    tc_sum(zs, L, 2 * units + u, q), tc_sum(zs, L, 3 * units + u, q),
                    ht[q * L.kpad + j0 + u], hdst);
      }
    }
    if (t + 1 < p.Tn) grid_barrier(p.counter, gridDim.x * (unsigned)(t + 1));
  }
#else
  (void)p;
  (void)units;
  (void)smem;
  __trap();  // not compiled for this architecture (needs sm_80); the host never launches it
#endif
}

// Backward of the persistent path on tensor cores: block owns units [blockIdx.x*units, +units)
// (column ownership, as bwd_persistent_body); its W_hh^T rows sit in the A tile for all
// iterations; per iteration s and chunk of 16 rows, dgates[s+1] (written by every block at
// iteration s+1, read through L2) is staged as X, and dh_in = Z[u][q] feeds bwd_cell.
template <typename T>
__device__ __forceinline__ void bwd_persistent_tc_body(const BwdParams<T>& p, int units,
                                                       unsigned char* smem) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  const int H = p.H, B = p.B;
  const long long G = 4LL * H;
  const TcLayout L = tc_bwd_layout(H, units, sizeof(T));
  T* at = reinterpret_cast<T*>(smem);
  T* xt = reinterpret_cast<T*>(smem + L.w_bytes);
  float* zs = reinterpret_cast<float*>(smem + L.w_bytes + L.h_bytes);
  const int j0 = blockIdx.x * units;
  const int nu = min(units, H - j0);
  const T zero = from_f<T>(0.0f);
  for (long long e = threadIdx.x; e < (long long)L.m * L.kpad; e += blockDim.x) {
    const int m = (int)(e / L.kpad), r = (int)(e % L.kpad);
    at[e] = (m < nu && r < G) ? p.wt[(long long)(j0 + m) * G + r] : zero;
  }
  for (int s = p.Tn - 1; s >= -1; --s) {
    const bool need_mv = s < p.Tn - 1;
    const T* dsrc = p.dgates + (long long)(s + 1) * B * G;  // read only when need_mv
    float* dzdst = p.dzbuf + (long long)(s & 1) * B * G;    // used only when s >= 0
    for (int bc = 0; bc < B; bc += 16) {
      const int nb = min(16, B - bc);
      if (need_mv) tc_stage_and_multiply<T>(dsrc + (long long)bc * G, (int)G, nb, at, xt, zs, L);
      for (int idx = threadIdx.x; idx < nu * nb; idx += blockDim.x) {
        const int u = idx % nu, q = idx / nu;
        bwd_cell<T>(p, s, bc + q, j0 + u, need_mv ? tc_sum(zs, L, u, q) : 0.0f, dzdst);
      }
    }
    if (s >= 0) grid_barrier(p.counter, gridDim.x * (unsigned)(p.Tn - s));
  }
#else
  (void)p;
  (void)units;
  (void)smem;
  __trap();  // not compiled for this architecture (needs sm_80); the host never launches it
#endif
}

}  // namespace charlstm
