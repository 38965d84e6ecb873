// The backward kernels of the LSTM recurrent core (one __global__ per path and dtype: dynamic
// shared memory and a call to the body in fma_backward.cuh / tc_persistent.cuh) and the C entry
// point charlstm_lstm_backward (launch.h), which runs them through run_direction
// (launcher.cuh).
#include <type_traits>

#include "fma_backward.cuh"
#include "launch.h"
#include "launcher.cuh"
#include "tc_persistent.cuh"

namespace charlstm {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_persistent_kernel(BwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(16) unsigned char smem[];
  bwd_persistent_body<T>(p, PersistentGeometry{units, bb, stage_offset}, smem);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_step_kernel(BwdParams<T> p, int s, int units, int rows, int stage_rows) {
  extern __shared__ __align__(16) unsigned char smem[];
  bwd_step_body<T>(p, s, units, rows, stage_rows, smem);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_persistent_tc_kernel(BwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(128) unsigned char smem_tc[];
  bwd_persistent_tc_body<T>(p, PersistentGeometry{units, bb, stage_offset}, smem_tc);
}

template <typename T>
static int run_backward(const charlstm_bwd_args* a, cudaStream_t stream, int path, int* used) {
  BwdParams<T> p;
  p.dhs = static_cast<const T*>(a->dhs);
  p.dhT = static_cast<const T*>(a->dhT);
  p.dcT = static_cast<const T*>(a->dcT);
  p.wt = static_cast<const T*>(a->w_t);
  p.c0 = static_cast<const T*>(a->c0);
  p.cs = a->cs;
  p.gates = a->gates;
  p.lengths = a->lengths;
  p.dgates = static_cast<T*>(a->dgates);
  p.dh0 = static_cast<T*>(a->dh0);
  p.dc0 = static_cast<T*>(a->dc0);
  p.dzbuf = a->dzbuf;
  p.dcbuf = a->dcbuf;
  p.counter = a->counter;
  p.Tn = a->T;
  p.B = a->B;
  p.H = a->H;
  DirectionKernels k;
  k.persistent = reinterpret_cast<const void*>(&bwd_persistent_kernel<T>);
  k.tc = nullptr;  // tensor cores: float16/bfloat16 only (never instantiated for float)
  if constexpr (!std::is_same<T, float>::value)
    k.tc = reinterpret_cast<const void*>(&bwd_persistent_tc_kernel<T>);
  k.tc_kind = kTcBackward;
  const size_t rowbytes = (size_t)4 * a->H * sizeof(float);  // one staged row of dz
  return run_direction(
      "backward", k, &p, p.counter, a->T, a->B, a->H, sizeof(T), rowbytes, path, stream,
      [&](const StepPlan& sp) {
        for (int s = a->T - 1; s >= -1; --s) {
          bwd_step_kernel<T><<<dim3(sp.grid_x, sp.grid_y), kThreads, sp.smem, stream>>>(
              p, s, sp.units, sp.rows, sp.stage_rows);
          const cudaError_t e = cudaGetLastError();
          if (e != cudaSuccess) return e;
        }
        return cudaSuccess;
      },
      used);
}

}  // namespace charlstm

extern "C" int charlstm_lstm_backward(const charlstm_bwd_args* a, void* stream, int path,
                                      int* path_used) {
  using namespace charlstm;
  clear_error();
  if (a == nullptr) {
    set_error("charlstm_lstm_backward: null arguments");
    return CHARLSTM_ERR_ARGS;
  }
  int st = check_sizes("charlstm_lstm_backward", a->T, a->B, a->H, a->dtype, path);
  if (st != CHARLSTM_OK) return st;
  if (!a->dhs || !a->dhT || !a->dcT || !a->w_t || !a->c0 || !a->cs || !a->gates || !a->dgates ||
      !a->dh0 || !a->dc0 || !a->dzbuf || !a->dcbuf || !a->counter) {
    set_error("charlstm_lstm_backward: a required pointer is null");
    return CHARLSTM_ERR_ARGS;
  }
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a->dtype) {
    case CHARLSTM_FLOAT32: return run_backward<float>(a, s, path, path_used);
    case CHARLSTM_FLOAT16: return run_backward<__half>(a, s, path, path_used);
    default: return run_backward<__nv_bfloat16>(a, s, path, path_used);
  }
}
