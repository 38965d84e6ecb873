"""The ``cuda`` backend (persistent CUDA C++ kernels, ``csrc/``).

CPU tests (run everywhere): the backend says clearly why it cannot run on a machine without
CUDA, importing it compiles nothing, the C launch header and the Python/bindings side agree on
codes and fields, the build flags and the path selection behave as documented.

GPU tests (``@pytest.mark.cuda``, skipped here): what is specific to this backend -- the bare
``cuda`` (launcher ``auto``) choice and its fallback, determinism, a forced path that cannot
run, CUDA-graph capture of ``cuda:stepwise``, ``torch.compile``, and ``charlstm.LSTM`` against
cuDNN per variant (float32 and 16-bit, long T) under the 2x rule of :mod:`charlstm.testing`.
Every variant against the reference, float64 and every other path, and ``opcheck``:
``tests/test_core_contract.py``.  The compile checks themselves are
``scripts/check_cuda_compile.sh``.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

import charlstm
from charlstm import backends, testing
from charlstm.backends import cuda as cuda_backend
from charlstm.backends.contract import CELLS
from charlstm.backends.cuda import abi, availability, build, build_flags, paths
from charlstm.testing import (
    FORWARD,
    assert_2x,
    core_gradients,
    core_inputs,
    expected_run,
    reference_runs,
    skip_unless_runs,
)

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
    with pytest.raises(charlstm.BackendUnavailable,
                       match=re.escape(f"'cuda' is unavailable: {why}")):
        m(torch.randn(2, 1, 3))
    with charlstm.use_backend("cuda"), pytest.raises(charlstm.BackendUnavailable,
                                                     match=re.escape(why)):
        charlstm.LSTM(3, 4)(torch.randn(2, 1, 3))


@pytest.mark.skipif(CAN_RUN, reason="the cuda backend can run here")
def test_core_attribute_raises_backend_unavailable_and_nothing_was_built():
    with pytest.raises(charlstm.BackendUnavailable, match=re.escape(availability.global_reason())):
        cuda_backend.core  # noqa: B018
    assert build._ext is None                    # importing/asking never loads or compiles


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
    cells = {"cell_lstm.cu", "cell_gru.cu", "cell_rnn.cu"}
    assert {"bindings.cpp", "launcher.cu"} | cells <= set(srcs)
    assert srcs == (sorted(p.name for p in CSRC.glob("*.cu"))
                    + sorted(p.name for p in CSRC.glob("*.cpp")))


# =============================================================== CPU: launch.h <-> Python/bindings
def _c_enum(text: str, name: str) -> dict:
    body = re.search(r"enum\s+" + name + r"\s*\{([^}]*)\}", text).group(1)
    return {k: int(v) for k, v in re.findall(r"(CHARLSTM_\w+)\s*=\s*(\d+)", body)}


def _c_struct_fields(text: str, name: str) -> list:
    body = re.search(r"typedef struct " + name + r"\s*\{(.*?)\}\s*" + name + ";", text,
                     re.S).group(1)
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
    assert ({k.replace("CHARLSTM_PATH_", "").lower(): v for k, v in paths_c.items()}
            == abi.PATH_CODES)
    assert set(paths.VARIANTS) | {"auto"} == set(abi.PATH_CODES)
    cells_c = _c_enum(h, "charlstm_cell")
    assert ({k.replace("CHARLSTM_CELL_", "").lower(): v for k, v in cells_c.items()}
            == abi.CELL_CODES)
    assert set(abi.CELL_CODES) == set(CELLS)


def test_every_cell_is_dispatched_and_instantiated():
    """Each enum charlstm_cell value has a case in the C entry points' dispatch (launcher.cu:
    by_cell) and an explicit instantiation of run_forward/run_backward in a cell_<name>.cu (a
    missing one would compile and only fail to link; scripts/check_cuda_compile.sh also links
    them), and the registry lists every cell for the cuda backend."""
    codes = _c_enum((CSRC / "launch.h").read_text(), "charlstm_cell")
    launcher = (CSRC / "launcher.cu").read_text()
    by_cell = launcher[launcher.index("int by_cell("):]
    by_cell = by_cell[:by_cell.index("\n}\n")]
    cells_src = "".join(f.read_text() for f in sorted(CSRC.glob("cell_*.cu")))
    last = max(codes, key=codes.get)
    for code in codes:
        case = f"default: return f(std::integral_constant<int, {code}>())" if code == last else \
            f"case {code}: return f(std::integral_constant<int, {code}>())"
        assert case in by_cell, f"launcher.cu by_cell: no {case!r}"
        for fn in ("run_forward", "run_backward"):
            assert re.search(rf"template int {fn}<{code}>\(", cells_src), \
                f"no cell_*.cu instantiates {fn}<{code}>"
    assert backends._REGISTRY["cuda"].cells == tuple(CELLS)


@pytest.mark.parametrize("struct", ["charlstm_fwd_args", "charlstm_bwd_args"])
def test_bindings_fill_every_launcher_field(struct):
    fields = _c_struct_fields((CSRC / "launch.h").read_text(), struct)
    assert len(fields) > 10 and fields[:5] == ["T", "B", "H", "dtype", "cell"]
    cell_fields = {"b_hn"} if struct == "charlstm_fwd_args" else {"h0", "hs"}  # GRU
    assert cell_fields <= set(fields)
    bindings = (CSRC / "bindings.cpp").read_text()
    fn = "forward(" if struct == "charlstm_fwd_args" else "backward("
    body = bindings[bindings.index(f"{struct} a;"):]
    body = body[:body.index("check_status")]
    missing = [f for f in fields if not re.search(rf"\ba\.{f}\s*=", body)]
    assert not missing, f"bindings.cpp {fn}...) leaves {missing} unset"


def _bindings_args(fn: str) -> list:
    """The py::arg names of ``m.def("<fn>", ...)`` in bindings.cpp, in order."""
    text = (CSRC / "bindings.cpp").read_text()
    body = text[text.index(f'm.def("{fn}"'):]
    body = body[:body.index(";")]
    return re.findall(r'py::arg\("(\w+)"\)', body)


def _ops_call_keywords(fn: str) -> list:
    """The keywords ops.py passes to ``ext.<fn>(...)``, in order."""
    import ast
    tree = ast.parse((ROOT / "charlstm" / "backends" / "cuda" / "ops.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == fn
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "ext"]
    assert len(calls) == 1 and not calls[0].args, f"ops.py: expected one ext.{fn}(keywords...)"
    return [k.arg for k in calls[0].keywords]


@pytest.mark.parametrize("fn", ["forward", "backward"])
def test_ops_pass_every_binding_argument_by_name(fn):
    """ops.py calls the extension with exactly the arguments bindings.cpp declares (py::arg), by
    name, and the C++ functions take them in that order: the contract's arguments, the cell
    code, the stream and the path."""
    names = _bindings_args(fn)
    assert _ops_call_keywords(fn) == names
    text = (CSRC / "bindings.cpp").read_text()
    sig = re.search(r"> " + fn + r"\((.*?)\)\s*\{", text, re.S).group(1)
    assert re.findall(r"(\w+)\s*(?:,|$)", sig) == names
    assert names[-3:] == ["cell", "stream", "path"]
    assert names[:-3] == (["xproj", "w_hh", "h0", "c0", "lengths", "b_hn"] if fn == "forward" else
                          ["dhs", "dhT", "dcT", "w_hh", "h0", "c0", "hs", "cs", "gates", "lengths"])


# =============================================================== CPU: build flags
def test_build_flags_default_archs(monkeypatch):
    kw = build_flags.extension_kwargs(environ={})
    nvcc = kw["extra_compile_args"]["nvcc"]
    for cc in ("80", "86", "89", "90"):
        assert f"-gencode=arch=compute_{cc},code=sm_{cc}" in nvcc
    assert "--use_fast_math" not in nvcc and "cxx" in kw["extra_compile_args"]
    one = build_flags.extension_kwargs(environ={}, archs=["9.0", "9.0"])
    one = one["extra_compile_args"]["nvcc"]
    assert [f for f in one if "arch" in f] == ["-gencode=arch=compute_90,code=sm_90"]


def test_build_flags_honour_torch_cuda_arch_list():
    kw = build_flags.extension_kwargs(environ={"TORCH_CUDA_ARCH_LIST": "9.0"})
    nvcc = kw["extra_compile_args"]["nvcc"]
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
def test_variant_codes_and_own_choice():
    """Each variant maps to its launcher path, ``""`` to ``auto``; with variants disabled a bare
    ``cuda`` steers around them (the launcher's auto cannot leave one out)."""
    assert {v: paths.path_code(v) for v in paths.VARIANTS} == {
        v: abi.PATH_CODES[v] for v in ("persistent_tc", "persistent", "stepwise")}
    assert paths.path_code("") == abi.PATH_CODES["auto"]
    with pytest.raises(ValueError, match="unknown variant 'auto'"):
        paths.path_code("auto")
    assert paths.ran_name(abi.PATH_CODES["stepwise"]) == "cuda:stepwise"
    choice = lambda *d: paths.own_choice(None, None, frozenset(d))  # noqa: E731
    assert choice() == ""
    assert choice("persistent_tc") == "persistent"
    assert choice("persistent") == choice("persistent", "persistent_tc") == "stepwise"
    assert choice("stepwise") == "persistent_tc"
    assert choice("persistent", "stepwise") is None


# =============================================================== GPU tests
# Every cuda variant against the reference, a float64 run and every other path, forward and
# backward, and opcheck: tests/test_core_contract.py.  Here: what is specific to this backend.
DEV = torch.device("cuda")
CUDA_VARIANTS = [v.name for v in backends.kernel_variants() if v.backend == "cuda"]


@pytest.fixture
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _core(name: str, dtype=torch.float32):
    skip_unless_runs(name, DEV, dtype)
    return backends.core_for(name)


def _check_forward(core, inputs, grads, dtype, label):
    """The forward outputs of ``core.fwd_op`` within the 2x rule."""
    ref, exact = reference_runs(inputs, grads)
    got = dict(zip(FORWARD, core.fwd_op(*inputs, "lstm", core.variant)))
    bad = testing.check_core(got, ref, exact, dtype, inputs[4])
    assert not bad, f"{label}: {bad}"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,batch,want", [
    (torch.bfloat16, 16, "persistent_tc"), (torch.float16, 8, "persistent_tc"),
    (torch.bfloat16, 7, "persistent"), (torch.float32, 16, "persistent")],
    ids=["bf16-B16", "f16-B8", "bf16-B7", "f32-B16"])
