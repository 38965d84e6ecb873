// Forward kernels of the charlstm recurrent core and their launcher.
//
// Status: compiled for sm_80/sm_90, not yet verified on a GPU.
//
// Persistent path (one cooperative launch per layer and direction):
//   block i owns hidden units j0 = i*units .. j0+units-1, i.e. the 4*units rows of W_hh
//   (gates i, f, g, o of those units), copied once into shared memory and kept for all steps.
//   Step t: stage h[t-1] (all B rows, in chunks of bb rows) from the global exchange buffer
//   hbuf[t&1] into shared memory, z = xproj[t] + h[t-1] @ W_slice^T for the block's units
//   (float32 FMA), gates, cell update and the write of h[t] into hbuf[(t+1)&1] -- all fused --
//   then one grid barrier (lstm_device.cuh: grid_barrier) before step t+1.  The cell state of a
//   (row, unit) pair never leaves its owner thread's hands: c[t-1] is re-read from cs[t-1], which
//   that same thread wrote.
// Stepwise path (fallback): the same fused step, one launch per t from a host loop; W_hh rows are
//   read from global memory/L2; kernel boundaries order the steps.  Capturable in a CUDA graph.
// AUTO: the tensor-core persistent forward for float16/bfloat16 at B >= CHARLSTM_TC_MIN_BATCH
//   (launch.h) when its layout fits, else persistent when it fits, else stepwise.
#include <type_traits>

#include "host_common.cuh"
#include "launch.h"
#include "lstm_device.cuh"

namespace charlstm {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_persistent_kernel(FwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(16) unsigned char smem[];
  fwd_persistent_body<T>(p, units, bb, stage_offset, smem);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_step_kernel(FwdParams<T> p, int t, int units, int rows, int stage_rows) {
  extern __shared__ __align__(16) unsigned char smem[];
  fwd_step_body<T>(p, t, units, rows, stage_rows, smem);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_persistent_tc_kernel(FwdParams<T> p, int units) {
  extern __shared__ __align__(128) unsigned char smem_tc[];
  fwd_persistent_tc_body<T>(p, units, smem_tc);
}

template <typename T>
static int run_forward(const charlstm_fwd_args* a, cudaStream_t stream, int path, int* used) {
  FwdParams<T> p;
  p.xproj = static_cast<const T*>(a->xproj);
  p.w = static_cast<const T*>(a->w_hh);
  p.h0 = static_cast<const T*>(a->h0);
  p.c0 = static_cast<const T*>(a->c0);
  p.lengths = a->lengths;
  p.hs = static_cast<T*>(a->hs);
  p.hT = static_cast<T*>(a->hT);
  p.cT = static_cast<T*>(a->cT);
  p.cs = a->cs;
  p.gates = a->gates;
  p.hbuf = static_cast<T*>(a->hbuf);
  p.counter = a->counter;
  p.Tn = a->T;
  p.B = a->B;
  p.H = a->H;
  const size_t rowbytes = (size_t)a->H * sizeof(T);  // one staged row of h

  const void* tc_kernel = nullptr;  // tensor cores: float16/bfloat16 only (never instantiated
  if constexpr (!std::is_same<T, float>::value)   // for float)
    tc_kernel = reinterpret_cast<const void*>(&fwd_persistent_tc_kernel<T>);
  bool done = false;
  int tst = try_tensor_cores(tc_kernel != nullptr, tc_kernel, p, a->T, a->B, a->H, sizeof(T),
                             kTcForward, &path, "forward", stream, kThreads, used, &done);
  if (tst != CHARLSTM_OK || done) return tst;
  if (path != CHARLSTM_PATH_STEPWISE) {
    bool launched = false;
    int st = launch_persistent(reinterpret_cast<const void*>(&fwd_persistent_kernel<T>), p, p.counter, a->T,
                               a->B, a->H, sizeof(T), rowbytes, path, "forward", stream, kThreads,
                               &launched);
    if (st != CHARLSTM_OK) return st;
    if (launched) {
      if (used) *used = CHARLSTM_PATH_PERSISTENT;
      return CHARLSTM_OK;
    }
  }

  StepPlan sp;
  int st = plan_stepwise(a->B, a->H, rowbytes, &sp);
  if (st != CHARLSTM_OK) return st;
  for (int t = 0; t < a->T; ++t) {
    fwd_step_kernel<T><<<sp.grid, kThreads, sp.smem, stream>>>(p, t, sp.units, sp.rows,
                                                               sp.stage_rows);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_fail(e, "forward: stepwise launch");
  }
  if (used) *used = CHARLSTM_PATH_STEPWISE;
  return CHARLSTM_OK;
}

}  // namespace charlstm

extern "C" int charlstm_lstm_forward(const charlstm_fwd_args* a, void* stream, int path,
                                     int* path_used) {
  using namespace charlstm;
  clear_error();
  if (a == nullptr) {
    set_error("charlstm_lstm_forward: null arguments");
    return CHARLSTM_ERR_ARGS;
  }
  int st = check_sizes("charlstm_lstm_forward", a->T, a->B, a->H, a->dtype, path);
  if (st != CHARLSTM_OK) return st;
  if (!a->xproj || !a->w_hh || !a->h0 || !a->c0 || !a->hs || !a->hT || !a->cT || !a->cs ||
      !a->gates || !a->hbuf || !a->counter) {
    set_error("charlstm_lstm_forward: a required pointer is null");
    return CHARLSTM_ERR_ARGS;
  }
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a->dtype) {
    case CHARLSTM_FLOAT32: return run_forward<float>(a, s, path, path_used);
    case CHARLSTM_FLOAT16: return run_forward<__half>(a, s, path, path_used);
    default: return run_forward<__nv_bfloat16>(a, s, path, path_used);
  }
}
