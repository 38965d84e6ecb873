// pybind11 bindings of the charlstm CUDA launchers (csrc/launch.h).
//
// Compiles against any torch (CPU or CUDA build): it uses only torch/extension.h, allocates
// outputs and workspaces with ATen on the inputs' device, and takes the CUDA stream from Python
// as an integer (torch.cuda.current_stream(device).cuda_stream), so no CUDA header is needed.
// It checks every tensor (device, dtype, shape, contiguity) and raises with the launcher's
// message on failure.
#include <torch/extension.h>

#include <c10/core/DeviceGuard.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "launch.h"

namespace {

using at::Tensor;

int dtype_code(at::ScalarType st) {
  switch (st) {
    case at::kFloat: return CHARLSTM_FLOAT32;
    case at::kHalf: return CHARLSTM_FLOAT16;
    case at::kBFloat16: return CHARLSTM_BFLOAT16;
    default:
      TORCH_CHECK(false, "charlstm cuda backend: dtype ", st,
                  " is not supported (expected float32, float16 or bfloat16)");
  }
  return -1;  // unreachable
}

void check_tensor(const Tensor& t, const char* name, const Tensor& like, at::ScalarType st,
                  std::vector<int64_t> shape) {
  TORCH_CHECK(t.device() == like.device(), "charlstm cuda backend: ", name, " is on ", t.device(),
              ", expected ", like.device());
  TORCH_CHECK(t.scalar_type() == st, "charlstm cuda backend: ", name, " has dtype ",
              t.scalar_type(), ", expected ", st);
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "charlstm cuda backend: ", name, " has shape ",
              t.sizes(), ", expected ", at::IntArrayRef(shape));
  TORCH_CHECK(t.is_contiguous(), "charlstm cuda backend: ", name, " must be contiguous");
}

const int* lengths_ptr(const c10::optional<Tensor>& lengths, const Tensor& like, int64_t B) {
  if (!lengths.has_value() || !lengths->defined()) return nullptr;
  check_tensor(*lengths, "lengths", like, at::kInt, {B});
  return lengths->data_ptr<int>();
}

void* stream_ptr(int64_t stream) { return reinterpret_cast<void*>(static_cast<intptr_t>(stream)); }

void check_status(int status, const char* what) {
  TORCH_CHECK(status == CHARLSTM_OK, "charlstm cuda backend: ", what,
              " failed: ", charlstm_last_error());
}

// forward(xproj, w_hh, h0, c0, lengths, stream, path) -> (hs, hT, cT, cs, gates, path_used)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, int64_t> forward(
    const Tensor& xproj, const Tensor& w_hh, const Tensor& h0, const Tensor& c0,
    const c10::optional<Tensor>& lengths, int64_t stream, int64_t path) {
  TORCH_CHECK(xproj.is_cuda(), "charlstm cuda backend: xproj must be a CUDA tensor, got ",
              xproj.device());
  TORCH_CHECK(xproj.dim() == 3 && xproj.size(2) % 4 == 0,
              "charlstm cuda backend: xproj must be [T, B, 4H], got ", xproj.sizes());
  const int64_t T = xproj.size(0), B = xproj.size(1), H = xproj.size(2) / 4;
  const at::ScalarType st = xproj.scalar_type();
  const int code = dtype_code(st);
  check_tensor(xproj, "xproj", xproj, st, {T, B, 4 * H});
  check_tensor(w_hh, "w_hh", xproj, st, {4 * H, H});
  check_tensor(h0, "h0", xproj, st, {B, H});
  check_tensor(c0, "c0", xproj, st, {B, H});
  TORCH_CHECK(T < INT32_MAX && B < INT32_MAX && H < INT32_MAX,
              "charlstm cuda backend: sizes must fit in int32");
  const int* len = lengths_ptr(lengths, xproj, B);
  const c10::DeviceGuard guard(xproj.device());
  const auto facc = xproj.options().dtype(at::kFloat);
  Tensor hs = at::empty({T, B, H}, xproj.options());
  Tensor cs = at::empty({T, B, H}, facc);
  Tensor gates = at::empty({T, B, 4 * H}, facc);
  if (T == 0 || B == 0 || H == 0) {  // nothing to run: the state passes through
    return std::make_tuple(hs, h0.clone(), c0.clone(), cs, gates, int64_t(0));
  }
  Tensor hT = at::empty({B, H}, xproj.options());
  Tensor cT = at::empty({B, H}, xproj.options());
  Tensor hbuf = at::empty({2, B, H}, xproj.options());
  Tensor counter = at::empty({1}, xproj.options().dtype(at::kInt));
  charlstm_fwd_args a;
  a.T = static_cast<int>(T);
  a.B = static_cast<int>(B);
  a.H = static_cast<int>(H);
  a.dtype = code;
  a.xproj = xproj.data_ptr();
  a.w_hh = w_hh.data_ptr();
  a.h0 = h0.data_ptr();
  a.c0 = c0.data_ptr();
  a.lengths = len;
  a.hs = hs.data_ptr();
  a.hT = hT.data_ptr();
  a.cT = cT.data_ptr();
  a.cs = cs.data_ptr<float>();
  a.gates = gates.data_ptr<float>();
  a.hbuf = hbuf.data_ptr();
  a.counter = reinterpret_cast<unsigned int*>(counter.data_ptr<int>());
  int used = 0;
  check_status(charlstm_lstm_forward(&a, stream_ptr(stream), static_cast<int>(path), &used),
               "forward");
  return std::make_tuple(hs, hT, cT, cs, gates, int64_t(used));
}

