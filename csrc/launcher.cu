// Host side of the launchers (see launcher.cuh): errors, argument checks, the capture query,
// the device-side persistent plan, the one cooperative launcher, and the C entry points of
// launch.h, which check the arguments and call the requested cell's run_forward / run_backward
// (instantiated in cell_<name>.cu).
#include "launcher.cuh"

#include <cstdarg>
#include <cstdio>
#include <initializer_list>
#include <type_traits>

namespace {
thread_local char g_error[512] = {0};
}  // namespace

extern "C" const char* charlstm_last_error(void) { return g_error; }

namespace charlstm {

void set_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_error, sizeof(g_error), fmt, ap);
  va_end(ap);
}

void clear_error() { g_error[0] = '\0'; }

int cuda_fail(cudaError_t err, const char* what) {
  set_error("%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
  return CHARLSTM_ERR_CUDA;
}

int check_sizes(const char* who, int T, int B, int H, int dtype, int path, int cell) {
  if (T < 1 || B < 1 || H < 1) {
    set_error("%s: need T, B, H >= 1, got T=%d B=%d H=%d", who, T, B, H);
    return CHARLSTM_ERR_ARGS;
  }
  if (dtype != CHARLSTM_FLOAT32 && dtype != CHARLSTM_FLOAT16 && dtype != CHARLSTM_BFLOAT16) {
    set_error("%s: unsupported dtype code %d (expected float32, float16 or bfloat16)", who, dtype);
    return CHARLSTM_ERR_ARGS;
  }
  if (path != CHARLSTM_PATH_AUTO && path != CHARLSTM_PATH_PERSISTENT &&
      path != CHARLSTM_PATH_STEPWISE && path != CHARLSTM_PATH_PERSISTENT_TC) {
    set_error(
        "%s: unknown path code %d (expected 0 auto, 1 persistent, 2 stepwise, "
        "3 persistent_tc)",
        who, path);
    return CHARLSTM_ERR_ARGS;
  }
  const int gates = cell_gates(cell);
  if (gates == 0) {
    set_error("%s: unknown cell code %d (expected 0 lstm, 1 gru, 2 rnn_tanh, 3 rnn_relu)", who,
              cell);
    return CHARLSTM_ERR_ARGS;
  }
  if ((long long)H * gates * H > 0x7fffffffLL) {
    set_error("%s: hidden size %d too large for the %s cell (%d*H*H must fit in int32)", who, H,
              cell_name(cell), gates);
    return CHARLSTM_ERR_ARGS;
  }
  return CHARLSTM_OK;
}

int stream_capturing(cudaStream_t stream, const char* who, bool* capturing) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t e = cudaStreamIsCapturing(stream, &status);
  if (e != cudaSuccess) {
    char what[96];
    std::snprintf(what, sizeof what, "%s: asking whether the stream is capturing", who);
    return cuda_fail(e, what);
  }
  // Active, or Invalidated (a capture already broken, where only ordinary launches may go on)
  *capturing = status != cudaStreamCaptureStatusNone;
  return CHARLSTM_OK;
}

int plan_persistent(const void* kernel, int T, int B, int H, int gates, size_t elem,
                    size_t rowbytes, TcKind tc, PersistentPlan* plan) {
  plan->ok = false;
  DeviceLimits d;
  int coop = 0, major = 0, minor = 0;
  cudaError_t e = cudaGetDevice(&d.device);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d.device);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d.device);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, d.device);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, d.device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, d.device);
  if (e != cudaSuccess) return cuda_fail(e, "querying the device");
  d.cc = major * 10 + minor;
  d.cooperative = coop != 0;
  plan_persistent_layout(d, T, B, H, gates, elem, rowbytes, tc, plan);
  if (!plan->ok) return CHARLSTM_OK;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)plan->smem);
  if (e != cudaSuccess) return cuda_fail(e, "setting the persistent kernel's shared memory size");
  int per_sm = 0;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, plan->smem);
  if (e != cudaSuccess) return cuda_fail(e, "querying the persistent kernel's occupancy");
  plan_check_residency(per_sm, d.sms, plan);
  return CHARLSTM_OK;
}

