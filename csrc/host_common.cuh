// Host-side helpers shared by the forward and backward launchers: error reporting and the
// launch plans of the two paths (persistent and stepwise).
// Status: compiled, not yet verified on a GPU.
#pragma once

#include <cstddef>
#include <cstdio>

#include <cuda_runtime.h>

#include "launch.h"

namespace charlstm {

// Record a printf-style message for charlstm_last_error() on this host thread.
void set_error(const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
void clear_error();
// Record "<what>: <CUDA error string>" and return CHARLSTM_ERR_CUDA.
int cuda_fail(cudaError_t err, const char* what);

// Persistent launch plan: `blocks` blocks of kThreads threads, one per `units` hidden units;
// dynamic shared memory = the block's W_hh slice (`stage_offset` bytes, 16-aligned) followed by
// `bb` staged batch rows of `rowbytes` bytes each.
struct PersistentPlan {
  bool ok;             // false: cannot run persistently; `why` says why
  int units;
  int blocks;
  int bb;
  unsigned stage_offset;
  size_t smem;
  char why[256];
};

// Fill `plan` for a persistent kernel whose W slice holds 4 * units * H elements of `elem`
// bytes and whose staged batch row has `rowbytes` bytes, for a sequence of T steps.  Checks
// shared memory, cooperative-launch support and co-residency (occupancy API), and sets the
// kernel's dynamic shared memory attribute.  Returns CHARLSTM_OK or CHARLSTM_ERR_CUDA.
// tc: kTcForward / kTcBackward for the tensor-core kernels, whose shared memory is
// tc_layout(H, units) / tc_bwd_layout(H, units) .total() (rowbytes and B are then ignored);
// kTcNone for the FMA kernels.
enum TcKind { kTcNone = 0, kTcForward = 1, kTcBackward = 2 };
int plan_persistent(const void* kernel, int T, int B, int H, size_t elem, size_t rowbytes,
                    TcKind tc, PersistentPlan* plan);

// Stepwise launch plan: grid (ceil(H/units), ceil(B/rows)); each block stages `stage_rows`
// rows of `rowbytes` bytes in `smem` bytes of shared memory (stage_rows == 0: no staging,
// the block reads the exchanged rows from global memory).
struct StepPlan {
  int units;
  int rows;
  int stage_rows;
  size_t smem;
  dim3 grid;
};
// Returns CHARLSTM_OK or CHARLSTM_ERR_ARGS (batch too large for the grid).
int plan_stepwise(int B, int H, size_t rowbytes, StepPlan* plan);

// Launch a persistent (cooperative) kernel taking (Params, units, bb, stage_offset) if its plan
// fits.  `path` is the requested path (CHARLSTM_PATH_PERSISTENT forces it: an unfit shape or a
// failed launch is an error; otherwise an unfit shape or a too-large cooperative grid falls back
// and *launched stays false).  `who` ("forward"/"backward") prefixes every message.
template <typename Params>
int launch_persistent(const void* kernel, Params& p, unsigned* counter, int T, int B, int H,
                      size_t elem, size_t rowbytes, int path, const char* who,
                      cudaStream_t stream, int threads, bool* launched) {
  *launched = false;
  PersistentPlan pl;
  int st = plan_persistent(kernel, T, B, H, elem, rowbytes, kTcNone, &pl);
  if (st != CHARLSTM_OK) return st;
  const bool forced = path == CHARLSTM_PATH_PERSISTENT;
  if (!pl.ok) {
    if (!forced) return CHARLSTM_OK;
    set_error("%s: the persistent path cannot run this shape: %s", who, pl.why);
    return CHARLSTM_ERR_PERSISTENT_UNFIT;
  }
  cudaError_t e = cudaMemsetAsync(counter, 0, sizeof(unsigned), stream);
  char what[96];
  if (e != cudaSuccess) {
    snprintf(what, sizeof what, "%s: zeroing the barrier counter", who);
    return cuda_fail(e, what);
  }
  int units = pl.units, bb = pl.bb;
  unsigned off = pl.stage_offset;
  void* args[] = {&p, &units, &bb, &off};
  e = cudaLaunchCooperativeKernel(kernel, dim3(pl.blocks), dim3(threads), args, pl.smem, stream);
  if (e == cudaSuccess) {
    *launched = true;
    return CHARLSTM_OK;
  }
  if (forced || e != cudaErrorCooperativeLaunchTooLarge) {
    snprintf(what, sizeof what, "%s: persistent cooperative launch", who);
    return cuda_fail(e, what);
  }
  (void)cudaGetLastError();  // not sticky: the caller falls back to the stepwise path
  return CHARLSTM_OK;
}

// Launch a tensor-core persistent kernel taking (Params, units) if its plan fits.  `forced`
// (path PERSISTENT_TC): an unfit shape or a failed launch is an error; otherwise (AUTO) an
// unfit shape or a too-large cooperative grid leaves *launched false and returns CHARLSTM_OK.
template <typename Params>
int launch_persistent_tc(const void* kernel, Params& p, unsigned* counter, int T, int B, int H,
                         size_t elem, TcKind tc, bool forced, const char* who,
                         cudaStream_t stream, int threads, bool* launched) {
  *launched = false;
  PersistentPlan pl;
  int st = plan_persistent(kernel, T, B, H, elem, 0, tc, &pl);
  if (st != CHARLSTM_OK) return st;
  if (!pl.ok) {
    if (!forced) return CHARLSTM_OK;
    set_error("%s: the persistent_tc path cannot run this shape: %s", who, pl.why);
    return CHARLSTM_ERR_PERSISTENT_UNFIT;
  }
  char what[96];
  cudaError_t e = cudaMemsetAsync(counter, 0, sizeof(unsigned), stream);
  if (e != cudaSuccess) {
    snprintf(what, sizeof what, "%s: zeroing the barrier counter", who);
    return cuda_fail(e, what);
  }
  int units = pl.units;
  void* args[] = {&p, &units};
  e = cudaLaunchCooperativeKernel(kernel, dim3(pl.blocks), dim3(threads), args, pl.smem, stream);
  if (e == cudaSuccess) {
    *launched = true;
    return CHARLSTM_OK;
  }
  if (forced || e != cudaErrorCooperativeLaunchTooLarge) {
    snprintf(what, sizeof what, "%s: persistent_tc cooperative launch", who);
    return cuda_fail(e, what);
  }
  (void)cudaGetLastError();  // AUTO: not sticky, the caller falls back to the FMA paths
  return CHARLSTM_OK;
}

// The tensor-core step of both launchers' path choice: for PERSISTENT_TC, or AUTO with
// B >= CHARLSTM_TC_MIN_BATCH, try the tensor-core kernel (float16/bfloat16 only: with float32,
// PERSISTENT_TC becomes PERSISTENT).  Returns a status; *done says whether it launched (then
// *used is set).  When it did not, *path is what the FMA paths should run.
template <typename Params>
int try_tensor_cores(bool half_type, const void* kernel, Params& p, int T, int B, int H,
                     size_t elem, TcKind tc, int* path, const char* who, cudaStream_t stream,
                     int threads, int* used, bool* done) {
  *done = false;
  if (*path != CHARLSTM_PATH_PERSISTENT_TC &&
      !(*path == CHARLSTM_PATH_AUTO && B >= CHARLSTM_TC_MIN_BATCH))
    return CHARLSTM_OK;
  if (!half_type) {
    if (*path == CHARLSTM_PATH_PERSISTENT_TC) *path = CHARLSTM_PATH_PERSISTENT;
    return CHARLSTM_OK;
  }
  const bool forced = *path == CHARLSTM_PATH_PERSISTENT_TC;
  int st = launch_persistent_tc(kernel, p, p.counter, T, B, H, elem, tc, forced, who, stream,
                                threads, done);
  if (st == CHARLSTM_OK && *done && used) *used = CHARLSTM_PATH_PERSISTENT_TC;
  // (forced and not launched is an error, returned by launch_persistent_tc; AUTO and unfit:
  // the FMA paths run)
  return st;
}

// Common argument validation; returns CHARLSTM_OK or CHARLSTM_ERR_ARGS (message set).
int check_sizes(const char* who, int T, int B, int H, int dtype, int path);

}  // namespace charlstm