// backward(dhs, dhT, dcT, w_hh, c0, cs, gates, lengths, stream, path)
//   -> (dgates, dh0, dc0, path_used)
std::tuple<Tensor, Tensor, Tensor, int64_t> backward(const Tensor& dhs, const Tensor& dhT,
                                                     const Tensor& dcT, const Tensor& w_hh,
                                                     const Tensor& c0, const Tensor& cs,
                                                     const Tensor& gates,
                                                     const c10::optional<Tensor>& lengths,
                                                     int64_t stream, int64_t path) {
  TORCH_CHECK(dhs.is_cuda(), "charlstm cuda backend: dhs must be a CUDA tensor, got ",
              dhs.device());
  TORCH_CHECK(dhs.dim() == 3, "charlstm cuda backend: dhs must be [T, B, H], got ", dhs.sizes());
  const int64_t T = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  const at::ScalarType st = w_hh.scalar_type();
  const int code = dtype_code(st);
  check_tensor(dhs, "dhs", dhs, st, {T, B, H});
  check_tensor(dhT, "dhT", dhs, st, {B, H});
  check_tensor(dcT, "dcT", dhs, st, {B, H});
  check_tensor(w_hh, "w_hh", dhs, st, {4 * H, H});
  check_tensor(c0, "c0", dhs, st, {B, H});
  check_tensor(cs, "cs", dhs, at::kFloat, {T, B, H});
  check_tensor(gates, "gates", dhs, at::kFloat, {T, B, 4 * H});
  TORCH_CHECK(T < INT32_MAX && B < INT32_MAX && H < INT32_MAX,
              "charlstm cuda backend: sizes must fit in int32");
  const int* len = lengths_ptr(lengths, dhs, B);
  const c10::DeviceGuard guard(dhs.device());
  Tensor dgates = at::empty({T, B, 4 * H}, dhs.options());
  if (T == 0 || B == 0 || H == 0) {
    return std::make_tuple(dgates, dhT.clone(), dcT.clone(), int64_t(0));
  }
  Tensor dh0 = at::empty({B, H}, dhs.options());
  Tensor dc0 = at::empty({B, H}, dhs.options());
  Tensor w_t = w_hh.t().contiguous();  // [H, 4H]: column ownership reads contiguous rows
  const auto facc = dhs.options().dtype(at::kFloat);
  Tensor dzbuf = at::empty({2, B, 4 * H}, facc);
  Tensor dcbuf = at::empty({B, H}, facc);
  Tensor counter = at::empty({1}, dhs.options().dtype(at::kInt));
  charlstm_bwd_args a;
  a.T = static_cast<int>(T);
  a.B = static_cast<int>(B);
  a.H = static_cast<int>(H);
  a.dtype = code;
  a.dhs = dhs.data_ptr();
  a.dhT = dhT.data_ptr();
  a.dcT = dcT.data_ptr();
  a.w_t = w_t.data_ptr();
  a.c0 = c0.data_ptr();
  a.cs = cs.data_ptr<float>();
  a.gates = gates.data_ptr<float>();
  a.lengths = len;
  a.dgates = dgates.data_ptr();
  a.dh0 = dh0.data_ptr();
  a.dc0 = dc0.data_ptr();
  a.dzbuf = dzbuf.data_ptr<float>();
  a.dcbuf = dcbuf.data_ptr<float>();
  a.counter = reinterpret_cast<unsigned int*>(counter.data_ptr<int>());
  int used = 0;
  check_status(charlstm_lstm_backward(&a, stream_ptr(stream), static_cast<int>(path), &used),
               "backward");
  return std::make_tuple(dgates, dh0, dc0, int64_t(used));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "charlstm CUDA LSTM recurrent-core kernels (see csrc/launch.h)";
  m.def("forward", &forward, "recurrent core forward (see charlstm/backends/contract.py)",
        py::arg("xproj"), py::arg("w_hh"), py::arg("h0"), py::arg("c0"), py::arg("lengths"),
        py::arg("stream"), py::arg("path"));
  m.def("backward", &backward, "recurrent core backward (see charlstm/backends/contract.py)",
        py::arg("dhs"), py::arg("dhT"), py::arg("dcT"), py::arg("w_hh"), py::arg("c0"),
        py::arg("cs"), py::arg("gates"), py::arg("lengths"), py::arg("stream"), py::arg("path"));
}
