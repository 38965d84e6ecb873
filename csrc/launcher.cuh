// Host side of the launchers (CUDA runtime, no torch): error reporting, argument checks, and
// run_direction, which runs one direction of the recurrence on the path a request resolves to
// (launch_plan.h: choose_paths) -- one persistent launcher for the FMA and tensor-core
// kernels, the stepwise loop as the fallback.  kernels.cuh calls it with each cell's kernels;
// the C entry points (launcher.cu) call run_forward / run_backward of the requested cell.
#pragma once

#include <cstddef>
#include <cstdio>

#include <cuda_runtime.h>

#include "launch.h"
#include "launch_plan.h"

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

// Common argument validation (sizes, dtype, path, cell); returns CHARLSTM_OK or
// CHARLSTM_ERR_ARGS (message set).
int check_sizes(const char* who, int T, int B, int H, int dtype, int path, int cell);

// Whether `stream` is capturing a CUDA graph.  Returns CHARLSTM_OK or CHARLSTM_ERR_CUDA.
int stream_capturing(cudaStream_t stream, const char* who, bool* capturing);

// Plan a persistent kernel of a cell with `gates` gates on the current device (launch_plan.h's
// plan_persistent_layout with the device's limits, then its dynamic shared memory attribute and
// the occupancy check).  Returns CHARLSTM_OK (plan->ok says whether it fits) or
// CHARLSTM_ERR_CUDA.
int plan_persistent(const void* kernel, int T, int B, int H, int gates, size_t elem,
                    size_t rowbytes, TcKind tc, PersistentPlan* plan);

// The one persistent launcher: plan `kernel`, zero the barrier counter on `stream`, launch it
// cooperatively.  The kernel takes (Params, int units, int bb, unsigned stage_offset), the
// fields of PersistentGeometry as scalars (a struct parameter made ptxas spill in the 16-bit
// FMA forward on sm_90); `params` points to its Params.
// forced: an unfit shape or a failed launch is an error.  Otherwise an unfit shape or a
// cooperative grid the driver finds too large returns CHARLSTM_OK with *launched false, and
// the caller tries its next path.  `path` names the path in messages.
int launch_persistent(const void* kernel, void* params, unsigned* counter, TcKind tc, int path,
                      int T, int B, int H, int gates, size_t elem, size_t rowbytes, bool forced,
                      const char* who, cudaStream_t stream, bool* launched);

// The kernels of one direction for one dtype.
struct DirectionKernels {
  const void* persistent;  // FMA persistent kernel
  const void* tc;          // tensor-core persistent kernel; nullptr where there is none (float32)
  TcKind tc_kind;          // kTcForward or kTcBackward
};

// Run one direction of a cell with `gates` gates for `requested` (enum charlstm_path): try the
// paths of choose_paths in order; `rowbytes` is one staged row of the FMA kernels;
// step_loop(const StepPlan&) enqueues the stepwise kernels and returns the first launch error
// (cudaSuccess if none).  On success
// *used (if not null) is the path that ran.
template <typename StepLoop>
int run_direction(const char* who, const DirectionKernels& k, void* params, unsigned* counter,
                  int T, int B, int H, int gates, size_t elem, size_t rowbytes, int requested,
                  cudaStream_t stream, StepLoop&& step_loop, int* used) {
  bool capturing = false;
  int st = stream_capturing(stream, who, &capturing);
  if (st != CHARLSTM_OK) return st;
  const PathChoice choice = choose_paths(requested, capturing, k.tc != nullptr, B);
  if (!choice.ok) {
    set_error("%s: %s", who, choice.why);
    return CHARLSTM_ERR_PERSISTENT_UNFIT;
  }
  for (int i = 0; i < choice.n; ++i) {
    const int path = choice.paths[i];
    if (path == CHARLSTM_PATH_STEPWISE) {
      StepPlan sp;
      plan_stepwise(B, H, rowbytes, StepLimits(), &sp);
      if (!sp.ok) {
        set_error("%s: stepwise path: %s", who, sp.why);
        return CHARLSTM_ERR_ARGS;
      }
      const cudaError_t e = step_loop(sp);
      if (e != cudaSuccess) {
        char what[96];
        std::snprintf(what, sizeof what, "%s: stepwise launch", who);
        return cuda_fail(e, what);
      }
    } else {
      const bool tc = path == CHARLSTM_PATH_PERSISTENT_TC;
      bool launched = false;
      st = launch_persistent(tc ? k.tc : k.persistent, params, counter, tc ? k.tc_kind : kTcNone,
                             path, T, B, H, gates, elem, rowbytes, choice.n == 1, who, stream,
                             &launched);
      if (st != CHARLSTM_OK) return st;
      if (!launched) continue;
    }
    if (used) *used = path;
    return CHARLSTM_OK;
  }
  set_error("%s: no path could run (requested %s)", who, path_name(requested));
  return CHARLSTM_ERR_PERSISTENT_UNFIT;
}

// One cell's (enum charlstm_cell kCell) forward / backward for every dtype, on checked
// arguments: defined in kernels.cuh, instantiated in cell_<name>.cu.
template <int kCell>
int run_forward(const charlstm_fwd_args* a, cudaStream_t stream, int path, int* used);
template <int kCell>
int run_backward(const charlstm_bwd_args* a, cudaStream_t stream, int path, int* used);

}  // namespace charlstm
