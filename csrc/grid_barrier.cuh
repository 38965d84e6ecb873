// The grid-wide barrier of the persistent kernels: a monotonic arrival counter with
// release/acquire atomics at GPU scope.
//
// (The #else branches serve nvcc's host pass and the host emulator in csrc/emu/, which runs
// this code with std::threads to check indexing and synchronisation on a CPU.)
#pragma once

#include <cuda_runtime.h>

namespace charlstm {

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

}  // namespace charlstm
