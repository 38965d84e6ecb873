// Tensor-core (WMMA m16n16k16) tile routines shared by both tensor-core directions: float16 or
// bfloat16 inputs, float32 accumulation.  Per chunk of 16 batch rows a block computes
//   Z[M x 16] = A[M x K] . X[16 x K]^T
// with A its weight tile (staged once) and X the 16 staged rows, in the layout of
// launch_plan.h's TcLayout (padded rows: conflict-free fragment loads).  Warps take (M tile,
// K slice) pairs and store partial sums per K slice; tc_sum adds the slices in a fixed order,
// so the result is deterministic.
#pragma once

#include <type_traits>

#include "device_common.cuh"
#if defined(__CUDACC__)
#include <mma.h>  // the host emulator's shim (csrc/emu/emu_shim.h) provides its own WMMA
#endif

namespace charlstm {

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
namespace wmma = nvcuda::wmma;
template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;

// Fragment loads from shared memory as `wmma.load ... .shared`, the state space that lets
// ptxas use ldmatrix.  nvcc infers .shared for the float16 loads from the pointer's origin but
// emits the generic form for bfloat16 (CUDA 13.0), which becomes plain 32-bit generic loads;
// the bfloat16 loads are therefore written in PTX (4 registers of 2 elements each, the
// fragment's storage, as the WMMA intrinsics address it).  tests/test_cuda_backend.py checks
// the PTX of both for the .shared form.
__device__ __forceinline__ void load_a_shared(FragA<__half>& f, const __half* p, unsigned ldm) {
  wmma::load_matrix_sync(f, p, ldm);
}
__device__ __forceinline__ void load_b_shared(FragB<__half>& f, const __half* p, unsigned ldm) {
  wmma::load_matrix_sync(f, p, ldm);
}
// The 4 registers of a bfloat16 m16n16k16 fragment from shared memory (kA: the A operand, row
// major; else the B operand, column major).
template <bool kA, typename Frag>
__device__ __forceinline__ void load_bf16_shared(Frag& f, const __nv_bfloat16* p, unsigned ldm) {
#if defined(__CUDA_ARCH__)
  static_assert(sizeof(f.x) == 4 * sizeof(unsigned), "bf16 m16n16k16 fragment: 4 registers");
  unsigned* r = reinterpret_cast<unsigned*>(f.x);
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  if constexpr (kA) {
    asm volatile("wmma.load.a.sync.aligned.row.m16n16k16.shared.bf16 {%0, %1, %2, %3}, [%4], %5;"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a), "r"(ldm)
                 : "memory");
  } else {
    asm volatile("wmma.load.b.sync.aligned.col.m16n16k16.shared.bf16 {%0, %1, %2, %3}, [%4], %5;"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a), "r"(ldm)
                 : "memory");
  }
#else
  wmma::load_matrix_sync(f, p, ldm);
#endif
}
__device__ __forceinline__ void load_a_shared(FragA<__nv_bfloat16>& f, const __nv_bfloat16* p,
                                              unsigned ldm) {
  load_bf16_shared<true>(f, p, ldm);
}
__device__ __forceinline__ void load_b_shared(FragB<__nv_bfloat16>& f, const __nv_bfloat16* p,
                                              unsigned ldm) {
  load_bf16_shared<false>(f, p, ldm);
}
#endif

// Z = A . X^T for one staged chunk: warps take (M tile, K slice) tasks and store their partial
// sums to slab `sp` of zs (row-major [Mpad x 16]).  Call between two __syncthreads().
template <typename T>
__device__ __forceinline__ void tc_chunk_products(const T* at, const T* xt, float* zs,
                                                  const TcLayout& L) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  const int warp = threadIdx.x >> 5;
  for (int task = warp; task < L.mtiles * L.nsplit; task += kWarps) {  // warp-uniform
    const int mt = task % L.mtiles, sp = task / L.mtiles;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kt = sp; kt < L.ktiles; kt += L.nsplit) {
      FragA<T> a;
      FragB<T> b;
      load_a_shared(a, at + (size_t)mt * 16 * L.ld + kt * 16, L.ld);
      load_b_shared(b, xt + kt * 16, L.ld);  // X^T(k, n) = X[n][k]
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

// The three regions of a block's dynamic shared memory in layout L.
template <typename T>
struct TcTiles {
  T* a;      // A tile [M x ld]
  T* x;      // X tile [16 x ld]
  float* z;  // partial sums [nsplit][Mpad x 16]
};
template <typename T>
__device__ __forceinline__ TcTiles<T> tc_tiles(unsigned char* smem, const TcLayout& L) {
  return {reinterpret_cast<T*>(smem), reinterpret_cast<T*>(smem + L.w_bytes),
          reinterpret_cast<float*>(smem + L.w_bytes + L.h_bytes)};
}

// Z[m][n] summed over the slabs in a fixed order.
__device__ __forceinline__ float tc_sum(const float* zs, const TcLayout& L, int m, int n) {
  float sum = 0.0f;
  for (int sp = 0; sp < L.nsplit; ++sp) sum += zs[((size_t)sp * L.mpad + m) * 16 + n];
  return sum;
}

// Stage the A tile: row m, column c of it is a(m, c) for c < k, zero for k <= c < kpad (the
// row padding past kpad is never read).
template <typename T, typename Elem>
__device__ __forceinline__ void tc_stage_weights(T* at, int k, const TcLayout& L, Elem a) {
  const T zero = from_f<T>(0.0f);
  for (long long e = threadIdx.x; e < (long long)L.m * L.kpad; e += blockDim.x) {
    const int m = (int)(e / L.kpad), c = (int)(e % L.kpad);
    at[(size_t)m * L.ld + c] = c < k ? a(m, c) : zero;
  }
}

// One chunk of both directions: stage rows 0..nb-1 of `src` (row stride and length `k`,
// written by other blocks of this launch: read through L2) as the zero-padded X tile, rounding
// float32 sources to T (the GRU's backward stages its float32 dhid), then Z = A . X^T into zs.
// Ends with a __syncthreads(), so zs may be read right after; starts with one, so the previous
// chunk's readers of xt/zs (and the A tile's writers) are done.
template <typename T, typename Src>
__device__ __forceinline__ void tc_stage_and_multiply(const Src* src, int k, int nb,
                                                      const TcTiles<T>& tl, const TcLayout& L) {
  static_assert(std::is_same<Src, T>::value || std::is_same<Src, float>::value,
                "the X tile is staged from T or from float32");
  const T zero = from_f<T>(0.0f);
  __syncthreads();
  for (int e = threadIdx.x; e < 16 * L.kpad; e += blockDim.x) {
    const int n = e / L.kpad, c = e % L.kpad;
    T v = zero;
    if (n < nb && c < k) {
      if constexpr (std::is_same<Src, T>::value) {
        v = ld_cg(src + (long long)n * k + c);
      } else {
        v = from_f<T>(ld_cg(src + (long long)n * k + c));
      }
    }
    tl.x[n * L.ld + c] = v;
  }
  __syncthreads();
  tc_chunk_products<T>(tl.a, tl.x, tl.z, L);
  __syncthreads();
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
// The body of a tensor-core kernel compiled for an architecture without these WMMA shapes: the
// plan refuses the tensor-core kernels below sm_80, so this never runs.
template <class... A>
__device__ __forceinline__ void tc_unsupported_arch(const A&...) {
  __trap();
}
#endif

}  // namespace charlstm
