// The forward kernels of the LSTM recurrent core (one __global__ per path and dtype: dynamic
// shared memory and a call to the body in fma_forward.cuh / tc_persistent.cuh) and the C entry
// point charlstm_lstm_forward (launch.h), which runs them through run_direction
// (launcher.cuh).
#include <type_traits>

#include "fma_forward.cuh"
#include "launch.h"
#include "launcher.cuh"
#include "tc_persistent.cuh"

namespace charlstm {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_persistent_kernel(FwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(16) unsigned char smem[];
  fwd_persistent_body<T>(p, PersistentGeometry{units, bb, stage_offset}, smem);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_step_kernel(FwdParams<T> p, int t, int units, int rows, int stage_rows) {
  extern __shared__ __align__(16) unsigned char smem[];
  fwd_step_body<T>(p, t, units, rows, stage_rows, smem);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_persistent_tc_kernel(FwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(128) unsigned char smem_tc[];
  fwd_persistent_tc_body<T>(p, PersistentGeometry{units, bb, stage_offset}, smem_tc);
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
  DirectionKernels k;
  k.persistent = reinterpret_cast<const void*>(&fwd_persistent_kernel<T>);
  k.tc = nullptr;  // tensor cores: float16/bfloat16 only (never instantiated for float)
  if constexpr (!std::is_same<T, float>::value)
    k.tc = reinterpret_cast<const void*>(&fwd_persistent_tc_kernel<T>);
  k.tc_kind = kTcForward;
  const size_t rowbytes = (size_t)a->H * sizeof(T);  // one staged row of h
  return run_direction(
      "forward", k, &p, p.counter, a->T, a->B, a->H, sizeof(T), rowbytes, path, stream,
      [&](const StepPlan& sp) {
        for (int t = 0; t < a->T; ++t) {
          fwd_step_kernel<T><<<dim3(sp.grid_x, sp.grid_y), kThreads, sp.smem, stream>>>(
              p, t, sp.units, sp.rows, sp.stage_rows);
          const cudaError_t e = cudaGetLastError();
          if (e != cudaSuccess) return e;
        }
        return cudaSuccess;
      },
      used);
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
