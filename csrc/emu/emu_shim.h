// Host emulation of the CUDA built-ins that the device code of csrc/*.cuh uses, so that its
// kernel bodies can run on a CPU with one std::thread per CUDA thread: __syncthreads is a std::barrier
// over the block, __shfl_xor_sync a 32-thread exchange through a per-warp slot array, the grid
// barrier's acquire/release atomics are real atomics.  This checks indexing, work division,
// staging, the barrier protocol (a logic error deadlocks or races; run under ThreadSanitizer),
// and warp-uniformity of every shuffle (a divergent shuffle deadlocks).  It cannot check the
// GPU memory model, L1 behaviour, occupancy or performance.  Test-only: not part of the build.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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

// WMMA (m16n16k16) by its documented semantics, not its register layout: each lane holds the
// whole tile (the API's fragment layout is opaque, so code that only loads, multiplies and
// stores fragments cannot depend on it).  Stores are done by lane 0 (a warp-collective store
// of identical values).  Loads of 16-bit tiles check what the hardware requires or what makes
// them slow, and end the process (exit code 3) with a message when a rule is broken:
//   * the pointer is 32-byte aligned and ldm a multiple of 8 elements (16 bytes) -- the WMMA
//     rules for 16-bit types (the emulator's shared memory is 128-byte aligned, like the
//     kernels' dynamic shared memory declaration);
//   * no shared-memory bank conflicts in the ldmatrix model of a fragment load: each group of
//     8 rows (16 bytes per row and wavefront) must fall in 8 different 16-byte bank groups of
//     the 128-byte bank space, i.e. the row stride in 16-byte units must be odd.
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  float x[16 * 16];  // x[r * 16 + c] = element (r, c) of the tile
};

inline float emu_tof(float v) { return v; }
inline float emu_tof(__half v) { return __half2float(v); }
inline float emu_tof(__nv_bfloat16 v) { return __bfloat162float(v); }

[[noreturn]] inline void emu_wmma_fault(const char* what, const void* p, unsigned ldm) {
  std::fprintf(stderr, "emu: WMMA load breaks a rule: %s (address %p, ldm %u)\n", what, p, ldm);
  std::fflush(stderr);
  std::_Exit(3);
}

// The checks above for a 16-row tile of 16-bit elements, row r at p + r * ldm.
template <class T>
inline void emu_check_tile_load(const T* p, unsigned ldm) {
  static_assert(sizeof(T) == 2, "the checks are written for 16-bit tiles");
  if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0)
    emu_wmma_fault("pointer not 32-byte aligned", p, ldm);
  if (ldm % 8 != 0) emu_wmma_fault("ldm not a multiple of 8 elements", p, ldm);
  for (int r0 = 0; r0 < 16; r0 += 8) {
    unsigned used = 0;  // bit g: bank group g (16 bytes of the 128-byte bank space) taken
    for (int r = r0; r < r0 + 8; ++r) {
      const unsigned g =
          (unsigned)((reinterpret_cast<std::uintptr_t>(p + (size_t)r * ldm) / 16) % 8);
      if (used & (1u << g))
        emu_wmma_fault("shared-memory bank conflict between fragment rows", p, ldm);
      used |= 1u << g;
    }
  }
}

template <class T>
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, row_major>& f, const T* p,
                             unsigned ldm) {
  emu_check_tile_load(p, ldm);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = emu_tof(p[(size_t)r * ldm + c]);
}
template <class T>
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, col_major>& f, const T* p,
                             unsigned ldm) {  // element (k, n) at p[n * ldm + k]
  emu_check_tile_load(p, ldm);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n) f.x[k * 16 + n] = emu_tof(p[(size_t)n * ldm + k]);
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}
template <class T>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, T, row_major>& a,
                     const fragment<matrix_b, 16, 16, 16, T, col_major>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      float s = c.x[r * 16 + n];
      for (int k = 0; k < 16; ++k) s += a.x[r * 16 + k] * b.x[k * 16 + n];
      out[r * 16 + n] = s;
    }
  for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
  if (threadIdx.x % 32 != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      const size_t at = layout == mem_row_major ? (size_t)r * ldm + n : (size_t)n * ldm + r;
      p[at] = f.x[r * 16 + n];
    }
}
}  // namespace wmma
}  // namespace nvcuda
