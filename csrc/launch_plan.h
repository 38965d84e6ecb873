// Launch geometry of the recurrent kernels, in plain C++: no CUDA runtime calls and no CUDA
// headers.  It holds the cells' shapes (gate count, saved blocks), the block size, the
// tensor-core tile layout, the persistent and stepwise launch plans and the order in which a
// path request tries the paths.  The launchers
// (launcher.cu) feed it the device's limits; the host emulator (csrc/emu) feeds it emulated
// ones, so the emulator runs the plans the launchers compute, not a copy of them.
#pragma once

#include <cstddef>
#include <cstdio>

#include "launch.h"

#if defined(__CUDACC__)
#define CHARLSTM_HD __host__ __device__
#else
#define CHARLSTM_HD
#endif

namespace charlstm {

// ---------------------------------------------------------------- the cells' shapes
// Gate blocks of H in xproj and in the rows of W_hh (G), H-blocks of the saved gates (S), and
// whether the cell carries a cell state c; 0 / false for an unknown code (enum charlstm_cell).
// The device cells (cells.cuh) assert that they agree.
constexpr int cell_gates(int cell) {
  return cell == CHARLSTM_CELL_LSTM                                        ? 4
         : cell == CHARLSTM_CELL_GRU                                       ? 3
         : cell == CHARLSTM_CELL_RNN_TANH || cell == CHARLSTM_CELL_RNN_RELU ? 1
                                                                            : 0;
}
constexpr int cell_saved(int cell) {
  return cell == CHARLSTM_CELL_LSTM || cell == CHARLSTM_CELL_GRU ? 4 : cell_gates(cell);
}
constexpr bool cell_has_c(int cell) { return cell == CHARLSTM_CELL_LSTM; }
inline const char* cell_name(int cell) {
  switch (cell) {
    case CHARLSTM_CELL_LSTM: return "lstm";
    case CHARLSTM_CELL_GRU: return "gru";
    case CHARLSTM_CELL_RNN_TANH: return "rnn_tanh";
    case CHARLSTM_CELL_RNN_RELU: return "rnn_relu";
    default: return "unknown";
  }
}

#ifndef CHARLSTM_BLOCK_THREADS
#define CHARLSTM_BLOCK_THREADS 256  // the host emulator (csrc/emu) may build with fewer
#endif
constexpr int kThreads = CHARLSTM_BLOCK_THREADS;  // threads per block, all kernels
static_assert(kThreads % 32 == 0, "whole warps only");
constexpr int kWarps = kThreads / 32;

// ---------------------------------------------------------------- tensor-core tile layout
// Both tensor-core directions compute, per chunk of 16 batch rows, Z[M x 16] = A[M x K] . X^T
// with A the block's weights (shared memory, for all steps) and X the 16 staged rows
// (wmma_tiles.cuh).  Shared memory of a block:
//   A tile   [M x ld] of T, columns kpad .. ld-1 unused, columns K .. kpad-1 zero
//   X tile   [16 x ld] of T, likewise
//   Z        [nsplit][Mpad x 16] float: partial sums, one slab per K slice
// Mpad = M rounded up to 16, kpad = K rounded up to 16.  Every region starts at a multiple of
// 32 bytes and ld is a multiple of 8 elements (16 bytes), as WMMA requires of 16-bit tiles.
//
// Row padding (ld = kpad + kTcRowPad): a 16x16 fragment load reads 16 rows of 32 bytes, which
// the hardware serves as 8x8 matrices, 8 rows of 16 bytes per shared-memory wavefront
// (ldmatrix).  Those 8 rows hit 8 different bank groups only when the row stride in 16-byte
// units is odd.  A stride of kpad elements (a multiple of 32 bytes) is always even: 2-way
// conflicts at best and 8-way when a row is a multiple of 128 bytes (H = 768 in 16 bits:
// 1536 B).  Eight more elements (16 bytes) make it odd, so every fragment load is conflict-free.
//
// The A tile holds only its M real rows: the last M tile's 16-row fragment load runs past them
// into the X tile (at most 15 rows of its 16, always inside the allocation), and those junk
// rows only produce rows m >= M of Z, which nobody reads (each output row of an mma depends on
// its own A row only).  This halves the backward's A tile for U <= 8 units.
constexpr int kTcRowPad = 8;  // elements of a 16-bit type: 16 bytes

struct TcLayout {
  int m, mpad, kpad, ld, mtiles, ktiles, nsplit;
  size_t w_bytes, h_bytes, z_bytes;
  CHARLSTM_HD size_t total() const { return w_bytes + h_bytes + z_bytes; }
};

// Warps take (M tile, K slice) pairs: as many K slices as leave no warp idle.
CHARLSTM_HD inline TcLayout tc_layout_mk(int m, int k, size_t elem) {
  TcLayout L;
  L.m = m;
  L.mpad = (m + 15) / 16 * 16;
  L.kpad = (k + 15) / 16 * 16;
  L.ld = L.kpad + kTcRowPad;
  L.mtiles = L.mpad / 16;
  L.ktiles = L.kpad / 16;
  int ns = kWarps / L.mtiles;
  if (ns < 1) ns = 1;
  if (ns > L.ktiles) ns = L.ktiles;
  L.nsplit = ns;
  L.w_bytes = ((size_t)m * L.ld * elem + 31) & ~(size_t)31;
  L.h_bytes = (size_t)16 * L.ld * elem;
  L.z_bytes = (size_t)L.nsplit * L.mpad * 16 * sizeof(float);
  return L;
}

// Forward: M = G*units (gates x units), K = H.  Backward: M = units, K = G*H.
CHARLSTM_HD inline TcLayout tc_layout(int H, int units, int gates, size_t elem) {
  return tc_layout_mk(gates * units, H, elem);
}
CHARLSTM_HD inline TcLayout tc_bwd_layout(int H, int units, int gates, size_t elem) {
  return tc_layout_mk(units, gates * H, elem);
}

// ---------------------------------------------------------------- persistent plan
// What a persistent kernel receives besides its parameters: the block owns hidden units
// [blockIdx.x * units, +units); the FMA kernels stage `bb` batch rows at a time at byte
// `stage_offset` of dynamic shared memory (after the W slice); the tensor-core kernels use
// only `units` (their layout is tc_layout / tc_bwd_layout).
struct PersistentGeometry {
  int units;
  int bb;
  unsigned stage_offset;
};

// The device facts a persistent plan depends on.
struct DeviceLimits {
  int device;
  int cc;          // compute capability, major * 10 + minor
  int sms;         // multiprocessors
  int smem_optin;  // dynamic shared memory per block with the opt-in attribute, bytes
  bool cooperative;
};

enum TcKind { kTcNone = 0, kTcForward = 1, kTcBackward = 2 };

struct PersistentPlan {
  bool ok;  // false: cannot run persistently; `why` says why
  int blocks;
  PersistentGeometry geom;
  size_t smem;  // dynamic shared memory bytes per block
  char why[256];
};

// Plan a persistent kernel of a cell with `gates` gates on a device with limits `d` for T
// steps: blocks of `units` units cover H with at most one block per SM; the FMA kernels
// (tc == kTcNone) keep gates * units rows of H elements of `elem` bytes (the W slice) and stage
// rows of `rowbytes` bytes; the tensor-core kernels have the fixed layout tc_layout /
// tc_bwd_layout.  Co-residency is checked afterwards with plan_check_residency, once the
// occupancy API has answered for plan->smem.
inline void plan_persistent_layout(const DeviceLimits& d, int T, int B, int H, int gates,
                                   size_t elem, size_t rowbytes, TcKind tc,
                                   PersistentPlan* plan) {
  plan->ok = false;
  plan->why[0] = '\0';
  if (!d.cooperative) {
    std::snprintf(plan->why, sizeof(plan->why), "device %d does not support cooperative launches",
                  d.device);
    return;
  }
  if (tc != kTcNone && d.cc < 80) {
    std::snprintf(plan->why, sizeof(plan->why),
                  "the tensor-core kernels need compute capability 8.0 or newer, device %d has "
                  "%d.%d",
                  d.device, d.cc / 10, d.cc % 10);
    return;
  }
  const int units = (H + d.sms - 1) / d.sms;  // fewest units that cover H with <= sms blocks
  const int blocks = (H + units - 1) / units;
  const size_t wbytes = ((size_t)gates * units * H * elem + 15) & ~(size_t)15;
  if (tc != kTcNone) {  // fixed layout: padded weight tile, 16 staged rows, K-split partials
    const size_t need = (tc == kTcForward ? tc_layout(H, units, gates, elem)
                                          : tc_bwd_layout(H, units, gates, elem))
                            .total();
    if (need > (size_t)d.smem_optin) {
      std::snprintf(plan->why, sizeof(plan->why),
                    "the tensor-core layout needs %zu bytes of shared memory per block (%d "
                    "units of H=%d on %d SMs), more than the %d available",
                    need, units, H, d.sms, d.smem_optin);
      return;
    }
    rowbytes = need - wbytes;  // so that wbytes + bb * rowbytes == need with bb = 1 below
    B = 1;
  }
  if (wbytes + rowbytes > (size_t)d.smem_optin) {
    std::snprintf(plan->why, sizeof(plan->why),
                  "the W_hh slice of %zu bytes per block (%d units of H=%d on %d SMs) plus one "
                  "staged row of %zu bytes exceeds the %d bytes of shared memory per block",
                  wbytes, units, H, d.sms, rowbytes, d.smem_optin);
    return;
  }
  if ((unsigned long long)blocks * (unsigned long long)(T + 1) >= 0x80000000ULL) {
    std::snprintf(plan->why, sizeof(plan->why),
                  "%d blocks x %d steps overflows the barrier counter", blocks, T);
    return;
  }
  size_t bb = ((size_t)d.smem_optin - wbytes) / rowbytes;
  if (bb > (size_t)B) bb = (size_t)B;
  if (bb > 64) bb = 64;
  plan->ok = true;
  plan->blocks = blocks;
  plan->geom.units = units;
  plan->geom.bb = (int)bb;
  plan->geom.stage_offset = (unsigned)wbytes;
  plan->smem = wbytes + bb * rowbytes;
}

// The spin barrier needs every block resident at once: per_sm blocks fit on each of sms SMs.
inline void plan_check_residency(int per_sm, int sms, PersistentPlan* plan) {
  if ((long long)per_sm * sms < plan->blocks) {
    plan->ok = false;
    std::snprintf(plan->why, sizeof(plan->why),
                  "%d blocks needed but only %d x %d can be resident at once", plan->blocks, per_sm,
                  sms);
  }
}

// ---------------------------------------------------------------- stepwise plan
// Block tile of the stepwise kernels and the shared memory they may stage into (the default
// dynamic limit, so no opt-in attribute is needed).  The emulator passes smaller ones.
struct StepLimits {
  int units = 8;
  int rows = 16;
  size_t smem = 48 * 1024;
};

// Grid (grid_x, grid_y) = (ceil(H/units), ceil(B/rows)); each block stages `stage_rows` rows of
// `rowbytes` bytes in `smem` bytes of shared memory (stage_rows == 0: no staging, the block
// reads the exchanged rows from global memory).
struct StepPlan {
  bool ok;
  int units, rows, stage_rows;
  size_t smem;
  unsigned grid_x, grid_y;
  char why[128];
};

inline void plan_stepwise(int B, int H, size_t rowbytes, const StepLimits& lim, StepPlan* plan) {
  plan->ok = false;
  plan->why[0] = '\0';
  const int rows = B < lim.rows ? B : lim.rows;
  int stage_rows = 0;
  if ((size_t)rows * rowbytes <= lim.smem) {
    stage_rows = rows;
  } else if (rowbytes <= lim.smem) {
    stage_rows = (int)(lim.smem / rowbytes);
  }
  const long long gy = ((long long)B + rows - 1) / rows;
  if (gy > 65535) {
    std::snprintf(plan->why, sizeof(plan->why), "batch %d too large (at most %lld rows)", B,
                  65535LL * lim.rows);
    return;
  }
  plan->ok = true;
  plan->units = lim.units;
  plan->rows = rows;
  plan->stage_rows = stage_rows;
  plan->smem = (size_t)stage_rows * rowbytes;
  plan->grid_x = (unsigned)((H + lim.units - 1) / lim.units);
  plan->grid_y = (unsigned)gy;
}

// ---------------------------------------------------------------- which paths to try
inline const char* path_name(int path) {
  switch (path) {
    case CHARLSTM_PATH_AUTO: return "auto";
    case CHARLSTM_PATH_PERSISTENT: return "persistent";
    case CHARLSTM_PATH_STEPWISE: return "stepwise";
    case CHARLSTM_PATH_PERSISTENT_TC: return "persistent_tc";
    default: return "unknown";
  }
}

// The paths a request runs, in the order they are tried: a launcher runs the first that fits
// and launches.  One candidate means the path was forced (an unfit shape is then an error);
// otherwise the last, STEPWISE, always runs.
struct PathChoice {
  bool ok;  // false: the request cannot run here; `why` says why
  int n;
  int paths[3];
  char why[200];
};

// requested: enum charlstm_path.  capturing: the stream is capturing a CUDA graph.
// half_type: the dtype is float16 or bfloat16 (the tensor-core kernels exist only for those).
//
// Under capture AUTO runs STEPWISE: it is made of ordinary kernel launches, which capture,
// while the persistent paths need a cooperative launch, whose capture the CUDA runtime may
// refuse (and whose plan queries the device).  A forced persistent path under capture is an
// error naming the paths that capture, rather than a silent change of path.
inline PathChoice choose_paths(int requested, bool capturing, bool half_type, int B) {
  PathChoice c;
  c.ok = true;
  c.n = 0;
  c.why[0] = '\0';
  if (capturing) {
    if (requested == CHARLSTM_PATH_AUTO || requested == CHARLSTM_PATH_STEPWISE) {
      c.paths[c.n++] = CHARLSTM_PATH_STEPWISE;
    } else {
      c.ok = false;
      std::snprintf(c.why, sizeof(c.why),
                    "the %s path is not run under CUDA-graph capture (it needs a cooperative "
                    "launch); capture with the stepwise path, or auto, which runs stepwise "
                    "while the stream is capturing",
                    path_name(requested));
    }
    return c;
  }
  switch (requested) {
    case CHARLSTM_PATH_AUTO:
      if (half_type && B >= CHARLSTM_TC_MIN_BATCH) c.paths[c.n++] = CHARLSTM_PATH_PERSISTENT_TC;
      c.paths[c.n++] = CHARLSTM_PATH_PERSISTENT;
      c.paths[c.n++] = CHARLSTM_PATH_STEPWISE;
      break;
    case CHARLSTM_PATH_PERSISTENT_TC:  // float32 has no tensor-core kernel: the FMA one runs
      c.paths[c.n++] = half_type ? CHARLSTM_PATH_PERSISTENT_TC : CHARLSTM_PATH_PERSISTENT;
      break;
    default: c.paths[c.n++] = requested; break;
  }
  return c;
}

}  // namespace charlstm
