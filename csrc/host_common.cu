// Host-side helpers shared by the launchers (see host_common.cuh).
// Status: compiled, not yet verified on a GPU.
#include "host_common.cuh"

#include <cstdarg>
#include <cstdio>

#include "lstm_device.cuh"

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

int check_sizes(const char* who, int T, int B, int H, int dtype, int path) {
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
    set_error("%s: unknown path code %d (expected 0 auto, 1 persistent, 2 stepwise, "
              "3 persistent_tc)", who, path);
    return CHARLSTM_ERR_ARGS;
  }
  if ((long long)H * 4 * H > 0x7fffffffLL) {
    set_error("%s: hidden size %d too large (4*H*H must fit in int32)", who, H);
    return CHARLSTM_ERR_ARGS;
  }
  return CHARLSTM_OK;
}

int plan_persistent(const void* kernel, int T, int B, int H, size_t elem, size_t rowbytes,
                    TcKind tc, PersistentPlan* plan) {
  plan->ok = false;
  plan->why[0] = '\0';
  int dev = 0, sms = 0, smem_optin = 0, coop = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev);
  if (e != cudaSuccess) return cuda_fail(e, "querying the device");
  if (!coop) {
    std::snprintf(plan->why, sizeof(plan->why), "device %d does not support cooperative launches",
                  dev);
    return CHARLSTM_OK;
  }
  const int units = (H + sms - 1) / sms;  // fewest units per block that cover H with <= sms blocks
  const int blocks = (H + units - 1) / units;
  const size_t wbytes = ((size_t)4 * units * H * elem + 15) & ~(size_t)15;
  if (tc != kTcNone) {  // fixed layout: padded weight tile, 16 staged rows, K-split partial sums
    const size_t need = (tc == kTcForward ? tc_layout(H, units, elem)
                                          : tc_bwd_layout(H, units, elem)).total();
    if (need > (size_t)smem_optin) {
      std::snprintf(plan->why, sizeof(plan->why),
                    "the tensor-core layout needs %zu bytes of shared memory per block (%d units "
                    "of H=%d on %d SMs), more than the %d available",
                    need, units, H, sms, smem_optin);
      return CHARLSTM_OK;
    }
    rowbytes = need - wbytes;  // so that wbytes + bb * rowbytes == need with bb = 1 below
    B = 1;
  }
  if (wbytes + rowbytes > (size_t)smem_optin) {
    std::snprintf(plan->why, sizeof(plan->why),
                  "the W_hh slice of %zu bytes per block (%d units of H=%d on %d SMs) plus one "
                  "staged row of %zu bytes exceeds the %d bytes of shared memory per block",
                  wbytes, units, H, sms, rowbytes, smem_optin);
    return CHARLSTM_OK;
  }
  size_t bb = ((size_t)smem_optin - wbytes) / rowbytes;
  if (bb > (size_t)B) bb = (size_t)B;
  if (bb > 64) bb = 64;
  const size_t smem = wbytes + bb * rowbytes;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return cuda_fail(e, "setting the persistent kernel's shared memory size");
  int per_sm = 0;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  if (e != cudaSuccess) return cuda_fail(e, "querying the persistent kernel's occupancy");
  if ((long long)per_sm * sms < blocks) {
    std::snprintf(plan->why, sizeof(plan->why),
                  "%d blocks needed but only %d x %d can be resident at once", blocks, per_sm,
                  sms);
    return CHARLSTM_OK;
  }
  if ((unsigned long long)blocks * (unsigned long long)(T + 1) >= 0x80000000ULL) {
    std::snprintf(plan->why, sizeof(plan->why),
                  "%d blocks x %d steps overflows the barrier counter", blocks, T);
    return CHARLSTM_OK;
  }
  plan->ok = true;
  plan->units = units;
  plan->blocks = blocks;
  plan->bb = (int)bb;
  plan->stage_offset = (unsigned)wbytes;
  plan->smem = smem;
  return CHARLSTM_OK;
}

int plan_stepwise(int B, int H, size_t rowbytes, StepPlan* plan) {
  const int units = 8;
  const int rows = B < 16 ? B : 16;
  const size_t budget = 48 * 1024;  // default dynamic shared memory limit, no opt-in needed
  int stage_rows = 0;
  if ((size_t)rows * rowbytes <= budget) {
    stage_rows = rows;
  } else if (rowbytes <= budget) {
    stage_rows = (int)(budget / rowbytes);
  }
  const long long gy = ((long long)B + rows - 1) / rows;
  if (gy > 65535) {
    set_error("stepwise path: batch %d too large (at most %d rows)", B, 65535 * 16);
    return CHARLSTM_ERR_ARGS;
  }
  plan->units = units;
  plan->rows = rows;
  plan->stage_rows = stage_rows;
  plan->smem = (size_t)stage_rows * rowbytes;
  plan->grid = dim3((unsigned)((H + units - 1) / units), (unsigned)gy, 1);
  return CHARLSTM_OK;
}

}  // namespace charlstm