def test_bare_cuda_uses_tensor_cores_for_half_types_from_batch_8(dtype, batch, want, no_tf32):
    """A bare ``cuda`` (the launcher's auto rule, CHARLSTM_TC_MIN_BATCH = 8 in csrc/launch.h)
    picks the same path in both directions, and what it picks is within the 2x rule."""
    core = _core("cuda", dtype)
    inputs, grads = core_inputs(5, batch, 96, dtype, DEV, lengths="random")
    got = core_gradients(core, inputs, grads)
    assert backends.last_run() == {"forward": f"cuda:{want}", "backward": f"cuda:{want}"}
    ref = core_gradients(backends.core_for("reference"), inputs, grads)
    exact = core_gradients(backends.core_for("reference"), inputs, grads, torch.float64)
    assert_2x(got, exact, exact, testing.errors(ref, exact), dtype, label=f"cuda ({want})")


@pytest.mark.cuda
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("name", CUDA_VARIANTS)
def test_deterministic(name, cell):
    """Bitwise the same twice, every gradient, every cell (bfloat16 where the variant is the
    tensor-core one: its own path)."""
    dtype = torch.bfloat16 if name == "cuda:persistent_tc" else torch.float32
    skip_unless_runs(name, DEV, dtype, cell)
    core = backends.core_for(name)
    inputs, grads = core_inputs(12, 6, 100, dtype, DEV, cell=cell, lengths="random")
    a = core_gradients(core, inputs, grads, cell=cell)
    b = core_gradients(core, inputs, grads, cell=cell)
    assert backends.last_run()["backward"] == expected_run(name, dtype)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.cuda
