"""The ``cuda`` backend (persistent CUDA C++ kernels, ``csrc/``).

CPU tests (run everywhere): the backend says clearly why it cannot run on a machine without
CUDA, importing it compiles nothing, the C launch header and the Python/bindings side agree on
codes and fields, the build flags and the path selection behave as documented.

GPU tests (``@pytest.mark.cuda``, skipped here): both implementation paths (persistent and
stepwise) against the reference backend (the contract's specification) and against cuDNN
through ``charlstm.LSTM``, in float32/float16/bfloat16, odd hidden sizes, B=1, T=1, long T,
packed input, multi-layer, bidirectional; every gradient; ``torch.library.opcheck``;
determinism; CUDA-graph capture of the stepwise path.  The compile checks themselves are
``scripts/check_cuda_compile.sh``.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

import charlstm
from charlstm import backends
from charlstm.backends import cuda as cuda_backend
from charlstm.backends.cuda import abi, availability, build, build_flags, paths

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
HAS_CUDA = torch.cuda.is_available()
CAN_RUN = availability.global_reason() is None


# =============================================================== CPU: availability and import
@pytest.mark.skipif(CAN_RUN, reason="the cuda backend can run here")
def test_reports_unavailable_with_reason_here():
    why = backends.unavailable_reason("cuda")
    assert why and why == availability.global_reason()
    if torch.version.cuda is None:
        assert "built without CUDA" in why and torch.__version__ in why
    elif not HAS_CUDA:
        assert "no CUDA device" in why
    assert backends.status("cuda") == f"unavailable: {why}"


@pytest.mark.skipif(CAN_RUN, reason="the cuda backend can run here")
def test_lstm_with_cuda_backend_raises_backend_unavailable_with_the_reason():
    why = backends.unavailable_reason("cuda")
    m = charlstm.LSTM(3, 4, backend="cuda")
    with pytest.raises(charlstm.BackendUnavailable, match=re.escape(f"'cuda' is unavailable: {why}")):
        m(torch.randn(2, 1, 3))
    with charlstm.use_backend("cuda"), pytest.raises(charlstm.BackendUnavailable, match=re.escape(why)):
        charlstm.LSTM(3, 4)(torch.randn(2, 1, 3))


@pytest.mark.skipif(CAN_RUN, reason="the cuda backend can run here")
def test_core_attribute_raises_backend_unavailable_and_nothing_was_built():
    with pytest.raises(charlstm.BackendUnavailable, match=re.escape(availability.global_reason())):
        cuda_backend.core  # noqa: B018
    assert build._ext is None                    # importing/asking never loads or compiles
    assert cuda_backend.STATUS == "compiled, not yet verified on a GPU"


def test_reasons_for_device_and_dtype(monkeypatch):
    """With the machine-level checks passing, a CPU tensor and float64 still get a reason."""
    monkeypatch.setattr(availability, "global_reason", lambda: None)
    assert "CUDA devices only" in availability.unavailable_reason(torch.device("cpu"), None)
    why = availability.unavailable_reason(None, torch.float64)
    assert "float64" in why and "not supported" in why
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        assert availability.unavailable_reason(None, dt) is None


def test_missing_nvcc_is_a_clear_reason(monkeypatch):
    monkeypatch.setattr(build, "nvcc_path", lambda: None)
    monkeypatch.setattr(build, "prebuilt_available", lambda: False)
    assert "nvcc was not found" in build.build_reason()
    with pytest.raises(RuntimeError, match="cannot build the CUDA extension: nvcc was not found"):
        build._jit_build(verbose=False)


def test_jit_sources_are_the_csrc_files():
    srcs = [Path(s).name for s in build.sources()]
    assert build.csrc_dir() == CSRC
    assert {"bindings.cpp", "launcher.cu", "lstm_forward.cu", "lstm_backward.cu"} <= set(srcs)
    assert srcs == sorted(p.name for p in CSRC.glob("*.cu")) + sorted(p.name for p in CSRC.glob("*.cpp"))


# =============================================================== CPU: launch.h <-> Python/bindings
def _c_enum(text: str, name: str) -> dict:
    body = re.search(r"enum\s+" + name + r"\s*\{([^}]*)\}", text).group(1)
    return {k: int(v) for k, v in re.findall(r"(CHARLSTM_\w+)\s*=\s*(\d+)", body)}


def _c_struct_fields(text: str, name: str) -> list:
    body = re.search(r"typedef struct " + name + r"\s*\{(.*?)\}\s*" + name + ";", text, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    fields = []
    for decl in body.split(";"):
        decl = decl.strip()
        if decl:
            head, *rest = decl.split(",")
            fields.append(re.findall(r"(\w+)\s*$", head)[0])
            fields += [r.strip() for r in rest]
    return fields


def test_launch_header_codes_match_python():
    h = (CSRC / "launch.h").read_text()
    dtypes = _c_enum(h, "charlstm_dtype")
    assert dtypes == {"CHARLSTM_FLOAT32": abi.DTYPE_CODES[torch.float32],
                      "CHARLSTM_FLOAT16": abi.DTYPE_CODES[torch.float16],
                      "CHARLSTM_BFLOAT16": abi.DTYPE_CODES[torch.bfloat16]}
    paths_c = _c_enum(h, "charlstm_path")
    assert {k.replace("CHARLSTM_PATH_", "").lower(): v for k, v in paths_c.items()} == abi.PATH_CODES
    assert set(paths.PATHS) == set(abi.PATH_CODES)


@pytest.mark.parametrize("struct", ["charlstm_fwd_args", "charlstm_bwd_args"])
def test_bindings_fill_every_launcher_field(struct):
    fields = _c_struct_fields((CSRC / "launch.h").read_text(), struct)
    assert len(fields) > 10 and fields[:4] == ["T", "B", "H", "dtype"]
    bindings = (CSRC / "bindings.cpp").read_text()
    fn = "forward(" if struct == "charlstm_fwd_args" else "backward("
    body = bindings[bindings.index(f"{struct} a;"):]
    body = body[:body.index("check_status")]
    missing = [f for f in fields if not re.search(rf"\ba\.{f}\s*=", body)]
    assert not missing, f"bindings.cpp {fn}...) leaves {missing} unset"


# =============================================================== CPU: build flags
def test_build_flags_default_archs(monkeypatch):
    kw = build_flags.extension_kwargs(environ={})
    nvcc = kw["extra_compile_args"]["nvcc"]
    for cc in ("80", "86", "89", "90"):
        assert f"-gencode=arch=compute_{cc},code=sm_{cc}" in nvcc
    assert "--use_fast_math" not in nvcc and "cxx" in kw["extra_compile_args"]
    one = build_flags.extension_kwargs(environ={}, archs=["9.0", "9.0"])["extra_compile_args"]["nvcc"]
    assert [f for f in one if "arch" in f] == ["-gencode=arch=compute_90,code=sm_90"]


def test_build_flags_honour_torch_cuda_arch_list():
    nvcc = build_flags.extension_kwargs(environ={"TORCH_CUDA_ARCH_LIST": "9.0"})["extra_compile_args"]["nvcc"]
    assert not [f for f in nvcc if "arch" in f]      # torch adds the flags from the variable
    assert build_flags.gencode_flags(["8.0+PTX"]) == ["-gencode=arch=compute_80,code=sm_80",
                                                      "-gencode=arch=compute_80,code=compute_80"]
    with pytest.raises(ValueError, match="Hopper"):
        build_flags.gencode_flags(["Hopper"])


def test_build_flags_load_by_path_like_setup_py():
    spec = importlib.util.spec_from_file_location(
        "_charlstm_build_flags_test", ROOT / "charlstm" / "backends" / "cuda" / "build_flags.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.extension_kwargs(environ={}) == build_flags.extension_kwargs(environ={})


# =============================================================== CPU: path selection
def test_path_selection_precedence(monkeypatch):
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    paths.set_path(None)
    try:
        assert paths.current_path() == "auto"
        monkeypatch.setenv(paths.ENV_VAR, "Stepwise")
        assert paths.current_path() == "stepwise"
        paths.set_path("persistent")
        assert paths.current_path() == "persistent"
        with paths.use_path("stepwise"):
            assert cuda_backend.current_path() == "stepwise"
        assert paths.current_path() == "persistent"
        paths.set_path(None)
        monkeypatch.setenv(paths.ENV_VAR, "fastest")
        with pytest.raises(ValueError, match=r"CHARLSTM_CUDA_PATH='fastest'.*auto, persistent, stepwise, persistent_tc"):
            paths.current_path()
        with pytest.raises(ValueError, match="unknown cuda backend path 'x'"):
            paths.set_path("x")
    finally:
        paths.set_path(None)


def test_last_path_records_per_direction():
    paths.record("forward", "persistent")
    paths.record("backward", "stepwise")
    assert cuda_backend.last_path() == {"forward": "persistent", "backward": "stepwise"}


# =============================================================== GPU tests
PATHS = ["persistent", "stepwise"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DT_IDS = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
#: (atol, rtol) kernel vs reference on identical inputs; float32: summation order only;
#: half: an h that lands on the other side of a rounding boundary moves by one ulp of D.
CORE_TOL = {torch.float32: (2e-5, 1e-4), torch.float16: (4e-3, 4e-3), torch.bfloat16: (3e-2, 3e-2)}

# (T, B, H, packed)
SHAPES = [(1, 1, 20, False), (6, 3, 100, False), (4, 1, 768, False), (9, 5, 20, True),
          (5, 9, 3, True), (40, 2, 100, False)]


def _shape_id(s):
    return f"T{s[0]}-B{s[1]}-H{s[2]}" + ("-packed" if s[3] else "")


@pytest.fixture
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _require_cuda(dtype=torch.float32):
    why = backends.unavailable_reason("cuda", torch.device("cuda"), dtype)
    if why:
        pytest.fail(f"a GPU is here but the cuda backend is unavailable: {why}")
    return cuda_backend.core


def _inputs(T, B, H, dtype, packed, scale=0.5):
    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(1234 + T * 31 + B * 7 + H)

    def r(*shape):
        return (torch.randn(*shape, generator=g) * scale).to(dev, dtype)
    xproj, w = r(T, B, 4 * H), r(4 * H, H) / max(1.0, H ** 0.5) * 2
    h0, c0 = r(B, H), r(B, H)
    lengths = None
    if packed:
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T
        lengths = lens.to(dev, torch.int32)
    return xproj, w, h0, c0, lengths


def _close(got, want, dtype, label):
    atol, rtol = CORE_TOL[dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol, msg=lambda m: f"{label}: {m}")


@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS.get)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_core_forward_matches_reference(path, dtype, shape, no_tf32):
    core = _require_cuda(dtype)
    from charlstm.backends import reference
    args = _inputs(*shape[:3], dtype, shape[3])
    with cuda_backend.use_path(path):
        got = core.fwd_op(*args)
    assert cuda_backend.last_path()["forward"] == path
    want = reference.forward(*args)
    for name, a, b in zip(("hs", "hT", "cT", "cs", "gates"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        _close(a, b, dtype, f"{path} {name}")
    if args[4] is not None:   # inactive rows: hs exactly 0
        T = shape[0]
        inactive = torch.arange(T, device="cuda").unsqueeze(1) >= args[4].long().unsqueeze(0)
        assert (got[0][inactive] == 0).all()


def _grads(core_fn, args, seeds):
    xproj, w, h0, c0, lengths = [a.clone().requires_grad_(a.is_floating_point()) if a is not None else None
                                 for a in args]
    hs, hT, cT = core_fn(xproj, w, h0, c0, lengths)
    dhs, dhT, dcT = seeds
    torch.autograd.backward((hs, hT, cT), (dhs, dhT, dcT))
    return [hs, hT, cT, xproj.grad, w.grad, h0.grad, c0.grad]


@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS.get)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_core_gradients_match_reference(path, dtype, shape, no_tf32):
    core = _require_cuda(dtype)
    from charlstm.backends import reference
    T, B, H, packed = shape
    args = _inputs(T, B, H, dtype, packed)
    seeds = (torch.randn(T, B, H, device="cuda").to(dtype), torch.randn(B, H, device="cuda").to(dtype),
             torch.randn(B, H, device="cuda").to(dtype))
    with cuda_backend.use_path(path):
        got = _grads(core, args, seeds)
    assert cuda_backend.last_path() == {"forward": path, "backward": path}
    want = _grads(reference.core, args, seeds)
    # The gradient of a whole sequence sums T steps: scale the tolerance with it for half types.
    scale = 1.0 if dtype == torch.float32 else max(1.0, T ** 0.5)
    atol, rtol = CORE_TOL[dtype]
    for name, a, b in zip(("hs", "hT", "cT", "dxproj", "dw_hh", "dh0", "dc0"), got, want):
        torch.testing.assert_close(a.float(), b.float(), atol=atol * scale * 4, rtol=rtol * scale * 4,
                                   msg=lambda m: f"{path} {name}: {m}")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES + [(3, 40, 768, True)], ids=_shape_id)
def test_tensor_core_forward_and_gradients_match_reference(dtype, shape, no_tf32):
    """persistent_tc: WMMA forward and backward (float32 accumulation; the backward's matmul
    takes the gate gradients rounded to the input dtype)."""
    core = _require_cuda(dtype)
    from charlstm.backends import reference
    T, B, H, packed = shape
    args = _inputs(T, B, H, dtype, packed)
    with cuda_backend.use_path("persistent_tc"):
        got = core.fwd_op(*args)
    assert cuda_backend.last_path()["forward"] == "persistent_tc"
    for name, a, b in zip(("hs", "hT", "cT", "cs", "gates"), got, reference.forward(*args)):
        _close(a, b, dtype, f"persistent_tc {name}")
    seeds = (torch.randn(T, B, H, device="cuda").to(dtype), torch.randn(B, H, device="cuda").to(dtype),
             torch.randn(B, H, device="cuda").to(dtype))
    with cuda_backend.use_path("persistent_tc"):
        mine = _grads(core, args, seeds)
    assert cuda_backend.last_path() == {"forward": "persistent_tc", "backward": "persistent_tc"}
    want = _grads(reference.core, args, seeds)
    scale = max(1.0, T ** 0.5) * 4
    atol, rtol = CORE_TOL[dtype]
    for name, a, b in zip(("hs", "hT", "cT", "dxproj", "dw_hh", "dh0", "dc0"), mine, want):
        torch.testing.assert_close(a.float(), b.float(), atol=atol * scale, rtol=rtol * scale,
                                   msg=lambda m: f"persistent_tc {name}: {m}")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,batch,want", [
    (torch.bfloat16, 16, "persistent_tc"), (torch.float16, 8, "persistent_tc"),
    (torch.bfloat16, 7, "persistent"), (torch.float32, 16, "persistent")],
    ids=["bf16-B16", "f16-B8", "bf16-B7", "f32-B16"])
def test_auto_uses_tensor_cores_for_half_types_from_batch_8(dtype, batch, want, no_tf32):
    """auto's rule (CHARLSTM_TC_MIN_BATCH = 8 in csrc/launch.h), the same in both directions,
    and that the paths it picks are correct."""
    core = _require_cuda(dtype)
    from charlstm.backends import reference
    args = _inputs(5, batch, 96, dtype, True)
    with cuda_backend.use_path("auto"):
        got = core.fwd_op(*args)
    assert cuda_backend.last_path()["forward"] == want
    for name, a, b in zip(("hs", "hT", "cT", "cs", "gates"), got, reference.forward(*args)):
        _close(a, b, dtype, f"auto ({want}) {name}")
    seeds = [torch.randn(5, batch, 96, device="cuda").to(dtype) for _ in range(1)] + \
        [torch.randn(batch, 96, device="cuda").to(dtype) for _ in range(2)]
    with cuda_backend.use_path("auto"):
        mine = _grads(core, args, seeds)
    assert cuda_backend.last_path() == {"forward": want, "backward": want}
    want_grads = _grads(reference.core, args, seeds)
    atol, rtol = CORE_TOL[dtype]
    for name, a, b in zip(("hs", "hT", "cT", "dxproj", "dw_hh", "dh0", "dc0"), mine, want_grads):
        torch.testing.assert_close(a.float(), b.float(), atol=atol * 9, rtol=rtol * 9,
                                   msg=lambda m: f"auto ({want}) {name}: {m}")


@pytest.mark.cuda
def test_tensor_core_path_runs_fma_for_float32():
    core = _require_cuda()
    args = _inputs(3, 2, 20, torch.float32, False)
    with cuda_backend.use_path("persistent_tc"):
        core.fwd_op(*args)
    assert cuda_backend.last_path()["forward"] == "persistent"


@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS)
def test_deterministic(path):
    core = _require_cuda()
    args = _inputs(12, 6, 100, torch.float32, True)
    seeds = [torch.randn(12, 6, 100, device="cuda"), torch.randn(6, 100, device="cuda"),
             torch.randn(6, 100, device="cuda")]
    with cuda_backend.use_path(path):
        a = _grads(core, args, seeds)
        b = _grads(core, args, seeds)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS)
def test_paths_agree(path):
    """Both paths run the same per-(row, unit) summation order: they agree to float32 rounding."""
    core = _require_cuda()
    args = _inputs(10, 7, 100, torch.float32, True)
    with cuda_backend.use_path("persistent"):
        a = core.fwd_op(*args)
    with cuda_backend.use_path(path):
        b = core.fwd_op(*args)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "packed"])
def test_opcheck(path, lengths):
    core = _require_cuda()
    args = _inputs(5, 3, 20, torch.float32, lengths)
    with cuda_backend.use_path(path):
        torch.library.opcheck(core.fwd_op, args)
        hs, hT, cT, cs, gates = core.fwd_op(*args)
        bargs = (torch.randn_like(hs), torch.randn_like(hT), torch.randn_like(cT), args[1], args[3],
                 cs, gates, args[4])
        torch.library.opcheck(core.bwd_op, bargs)


@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS + ["persistent_tc"])
def test_long_sequence_bf16_is_stable(path):
    """T=2048 in bfloat16 through charlstm.LSTM: everything finite, and the error against a
    float64 run of the same (rounded) data at most 2x cuDNN's bfloat16 error plus a few ulps."""
    _require_cuda(torch.bfloat16)
    from lstm_cases import Case, build as build_module, cast_data, make_data, rel_errors, run_one
    case = Case(input_size=8, hidden_size=128, B=4, T=2048)
    dev = torch.device("cuda")
    data = make_data(case, torch.bfloat16, dev)
    exact = run_one(build_module(case, None, torch.float64, "cpu"), case, cast_data(data, torch.float64, "cpu"))
    cudnn = rel_errors(run_one(build_module(case, None, torch.bfloat16, dev), case, data), exact)
    with cuda_backend.use_path(path):
        got = run_one(build_module(case, "cuda", torch.bfloat16, dev), case, data)
    assert all(torch.isfinite(v).all() for v in got.values())
    mine = rel_errors(got, exact)
    eps = torch.finfo(torch.bfloat16).eps
    for k in exact:
        assert mine[k] <= 2 * cudnn[k] + 4 * eps, (k, mine[k], cudnn[k])


