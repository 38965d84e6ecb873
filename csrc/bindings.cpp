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
#include "launch_plan.h"

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

// The cell's shape (launch_plan.h) for a checked cell code.
struct CellShape {
  int gates, saved;
  bool has_c;
};
CellShape cell_shape(int64_t cell) {
  const int code = static_cast<int>(cell);
  TORCH_CHECK(cell >= 0 && cell <= 3 && charlstm::cell_gates(code) > 0,
              "charlstm cuda backend: unknown cell code ", cell,
              " (expected 0 lstm, 1 gru, 2 rnn_tanh, 3 rnn_relu)");
  return {charlstm::cell_gates(code), charlstm::cell_saved(code), charlstm::cell_has_c(code)};
}

// A tensor the cell needs (checked like the others), or nullptr when the cell has none.
const void* optional_ptr(const c10::optional<Tensor>& t, const char* name, bool needed,
                         const Tensor& like, at::ScalarType st, std::vector<int64_t> shape,
                         const char* cell) {
  if (!needed) return nullptr;
  TORCH_CHECK(t.has_value() && t->defined(), "charlstm cuda backend: the ", cell, " cell needs ",
              name);
  check_tensor(*t, name, like, st, shape);
  return t->data_ptr();
}

// forward(xproj, w_hh, h0, c0, lengths, b_hn, cell, stream, path)
//   -> (hs, hT, cT, cs, gates, path_used); cT, cs are empty ([0]) for cells without c.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, int64_t> forward(
    const Tensor& xproj, const Tensor& w_hh, const Tensor& h0, const c10::optional<Tensor>& c0,
    const c10::optional<Tensor>& lengths, const c10::optional<Tensor>& b_hn, int64_t cell,
    int64_t stream, int64_t path) {
  const CellShape shape = cell_shape(cell);
  const char* name = charlstm::cell_name(static_cast<int>(cell));
  const int64_t G = shape.gates, S = shape.saved;
  TORCH_CHECK(xproj.is_cuda(), "charlstm cuda backend: xproj must be a CUDA tensor, got ",
              xproj.device());
  TORCH_CHECK(xproj.dim() == 3 && xproj.size(2) % G == 0,
              "charlstm cuda backend: xproj must be [T, B, ", G, "*H] for the ", name,
              " cell, got ", xproj.sizes());
  const int64_t T = xproj.size(0), B = xproj.size(1), H = xproj.size(2) / G;
  const at::ScalarType st = xproj.scalar_type();
  const int code = dtype_code(st);
  check_tensor(xproj, "xproj", xproj, st, {T, B, G * H});
  check_tensor(w_hh, "w_hh", xproj, st, {G * H, H});
  check_tensor(h0, "h0", xproj, st, {B, H});
  const void* c0p = optional_ptr(c0, "c0", shape.has_c, xproj, st, {B, H}, name);
  const bool gru = cell == CHARLSTM_CELL_GRU;
  const bool bias = gru && b_hn.has_value() && b_hn->defined();  // GRU: None means zero
  const void* bp = optional_ptr(b_hn, "b_hn", bias, xproj, st, {H}, name);
  TORCH_CHECK(T < INT32_MAX && B < INT32_MAX && H < INT32_MAX,
              "charlstm cuda backend: sizes must fit in int32");
  const int* len = lengths_ptr(lengths, xproj, B);
  const c10::DeviceGuard guard(xproj.device());
  const auto facc = xproj.options().dtype(at::kFloat);
  Tensor hs = at::empty({T, B, H}, xproj.options());
  Tensor cs = shape.has_c ? at::empty({T, B, H}, facc) : at::empty({0}, facc);
  Tensor gates = at::empty({T, B, S * H}, facc);
  Tensor cT = shape.has_c ? at::empty({B, H}, xproj.options()) : at::empty({0}, xproj.options());
  if (T == 0 || B == 0 || H == 0) {  // nothing to run: the state passes through
    return std::make_tuple(hs, h0.clone(), shape.has_c ? c0->clone() : cT, cs, gates, int64_t(0));
  }
  Tensor hT = at::empty({B, H}, xproj.options());
  Tensor hbuf = at::empty({2, B, H}, xproj.options());
  Tensor counter = at::empty({1}, xproj.options().dtype(at::kInt));
  charlstm_fwd_args a;
  a.T = static_cast<int>(T);
  a.B = static_cast<int>(B);
  a.H = static_cast<int>(H);
  a.dtype = code;
  a.cell = static_cast<int>(cell);
  a.xproj = xproj.data_ptr();
  a.w_hh = w_hh.data_ptr();
  a.h0 = h0.data_ptr();
  a.c0 = c0p;
  a.b_hn = bp;
  a.lengths = len;
  a.hs = hs.data_ptr();
  a.hT = hT.data_ptr();
  a.cT = shape.has_c ? cT.data_ptr() : nullptr;
  a.cs = shape.has_c ? cs.data_ptr<float>() : nullptr;
  a.gates = gates.data_ptr<float>();
  a.hbuf = hbuf.data_ptr();
  a.counter = reinterpret_cast<unsigned int*>(counter.data_ptr<int>());
  int used = 0;
  check_status(charlstm_forward(&a, stream_ptr(stream), static_cast<int>(path), &used), "forward");
  return std::make_tuple(hs, hT, cT, cs, gates, int64_t(used));
}

