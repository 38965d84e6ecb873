// Host emulation of the CUDA built-ins that csrc/lstm_device.cuh uses, so that its kernel
// bodies can run on a CPU with one std::thread per CUDA thread: __syncthreads is a std::barrier
// over the block, __shfl_xor_sync a 32-thread exchange through a per-warp slot array, the grid
// barrier's acquire/release atomics are real atomics.  This checks indexing, work division,
// staging, the barrier protocol (a logic error deadlocks or races; run under ThreadSanitizer),
// and warp-uniformity of every shuffle (a divergent shuffle deadlocks).  It cannot check the
// GPU memory model, L1 behaviour, occupancy or performance.  Test-only: not part of the build.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <memory>
#include <thread>
#include <vector>

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace emu {
#if defined(EMU_SPIN_BARRIER)
// A barrier made only of acquire/release atomics.  std::barrier waits through libstdc++'s
// global waiter pool, whose shared mutexes add happens-before edges between unrelated threads
// and hide races from ThreadSanitizer; build with -DEMU_SPIN_BARRIER -fsanitize=thread to
// check that the grid barrier protocol alone orders the exchange (slow: minutes).
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void arrive_and_wait() {
    const unsigned gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_acq_rel);
    } else {
      while (gen_.load(std::memory_order_acquire) == gen) std::this_thread::yield();
    }
  }

 private:
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<unsigned> gen_{0};
};
#else
using Barrier = std::barrier<>;
#endif

struct Warp {
  float slot[2][32];  // double-buffered by shuffle parity: one barrier per shuffle suffices
  Barrier bar{32};
  unsigned parity[32] = {};  // per lane (each lane only touches its own entry)
};
struct Block {
  explicit Block(int nthreads) : bar(nthreads) {
    for (int w = 0; w < nthreads / 32; ++w) warps.emplace_back(new Warp());
  }
  Barrier bar;
  std::vector<std::unique_ptr<Warp>> warps;
};
inline thread_local Block* block = nullptr;
}  // namespace emu

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

inline void __syncthreads() { emu::block->bar.arrive_and_wait(); }

// Lane A writes slot[p][A] again only two shuffles later, after a barrier that every lane
// reaches only once it has read slot[p] of this shuffle.
inline float __shfl_xor_sync(unsigned /*mask*/, float v, int off) {
  emu::Warp& w = *emu::block->warps[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  const unsigned p = w.parity[lane];
  w.parity[lane] = p ^ 1u;
  w.slot[p][lane] = v;
  w.bar.arrive_and_wait();
  return w.slot[p][lane ^ (unsigned)off];
}

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) { std::this_thread::yield(); }
inline float __ldcg(const float* p) { return *p; }
inline unsigned short __ldcg(const unsigned short* p) { return *p; }
using std::min;