@pytest.mark.cuda
def test_forced_persistent_on_unfit_shape_raises_and_auto_falls_back(no_tf32):
    core = _require_cuda()
    from charlstm.backends import reference
    H = 4096  # float32 W_hh slice per block far beyond shared memory on any current GPU
    args = _inputs(2, 2, H, torch.float32, False)
    with cuda_backend.use_path("persistent"), pytest.raises(RuntimeError, match="persistent path cannot run"):
        core.fwd_op(*args)
    with cuda_backend.use_path("auto"):
        got = core.fwd_op(*args)
    assert cuda_backend.last_path()["forward"] == "stepwise"
    for a, b in zip(got, reference.forward(*args)):
        _close(a, b, torch.float32, "auto fallback")


@pytest.mark.cuda
def test_torch_compile_fullgraph():
    _require_cuda()
    m = charlstm.LSTM(5, 20, num_layers=2, backend="cuda").cuda()
    x = torch.randn(7, 3, 5, device="cuda")
    f = torch.compile(lambda x: m(x)[0], fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(x), m(x)[0])


@pytest.mark.cuda
def test_stepwise_path_captures_in_a_cuda_graph():
    core = _require_cuda()
    args = _inputs(6, 3, 20, torch.float32, False)
    with cuda_backend.use_path("stepwise"):
        eager = core.fwd_op(*args)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            core.fwd_op(*args)           # warm-up outside capture
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = core.fwd_op(*args)
        graph.replay()
        torch.cuda.synchronize()
    for a, b in zip(captured, eager):
        assert torch.equal(a, b)


