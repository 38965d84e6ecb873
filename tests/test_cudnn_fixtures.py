"""Check charlstm's backends against stored cuDNN outputs (``tests/cudnn_fixtures/``).

The fixtures hold, per case and dtype, the inputs, weights, initial states and upstream
gradients, and torch's layer's (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``: the case's cell) outputs,
final states and every gradient (see ``tests/cudnn_fixtures/generate.py``).  Their
``metadata["source"]`` says whether they are cuDNN's or the CPU stand-in (torch's native CPU
layers); every test id ends in that source (``cudnn``, ``cpu-standin``, or ``cuda-native`` if
torch ran without cuDNN for a file), and each test records it with
``record_property("fixture_source", ...)``.

Two checks, against one float64 answer: charlstm's layer of the case's cell on the ``reference``
backend, in float64, run on the stored inputs upcast to float64.

1. ``test_fixture_matches_float64_reference``: the stored (cuDNN) tensors agree with the float64
   reference to within ``FIXTURE_TOL_EPS[dtype] * eps(dtype) * scale`` (``scale = max(1,
   max|ref|)`` per tensor; 2x the worst measured, see :data:`FIXTURE_TOL_EPS`).  This
   proves that the reference computes the same function as cuDNN (gate order, the GRU's bias
   convention, packing, reversed direction, ``proj_size``, initial states) and gives each
   dtype's cuDNN error.
2. ``test_backend_within_2x_of_fixture_error``: a backend run in the fixture's dtype must be, per
   tensor, at most ``2 * err_fixture + floor`` away from the float64 reference, where
   ``err_fixture = max|fixture - ref64|`` is cuDNN's own error.  ``floor`` keeps an error of exactly
   zero from making the bound impossible: ``8 * eps(float32) * scale`` in float32 (about 1e-6) and
   ``eps(dtype) * scale`` in float16/bfloat16.  The backends: ``reference`` (its dtype path),
   ``triton`` (the interpreter on a CPU, the GPU when there is one) and ``cuda``; a backend that
   cannot run here is skipped with ``charlstm.backends.unavailable_reason``'s sentence.

Under the Triton interpreter (no GPU) the triton backend's T=512 case is marked ``slow``
(:data:`INTERPRETER_SLOW`): it runs unless deselected with ``-m "not slow"``.

``CHARLSTM_CUDNN_FIXTURES=DIR`` points the tests at other fixture files (``scripts/gpu_check.py``
uses it to test freshly generated cuDNN fixtures before they are committed).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from charlstm import backends
from charlstm.testing import skip_unless_runs

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("cudnn_fixtures_generate",
                                               HERE / "cudnn_fixtures" / "generate.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

FIXTURE_DIR = Path(os.environ.get("CHARLSTM_CUDNN_FIXTURES", HERE / "cudnn_fixtures"))
#: every kernel backend (each with its own choice of variant), from the registry
KERNEL_BACKENDS = tuple(b for b in backends.BACKENDS if backends.is_core(b))
#: check 1: how far the fixture may be from the float64 reference, in eps(dtype) * scale, per
#: dtype: 2x the worst measured on the committed fixtures, rounded up.  Measured worst (CPU
#: stand-in fixtures; ``python scripts/measure_tolerances.py``, all in the LSTM's long_seq case;
#: the GRU and RNN cases stay below it): float32 6.07, float16 4.30, bfloat16 5.28.  Fixtures
#: regenerated from cuDNN sum in another order: rerun that script on them and re-set these (a
#: wrong gate order or a dropped initial state is off by orders of magnitude more).
FIXTURE_TOL_EPS = {torch.float32: 13, torch.float16: 9, torch.bfloat16: 11}
FLOOR_EPS = {torch.float32: 8.0, torch.float16: 1.0, torch.bfloat16: 1.0}
CPU = torch.device("cpu")
#: Under the Triton interpreter (no GPU) each kernel step costs milliseconds of Python: long_seq
#: (T=512) takes 10-20 s per dtype there (45 s for the three on the 2-core CI machine), so those
#: cases are marked ``slow`` (``-m "not slow"`` leaves them out of a quick run; CI runs them).
INTERPRETER_SLOW = {"long_seq"}
INTERPRETED = not torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny (H <= 48): a second intra-op thread only adds synchronisation, which
    on a busy 2-core machine made the file several times slower.  Restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: case name -> its configuration (with the defaults filled in)
CONFIGS = {c["name"]: gen.case_config(c) for c in gen.CASES}


def file_of(dtype_name: str, case: str) -> str:
    """The stem of the fixture file holding ``case`` in ``dtype_name``: ``gru_float16``."""
    return f"{gen.family_of(CONFIGS[case]['cell'])}_{dtype_name}"


@functools.cache
def load_file(stem: str) -> dict:
    path = FIXTURE_DIR / f"{stem}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"fixture file {path} is missing: run "
                                f"python tests/cudnn_fixtures/generate.py [--device cpu]")
    return torch.load(path, weights_only=True)


def load(dtype_name: str, case: str) -> dict:
    """The fixture file (a dict with ``metadata`` and ``cases``) that holds ``case``."""
    return load_file(file_of(dtype_name, case))


def _source_labels() -> dict:
    """file stem -> ``cudnn`` / ``cpu-standin`` / ``cuda-native`` for the test ids (from
    metadata.json, cheap at collection time)."""
    stems = [f"{f}_{d}" for f in gen.FAMILIES for d in gen.DTYPES]
    try:
        meta = json.loads((FIXTURE_DIR / "metadata.json").read_text())
    except (OSError, ValueError):
        return {s: "missing" for s in stems}
    sources = meta.get("sources") or {}
    return {s: gen.SOURCES.get(sources.get(s), "unknown") for s in stems}


SOURCE = _source_labels()
PARAMS = [pytest.param(d, c["name"], id=f"{d}-{c['name']}-{SOURCE[file_of(d, c['name'])]}")
          for d in gen.DTYPES for c in gen.CASES]


def flatten(outputs: dict, grads: dict) -> dict:
    """One dict of every compared tensor: y, h_n, c_n, dx, dh0, dc0, d<param> for each parameter
    (those the case has: no c_n, dc0 for the cells without a cell state)."""
    flat = dict(outputs)
    flat.update({"d" + k: v for k, v in grads.items() if k != "params" and v is not None})
    flat.update({"d" + k: v for k, v in grads["params"].items()})
    return flat


@functools.cache
def reference64(dtype_name: str, case: str) -> dict:
    """The float64 answer: the reference backend on the stored inputs upcast to float64."""
    c = load(dtype_name, case)["cases"][case]
    module = gen.build_module(c["config"], backend="reference").double()
    return flatten(*gen.run_case(module, c["config"], c["inputs"], CPU, torch.float64))


def max_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    if a.shape != ref.shape:
        raise AssertionError(f"shape {tuple(a.shape)} differs from the reference's "
                             f"{tuple(ref.shape)}")
    return (a.double() - ref).abs().max().item() if ref.numel() else 0.0


def scale(ref: torch.Tensor) -> float:
    return max(1.0, ref.abs().max().item()) if ref.numel() else 1.0


def fixture_errors(dtype_name: str, case: str) -> dict:
    c = load(dtype_name, case)["cases"][case]
    fix = flatten(c["outputs"], c["grads"])
    ref = reference64(dtype_name, case)
    if set(fix) != set(ref):
        raise AssertionError(f"fixture tensors {sorted(fix)} differ from the reference's "
                             f"{sorted(ref)}")
    return {k: max_err(fix[k], ref[k]) for k in ref}


def _record(record_property, dtype_name, case):
    """Record where the fixtures came from; skip a case whose generation failed on the device."""
    data = load(dtype_name, case)
    meta = data["metadata"]
    record_property("fixture_source",
                    f"{meta['source']} on {meta['device_name']} ({meta['date_utc']})")
    err = data["cases"][case].get("error")
    if err:
        pytest.skip(f"{meta['source']} could not run this case when the fixtures were made: {err}")


def test_fixture_files_are_consistent():
    """Every family x dtype file exists, has the expected format and cases, fits the 5 MB budget,
    carries a source label, and its stored inputs are exactly the seeded inputs of
    generate.py."""
    total = 0
    for family in gen.FAMILIES:
        for d in gen.DTYPES:
            path = FIXTURE_DIR / f"{family}_{d}.pt"
            total += path.stat().st_size
            data = load_file(f"{family}_{d}")
            assert data["format"] == gen.FORMAT and data["dtype"] == d
            assert data["family"] == family
            meta = data["metadata"]
            assert meta["source"] in gen.SOURCES, meta["source"]
            assert (meta["source"] == gen.SOURCE_CPU) == (meta["device"] == "cpu")
            assert list(data["cases"]) == [c["name"] for _, c in gen.family_cases(family)]
            failed = {k: v["error"] for k, v in data["cases"].items() if "error" in v}
            assert not failed, f"{meta['source']} failed on these {family} {d} cases: {failed}"
            for seed, cfg in gen.family_cases(family):
                stored = data["cases"][cfg["name"]]
                assert stored["seed"] == seed and stored["config"] == cfg, cfg["name"]
                fresh = gen.make_inputs(cfg, seed, getattr(torch, d))
                for k in ("x", "h0", "c0", "dy", "dh_n", "dc_n"):
                    a, b = stored["inputs"][k], fresh[k]
                    assert (a is None) == (b is None), (cfg["name"], k)
                    if a is not None:
                        assert a.dtype == getattr(torch, d) and torch.equal(a, b), (cfg["name"], k)
                for k, v in fresh["params"].items():
                    assert torch.equal(stored["inputs"]["params"][k], v), (cfg["name"], k)
    assert total <= 5e6, f"fixtures are {total / 1e6:.2f} MB, over the 5 MB budget"
    assert {c["cell"] for c in CONFIGS.values()} == {"lstm", "gru", "rnn_tanh", "rnn_relu"}


@pytest.mark.parametrize("dtype_name,case", PARAMS)
def test_fixture_matches_float64_reference(dtype_name, case, record_property):
    """cuDNN (or its CPU stand-in) agrees with the float64 reference to a few eps of its dtype."""
    _record(record_property, dtype_name, case)
    dtype = getattr(torch, dtype_name)
    tol = FIXTURE_TOL_EPS[dtype] * torch.finfo(dtype).eps
    ref = reference64(dtype_name, case)
    errs = fixture_errors(dtype_name, case)
    bad = {k: f"err {e:.3g} > {tol * scale(ref[k]):.3g}"
           for k, e in errs.items() if e > tol * scale(ref[k])}
    assert not bad, (f"{SOURCE[file_of(dtype_name, case)]} fixture vs float64 reference "
                     f"({dtype_name}, {case}): {bad}")


def _kernel_device(backend: str) -> torch.device:
    if backend == "reference":
        return CPU
    return torch.device("cuda") if torch.cuda.is_available() else CPU


def check_within_2x(got: dict, ref: dict, fix_err: dict, dtype: torch.dtype) -> dict:
    """Tensors whose error against ``ref`` exceeds ``2 * fix_err + floor``: name -> message."""
    eps = torch.finfo(dtype).eps
    bad = {}
    for k, r in ref.items():
        bound = 2 * fix_err[k] + FLOOR_EPS[dtype] * eps * scale(r)
        e = max_err(got[k], r)
        if not e <= bound:
            bad[k] = f"err {e:.3g} > bound {bound:.3g} (fixture err {fix_err[k]:.3g})"
    return bad


def _backend_params() -> list:
    """(backend, dtype, case) with the ids of PARAMS + backend; the interpreted long cases slow."""
    out = []
    for p in PARAMS:
        for backend in KERNEL_BACKENDS:
            slow = (INTERPRETED and backend.split(":")[0] == "triton"
                    and p.values[1] in INTERPRETER_SLOW)
            out.append(pytest.param(backend, *p.values, id=f"{p.id}-{backend}",
                                    marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize("backend,dtype_name,case", _backend_params())
def test_backend_within_2x_of_fixture_error(backend, dtype_name, case, record_property):
    """A backend in the fixture's dtype is at most 2x as far from float64 as cuDNN is (+ floor)."""
    _record(record_property, dtype_name, case)
    dtype = getattr(torch, dtype_name)
    device = _kernel_device(backend)
    skip_unless_runs(backend, device, dtype, CONFIGS[case]["cell"])
    c = load(dtype_name, case)["cases"][case]
    module = gen.build_module(c["config"], backend=backend).to(device=device, dtype=dtype)
    got = flatten(*gen.run_case(module, c["config"], c["inputs"], device, dtype))
    bad = check_within_2x(got, reference64(dtype_name, case), fixture_errors(dtype_name, case),
                          dtype)
    assert not bad, (f"{backend} vs float64 reference, bound from the "
                     f"{SOURCE[file_of(dtype_name, case)]} fixture: {bad}")