@pytest.mark.parametrize("name", CUDA_VARIANTS)
def test_long_sequence_bf16_is_stable(name):
    """T=2048 in bfloat16 through charlstm.LSTM: everything finite, and within the 2x rule with
    cuDNN's bfloat16 error against a float64 run of the same (rounded) data as the base."""
    skip_unless_runs(name, DEV, torch.bfloat16)
    from lstm_cases import Case
    _module_vs_cudnn(Case(input_size=8, hidden_size=128, B=4, T=2048), name, torch.bfloat16)


@pytest.mark.cuda
def test_forced_persistent_on_unfit_shape_raises_and_bare_cuda_falls_back(no_tf32):
    core = _core("cuda:persistent")
    H = 4096  # float32 W_hh slice per block far beyond shared memory on any current GPU
    inputs, grads = core_inputs(2, 2, H, torch.float32, DEV)
    with pytest.raises(RuntimeError, match="persistent path cannot run"):
        core.fwd_op(*inputs, "lstm", core.variant)
    _check_forward(backends.core_for("cuda"), inputs, grads, torch.float32,
                   "cuda (auto fallback)")
    assert backends.last_run()["forward"] == "cuda:stepwise"


@pytest.mark.cuda
def test_torch_compile_fullgraph():
    skip_unless_runs("cuda", DEV, torch.float32)
    m = charlstm.LSTM(5, 20, num_layers=2, backend="cuda").cuda()
    x = torch.randn(7, 3, 5, device="cuda")
    f = torch.compile(lambda x: m(x)[0], fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(x), m(x)[0])