# ----------------------------------------------------------- through charlstm.LSTM vs cuDNN
def _module_cases():
    from lstm_cases import Case
    return [Case(hidden_size=20, input_size=3, B=2, T=5),
            Case(hidden_size=100, B=1, T=1),
            Case(hidden_size=100, num_layers=2, bidirectional=True, batch_first=True, B=4, T=9),
            Case(kind="packed_unsorted", hidden_size=20, B=5, T=7, num_layers=2, bidirectional=True),
            Case(proj_size=5, hidden_size=20, with_hx=False),
            Case(hidden_size=768, input_size=16, B=3, T=6),
            Case(hidden_size=20, B=1, T=300)]


MODULE_CASE_IDS = ["H20", "H100-T1-B1", "H100-L2-bidir", "packed-L2-bidir", "proj", "H768", "T300-B1"]


@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case_idx", range(7), ids=MODULE_CASE_IDS)
def test_lstm_module_float32_matches_cudnn(path, case_idx, no_tf32):
    _require_cuda()
    from lstm_cases import assert_close_all, run_pair
    case = _module_cases()[case_idx]
    with cuda_backend.use_path(path):
        ref, got = run_pair(case, "cuda", torch.float32, device="cuda")
    assert cuda_backend.last_path()["forward"] == path
    assert_close_all(ref, got, 1e-4, 1e-3, label=f"cuda/{path} {MODULE_CASE_IDS[case_idx]}")


@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS + ["persistent_tc"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("case_idx", [0, 2, 3, 5], ids=[MODULE_CASE_IDS[i] for i in (0, 2, 3, 5)])
def test_lstm_module_half_error_within_cudnn_error(path, dtype, case_idx):
    """Half precision: error against float64 at most 2x cuDNN's own error plus a few ulps."""
    _require_cuda(dtype)
    from lstm_cases import build as build_module, cast_data, make_data, rel_errors, run_one
    case = _module_cases()[case_idx]
    dev = torch.device("cuda")
    data = make_data(case, dtype, dev)
    exact = run_one(build_module(case, None, torch.float64, "cpu"), case, cast_data(data, torch.float64, "cpu"))
    cudnn = rel_errors(run_one(build_module(case, None, dtype, dev), case, data), exact)
    with cuda_backend.use_path(path):
        mine = rel_errors(run_one(build_module(case, "cuda", dtype, dev), case, data), exact)
    eps = torch.finfo(dtype).eps
    for k in exact:
        assert mine[k] <= 2 * cudnn[k] + 4 * eps, (k, mine[k], cudnn[k])
