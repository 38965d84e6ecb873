// Backward kernels of the charlstm recurrent core and their launcher.
//
// Status: compiled for sm_80/sm_90, not yet verified on a GPU.
//
// Column ownership: block i owns hidden units j0 .. j0+units-1 and keeps the columns
// W_hh[:, j0:j0+units] (4H x units, stored transposed: units rows of 4H) in shared memory.
// Iteration s = T-1 .. 0:
//   dh_in[b, j] = (dz[s+1] @ W_hh)[b, j] for the block's j, reading all of dz[s+1] (float32,
//   [B, 4H], written by every block at the previous iteration) from the exchange buffer
//   dzbuf[(s+1)&1]; then the fused pointwise backward of the cell for (b, j), which needs only
//   (b, j)-local saved values (gates[s], cs[s], cs[s-1] or c0, dhs[s], dc carried in dcbuf);
//   it writes dgates[s] (dtype D) and dz[s] (float32) into dzbuf[s&1]; one grid barrier.
// A final iteration s = -1 computes dh0 = dz[0] @ W_hh and dc0 = dc[0] * f[0].
// Rows with s >= lengths[b] write dgates = 0; until a row's last active step its dh/dc are the
// incoming dhT/dcT unchanged (exactly the reference's torch.where carry).
// Stepwise path: the same iteration, one launch per s, W_hh^T read from global memory.
// Tensor-core path (persistent_tc; AUTO for float16/bfloat16 from CHARLSTM_TC_MIN_BATCH rows):
//   the same ownership and iteration with dh_in = dgates[s+1] @ W_hh[:, j] on WMMA
//   (lstm_device.cuh: bwd_persistent_tc_body), i.e. on the gate gradients rounded to the input
//   dtype -- the values this backward returns -- instead of the float32 dz of the FMA path.
#include <type_traits>

#include "host_common.cuh"
#include "launch.h"
#include "lstm_device.cuh"

namespace charlstm {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_persistent_kernel(BwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(16) unsigned char smem[];
  bwd_persistent_body<T>(p, units, bb, stage_offset, smem);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_step_kernel(BwdParams<T> p, int s, int units, int rows, int stage_rows) {
  extern __shared__ __align__(16) unsigned char smem[];
  bwd_step_body<T>(p, s, units, rows, stage_rows, smem);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_persistent_tc_kernel(BwdParams<T> p, int units) {
  extern __shared__ __align__(128) unsigned char smem_tc[];
  bwd_persistent_tc_body<T>(p, units, smem_tc);
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
  const size_t rowbytes = (size_t)4 * a->H * sizeof(float);  // one staged row of dz

  const void* tc_kernel = nullptr;  // tensor cores: float16/bfloat16 only (never instantiated
  if constexpr (!std::is_same<T, float>::value)   // for float)
    tc_kernel = reinterpret_cast<const void*>(&bwd_persistent_tc_kernel<T>);
  bool done = false;
  int tst = try_tensor_cores(tc_kernel != nullptr, tc_kernel, p, a->T, a->B, a->H, sizeof(T),
                             kTcBackward, &path, "backward", stream, kThreads, used, &done);
  if (tst != CHARLSTM_OK || done) return tst;
  if (path != CHARLSTM_PATH_STEPWISE) {
    bool launched = false;
    int st = launch_persistent(reinterpret_cast<const void*>(&bwd_persistent_kernel<T>), p, p.counter, a->T,
                               a->B, a->H, sizeof(T), rowbytes, path, "backward", stream, kThreads,
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
  for (int s = a->T - 1; s >= -1; --s) {
    bwd_step_kernel<T><<<sp.grid, kThreads, sp.smem, stream>>>(p, s, sp.units, sp.rows,
                                                               sp.stage_rows);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_fail(e, "backward: stepwise launch");
  }
  if (used) *used = CHARLSTM_PATH_STEPWISE;
  return CHARLSTM_OK;
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
