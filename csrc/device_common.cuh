// Device helpers shared by every kernel: dtype conversion, loads through L2, the gate
// activation, the warp reduction and the tile of a stepwise block.
//
// Work decomposition of the FMA kernels (both directions, both paths): a block owns a
// contiguous range of hidden units j0 .. j0+nu-1 and a range of batch rows.  Within a block, one
// warp handles one "item" = (unit u, group of kNB batch rows): its 32 lanes split the reduction
// dimension (k over H in the forward, r over G*H in the backward), each lane sums its strided
// share in float32, then a fixed xor-butterfly of warp shuffles combines the 32 partial sums.
// The order of every floating-point addition is fixed by (H, kNB, lane), so results are bitwise
// deterministic run to run (no atomics in any reduction).  Lane q of the warp then does the
// fused cell update for batch row q of the group.
#pragma once

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "launch_plan.h"

namespace charlstm {

constexpr int kNB = 4;  // batch rows per warp item (register tile)

// ---------------------------------------------------------------- dtype helpers
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_f<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
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

}  // namespace charlstm