@pytest.mark.cuda
def test_stepwise_path_captures_in_a_cuda_graph():
    core = _core("cuda:stepwise")
    inputs, _ = core_inputs(6, 3, 20, torch.float32, DEV)
    eager = core.fwd_op(*inputs, "lstm", core.variant)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        core.fwd_op(*inputs, "lstm", core.variant)           # warm-up outside capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = core.fwd_op(*inputs, "lstm", core.variant)
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
            Case(kind="packed_unsorted", hidden_size=20, B=5, T=7, num_layers=2,
                 bidirectional=True),
            Case(proj_size=5, hidden_size=20, with_hx=False),
            Case(hidden_size=768, input_size=16, B=3, T=6),
            Case(hidden_size=20, B=1, T=300)]


MODULE_CASE_IDS = ["H20", "H100-T1-B1", "H100-L2-bidir", "packed-L2-bidir", "proj", "H768",
                   "T300-B1"]


def _module_vs_cudnn(case, name: str, dtype) -> None:
    """charlstm.LSTM(backend=name) and cuDNN on the same data, both against a float64 run on the
    CPU: every output and gradient within the 2x rule, cuDNN's error as the base."""
    from lstm_cases import build as build_module
    from lstm_cases import cast_data, make_data, run_one
    data = make_data(case, dtype, DEV)
    exact = run_one(build_module(case, None, torch.float64, "cpu"), case,
                    cast_data(data, torch.float64, "cpu"))
    cudnn = run_one(build_module(case, None, dtype, DEV), case, data)
    got = run_one(build_module(case, name, dtype, DEV), case, data)
    assert backends.last_run()["forward"] == expected_run(name, dtype)
    assert all(torch.isfinite(v).all() for v in got.values())
    assert_2x(got, exact, exact, testing.errors(cudnn, exact), dtype, label=f"{name} vs cuDNN")


@pytest.mark.cuda
@pytest.mark.parametrize("name", CUDA_VARIANTS)
@pytest.mark.parametrize("case_idx", range(7), ids=MODULE_CASE_IDS)
def test_lstm_module_float32_within_cudnn_error(name, case_idx, no_tf32):
    skip_unless_runs(name, DEV, torch.float32)
    _module_vs_cudnn(_module_cases()[case_idx], name, torch.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("name", CUDA_VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("case_idx", [0, 2, 3, 5], ids=[MODULE_CASE_IDS[i] for i in (0, 2, 3, 5)])
def test_lstm_module_half_within_cudnn_error(name, dtype, case_idx):
    skip_unless_runs(name, DEV, dtype)
    _module_vs_cudnn(_module_cases()[case_idx], name, dtype)