@pytest.mark.parametrize("case,gates", [("odd_hidden", (0, 1, 3, 2)),     # LSTM: g <-> o
                                        ("gru_odd_hidden", (1, 0, 2))])   # GRU: r <-> z
def test_checks_catch_a_wrong_gate_order(case, gates):
    """Negative control: a model with two gates swapped must fail both checks in float32."""
    dtype_name = "float32"
    c = load(dtype_name, case)["cases"][case]
    H = c["config"]["hidden"]
    swapped = dict(c["inputs"])
    perm = torch.cat([torch.arange(g * H, (g + 1) * H) for g in gates])
    swapped["params"] = {k: v[perm] for k, v in c["inputs"]["params"].items()}
    module = gen.build_module(c["config"], backend="reference")
    got = flatten(*gen.run_case(module, c["config"], swapped, CPU, torch.float32))
    ref = reference64(dtype_name, case)
    bad = check_within_2x(got, ref, fixture_errors(dtype_name, case), torch.float32)
    assert "y" in bad and "h_n" in bad, f"the 2x check missed a gate-order bug: {bad}"
    eps = torch.finfo(torch.float32).eps
    assert max_err(got["y"], ref["y"]) > FIXTURE_TOL_EPS[torch.float32] * eps * scale(ref["y"])