// backward(dhs, dhT, dcT, w_hh, h0, c0, hs, cs, gates, lengths, cell, stream, path)
//   -> (dgates, dh0, dc0, path_used); dcT, c0 are None and cs, dc0 empty for cells without c.
std::tuple<Tensor, Tensor, Tensor, int64_t> backward(
    const Tensor& dhs, const Tensor& dhT, const c10::optional<Tensor>& dcT, const Tensor& w_hh,
    const Tensor& h0, const c10::optional<Tensor>& c0, const Tensor& hs, const Tensor& cs,
    const Tensor& gates, const c10::optional<Tensor>& lengths, int64_t cell, int64_t stream,
    int64_t path) {
  const CellShape shape = cell_shape(cell);
  const char* name = charlstm::cell_name(static_cast<int>(cell));
  const int64_t G = shape.gates, S = shape.saved;
  TORCH_CHECK(dhs.is_cuda(), "charlstm cuda backend: dhs must be a CUDA tensor, got ",
              dhs.device());
  TORCH_CHECK(dhs.dim() == 3, "charlstm cuda backend: dhs must be [T, B, H], got ", dhs.sizes());
  const int64_t T = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  const at::ScalarType st = w_hh.scalar_type();
  const int code = dtype_code(st);
  check_tensor(dhs, "dhs", dhs, st, {T, B, H});
  check_tensor(dhT, "dhT", dhs, st, {B, H});
  check_tensor(w_hh, "w_hh", dhs, st, {G * H, H});
  check_tensor(h0, "h0", dhs, st, {B, H});
  check_tensor(hs, "hs", dhs, st, {T, B, H});
  check_tensor(gates, "gates", dhs, at::kFloat, {T, B, S * H});
  const void* dcTp = optional_ptr(dcT, "dcT", shape.has_c, dhs, st, {B, H}, name);
  const void* c0p = optional_ptr(c0, "c0", shape.has_c, dhs, st, {B, H}, name);
  if (shape.has_c) check_tensor(cs, "cs", dhs, at::kFloat, {T, B, H});
  TORCH_CHECK(T < INT32_MAX && B < INT32_MAX && H < INT32_MAX,
              "charlstm cuda backend: sizes must fit in int32");
  const int* len = lengths_ptr(lengths, dhs, B);
  const c10::DeviceGuard guard(dhs.device());
  Tensor dgates = at::empty({T, B, G * H}, dhs.options());
  Tensor dc0 = shape.has_c ? at::empty({B, H}, dhs.options()) : at::empty({0}, dhs.options());
  if (T == 0 || B == 0 || H == 0) {
    return std::make_tuple(dgates, dhT.clone(), shape.has_c ? dcT->clone() : dc0, int64_t(0));
  }
  Tensor dh0 = at::empty({B, H}, dhs.options());
  Tensor w_t = w_hh.t().contiguous();  // [H, G*H]: column ownership reads contiguous rows
  const auto facc = dhs.options().dtype(at::kFloat);
  Tensor dzbuf = at::empty({2, B, G * H}, facc);
  const bool carry = cell == CHARLSTM_CELL_LSTM || cell == CHARLSTM_CELL_GRU;
  Tensor dcbuf = at::empty({carry ? B : 0, H}, facc);
  Tensor counter = at::empty({1}, dhs.options().dtype(at::kInt));
  charlstm_bwd_args a;
  a.T = static_cast<int>(T);
  a.B = static_cast<int>(B);
  a.H = static_cast<int>(H);
  a.dtype = code;
  a.cell = static_cast<int>(cell);
  a.dhs = dhs.data_ptr();
  a.dhT = dhT.data_ptr();
  a.dcT = dcTp;
  a.w_t = w_t.data_ptr();
  a.h0 = h0.data_ptr();
  a.c0 = c0p;
  a.hs = hs.data_ptr();
  a.cs = shape.has_c ? cs.data_ptr<float>() : nullptr;
  a.gates = gates.data_ptr<float>();
  a.lengths = len;
  a.dgates = dgates.data_ptr();
  a.dh0 = dh0.data_ptr();
  a.dc0 = shape.has_c ? dc0.data_ptr() : nullptr;
  a.dzbuf = dzbuf.data_ptr<float>();
  a.dcbuf = carry ? dcbuf.data_ptr<float>() : nullptr;
  a.counter = reinterpret_cast<unsigned int*>(counter.data_ptr<int>());
  int used = 0;
  check_status(charlstm_backward(&a, stream_ptr(stream), static_cast<int>(path), &used),
               "backward");
  return std::make_tuple(dgates, dh0, dc0, int64_t(used));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "charlstm CUDA recurrent-core kernels, every cell (see csrc/launch.h)";
  m.def("forward", &forward, "recurrent core forward (see charlstm/backends/contract.py)",
        py::arg("xproj"), py::arg("w_hh"), py::arg("h0"), py::arg("c0"), py::arg("lengths"),
        py::arg("b_hn"), py::arg("cell"), py::arg("stream"), py::arg("path"));
  m.def("backward", &backward, "recurrent core backward (see charlstm/backends/contract.py)",
        py::arg("dhs"), py::arg("dhT"), py::arg("dcT"), py::arg("w_hh"), py::arg("h0"),
        py::arg("c0"), py::arg("hs"), py::arg("cs"), py::arg("gates"), py::arg("lengths"),
        py::arg("cell"), py::arg("stream"), py::arg("path"));
}