int launch_persistent(const void* kernel, void* params, unsigned* counter, TcKind tc, int path,
                      int T, int B, int H, int gates, size_t elem, size_t rowbytes, bool forced,
                      const char* who, cudaStream_t stream, bool* launched) {
  *launched = false;
  PersistentPlan pl;
  int st = plan_persistent(kernel, T, B, H, gates, elem, rowbytes, tc, &pl);
  if (st != CHARLSTM_OK) return st;
  if (!pl.ok) {
    if (!forced) return CHARLSTM_OK;
    set_error("%s: the %s path cannot run this shape: %s", who, path_name(path), pl.why);
    return CHARLSTM_ERR_PERSISTENT_UNFIT;
  }
  char what[96];
  cudaError_t e = cudaMemsetAsync(counter, 0, sizeof(unsigned), stream);
  if (e != cudaSuccess) {
    std::snprintf(what, sizeof what, "%s: zeroing the barrier counter", who);
    return cuda_fail(e, what);
  }
  PersistentGeometry g = pl.geom;
  void* args[] = {params, &g.units, &g.bb, &g.stage_offset};
  e = cudaLaunchCooperativeKernel(kernel, dim3(pl.blocks), dim3(kThreads), args, pl.smem, stream);
  if (e == cudaSuccess) {
    *launched = true;
    return CHARLSTM_OK;
  }
  if (forced || e != cudaErrorCooperativeLaunchTooLarge) {
    std::snprintf(what, sizeof what, "%s: %s cooperative launch", who, path_name(path));
    return cuda_fail(e, what);
  }
  (void)cudaGetLastError();  // not sticky: the caller tries its next path
  return CHARLSTM_OK;
}

}  // namespace charlstm

// ---------------------------------------------------------------- the C entry points
namespace {

// CHARLSTM_OK, or CHARLSTM_ERR_ARGS with the message set: null arguments, bad sizes, dtype,
// path or cell (check_sizes).
template <class Args>
int check_args(const char* who, const Args* a, int path) {
  charlstm::clear_error();
  if (a == nullptr) {
    charlstm::set_error("%s: null arguments", who);
    return CHARLSTM_ERR_ARGS;
  }
  return charlstm::check_sizes(who, a->T, a->B, a->H, a->dtype, path, a->cell);
}

// False (message set) when a pointer of `ps` is null: "the <cell> cell needs <names>".
bool require(const char* who, int cell, const char* names, std::initializer_list<const void*> ps) {
  for (const void* q : ps) {
    if (q == nullptr) {
      charlstm::set_error("%s: a required pointer is null (the %s cell needs %s)", who,
                          charlstm::cell_name(cell), names);
      return false;
    }
  }
  return true;
}

// f(std::integral_constant<int, cell>()) for a checked cell code: each cell's kernels are a
// translation unit of their own (cell_<name>.cu), which instantiates run_forward/run_backward.
template <class F>
int by_cell(int cell, F&& f) {
  switch (cell) {
    case CHARLSTM_CELL_LSTM: return f(std::integral_constant<int, CHARLSTM_CELL_LSTM>());
    case CHARLSTM_CELL_GRU: return f(std::integral_constant<int, CHARLSTM_CELL_GRU>());
    case CHARLSTM_CELL_RNN_TANH: return f(std::integral_constant<int, CHARLSTM_CELL_RNN_TANH>());
    default: return f(std::integral_constant<int, CHARLSTM_CELL_RNN_RELU>());
  }
}

}  // namespace

extern "C" int charlstm_forward(const charlstm_fwd_args* a, void* stream, int path,
                                int* path_used) {
  using namespace charlstm;
  const char* who = "charlstm_forward";
  const int st = check_args(who, a, path);
  if (st != CHARLSTM_OK) return st;
  if (!require(who, a->cell, "xproj, w_hh, h0, hs, hT, gates, hbuf, counter",
               {a->xproj, a->w_hh, a->h0, a->hs, a->hT, a->gates, a->hbuf, a->counter}) ||
      (cell_has_c(a->cell) && !require(who, a->cell, "c0, cT, cs", {a->c0, a->cT, a->cs})))
    return CHARLSTM_ERR_ARGS;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  return by_cell(a->cell, [&](auto cell) {
    return run_forward<decltype(cell)::value>(a, s, path, path_used);
  });
}

extern "C" int charlstm_backward(const charlstm_bwd_args* a, void* stream, int path,
                                 int* path_used) {
  using namespace charlstm;
  const char* who = "charlstm_backward";
  const int st = check_args(who, a, path);
  if (st != CHARLSTM_OK) return st;
  if (!require(who, a->cell, "dhs, dhT, w_t, gates, dgates, dh0, dzbuf, counter",
               {a->dhs, a->dhT, a->w_t, a->gates, a->dgates, a->dh0, a->dzbuf, a->counter}) ||
      (cell_has_c(a->cell) && !require(who, a->cell, "dcT, c0, cs, dc0, dcbuf",
                                       {a->dcT, a->c0, a->cs, a->dc0, a->dcbuf})) ||
      (a->cell == CHARLSTM_CELL_GRU &&
       !require(who, a->cell, "h0, hs, dcbuf", {a->h0, a->hs, a->dcbuf})))
    return CHARLSTM_ERR_ARGS;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  return by_cell(a->cell, [&](auto cell) {
    return run_backward<decltype(cell)::value>(a, s, path, path_used);
  });
}
