"""The backend registry: ``backend:variant`` names, availability, choosing, disabling, what ran.

The kernels themselves are ``tests/test_core_contract.py``'s; here only the naming and choosing
machinery of :mod:`charlstm.backends` (CPU, cheap).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import charlstm
from charlstm import backends
from charlstm.backends import BackendUnavailable

CPU = torch.device("cpu")
ORDER = ("reference", "torch", "triton:persistent", "triton:sequence", "triton:step",
         "cuda:persistent_tc", "cuda:persistent", "cuda:stepwise")


def test_names_in_order_and_their_info():
    assert backends.NAMES == ORDER
    infos = backends.variants()
    assert [v.name for v in infos] == list(ORDER)
    for v in infos:
        assert v.name == (v.backend if v.variant is None else f"{v.backend}:{v.variant}")
        assert v.is_core == (v.backend != "torch")
        assert v.available == (v.reason is None)
        assert v.status == backends.STATUS[v.backend]
    assert [v.name for v in backends.kernel_variants()] == [n for n in ORDER if n != "torch"]
    assert backends.SELECTORS == ("triton", "cuda")


@pytest.mark.parametrize("name,want", [
    ("auto", ("auto", None)), ("Triton", ("triton", None)), ("TRITON:Step", ("triton", "step")),
    ("cuda:persistent_tc", ("cuda", "persistent_tc")), ("reference", ("reference", None))])
def test_parse_name(name, want):
    assert backends.parse_name(name) == want
    assert backends.validate_name(name) == ":".join(p for p in want if p)


@pytest.mark.parametrize("bad", ["cudnn", "triton:warp", "triton:", "reference:x", "torch:cudnn",
                                 "cuda:auto", "", None])
def test_unknown_names_list_the_choices(bad):
    with pytest.raises(ValueError, match=r"unknown charlstm backend .*expected one of auto, "
                                         r"reference, torch, triton, triton:persistent"):
        backends.parse_name(bad)


def test_kernel_modules_expose_the_registry_variants():
    from charlstm.backends import cuda, triton
    from charlstm.backends.cuda import abi
    from charlstm.backends.triton.common import SCHEDULES
    assert triton.VARIANTS == ("persistent", "sequence", "step") and set(SCHEDULES) == set(
        triton.VARIANTS)
    assert cuda.VARIANTS == ("persistent_tc", "persistent", "stepwise")
    assert set(cuda.VARIANTS) | {"auto"} == set(abi.PATH_CODES)


def test_resolve():
    f32 = torch.float32
    assert backends.resolve("auto", CPU, f32) == "torch"
    assert backends.resolve("Triton:Step", CPU, f32) == "triton:step"
    assert backends.resolve("triton", CPU, f32) == "triton:sequence"    # the interpreter's own
    why = backends.unavailable_reason("cuda:stepwise", CPU, f32)
    assert why
    with pytest.raises(BackendUnavailable,
                       match=re.escape(f"charlstm backend 'cuda:stepwise' is unavailable: {why}")):
        backends.resolve("CUDA:stepwise", CPU, f32)
    with pytest.raises(BackendUnavailable, match="'cuda:persistent' is unavailable: dtype "
                                                 "torch.float64 is not supported by the cuda"):
        backends.resolve("cuda:persistent", CPU, torch.float64)


def test_every_entry_point_accepts_a_variant(monkeypatch):
    x = torch.randn(3, 2, 4)
    m = charlstm.LSTM(4, 5, backend="Triton:Step")
    assert m.backend == "triton:step"
    m(x)
    assert backends.last_run()["forward"] == "triton:step"
    with charlstm.use_backend("triton:persistent"):
        m(x)
    assert backends.last_run()["forward"] == "triton:persistent"
    monkeypatch.setenv("CHARLSTM_BACKEND", "TRITON")
    m(x)
    assert backends.last_run()["forward"] == "triton:sequence"       # the backend's own choice
    monkeypatch.delenv("CHARLSTM_BACKEND")
    model = charlstm.convert_lstm(torch.nn.Sequential(torch.nn.LSTM(4, 5)), backend="reference")
    assert model[0].backend == "reference"
    from charlstm.cli import build_parser
    args = build_parser().parse_args(["eval", "ckpt", "--backend", "CUDA:Stepwise"])
    assert args.backend == "cuda:stepwise"


def test_disabled_variants(monkeypatch):
    monkeypatch.setenv(backends.DISABLED_ENV, "triton:sequence, triton:persistent")
    assert backends.disabled_variants() == {"triton:sequence", "triton:persistent"}
    assert backends.disabled_variants("triton") == {"sequence", "persistent"}
    why = backends.unavailable_reason("triton:sequence", CPU, torch.float32)
    assert why == ("disabled by CHARLSTM_DISABLED_VARIANTS (triton:sequence, triton:persistent)")
    info = {v.name: v for v in backends.variants(CPU, torch.float32)}
    assert not info["triton:persistent"].available and info["triton:step"].available
    assert backends.resolve("triton", CPU, torch.float32) == "triton:step"   # steers around
    m = charlstm.LSTM(4, 5, backend="triton")
    m(torch.randn(3, 2, 4))
    assert backends.last_run()["forward"] == "triton:step"
    with pytest.raises(BackendUnavailable, match=r"'triton:sequence' is unavailable: disabled by"):
        charlstm.LSTM(4, 5, backend="triton:sequence")(torch.randn(3, 2, 4))
    monkeypatch.setenv(backends.DISABLED_ENV, "triton:sequence triton:persistent triton:step")
    with pytest.raises(BackendUnavailable, match="'triton' is unavailable: every variant of "
                                                 "triton is disabled by"):
        backends.resolve("triton", CPU, torch.float32)
    monkeypatch.setenv(backends.DISABLED_ENV, "triton:warp")
    with pytest.raises(ValueError, match="CHARLSTM_DISABLED_VARIANTS='triton:warp': triton:warp "
                                         "is not a concrete kernel path"):
        backends.disabled_variants()


def test_conftest_skips_tests_parametrized_with_a_disabled_variant():
    from conftest import _disabled_params

    class Item:
        class callspec:
            params = {"name": "Triton:Step", "dtype": torch.float32, "other": "cuda"}

    assert _disabled_params(Item, frozenset({"triton:step"})) == ["triton:step"]
    assert _disabled_params(Item, frozenset({"triton:sequence"})) == []


def test_core_for_binds_the_variant():
    core = backends.core_for("triton:step")
    assert core.variant == "step" and backends.core_for("triton").variant == ""
    assert backends.core_for("reference").variant == ""
    with pytest.raises(ValueError, match="no recurrent core"):
        backends.core_for("torch")
    with pytest.raises(BackendUnavailable, match="'cuda' is unavailable"):
        backends.core_for("cuda:stepwise")


_LEGACY_SCRIPT = textwrap.dedent("""
    import warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import torch
        from charlstm import backends
        got = backends.resolve("triton", torch.device("cpu"), torch.float32)
        backends.resolve("triton", torch.device("cpu"), torch.float32)
        backends.unavailable_reason("cuda")
    msgs = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    print(got)
    print(len(msgs))
    print("\\n".join(msgs))
""")


def test_old_environment_variables_warn_once_and_map(tmp_path):
    """CHARLSTM_TRITON_SCHEDULE / CHARLSTM_CUDA_PATH are no longer read per call: one warning
    each, naming the replacement; a valid old value becomes the bare backend's own choice."""
    env = dict(os.environ, TRITON_INTERPRET="1", CHARLSTM_TRITON_SCHEDULE="step",
               CHARLSTM_CUDA_PATH="auto")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _LEGACY_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0] == "triton:step" and lines[1] == "2", r.stdout
    assert "CHARLSTM_TRITON_SCHEDULE is no longer read" in lines[2]
    assert "backend='triton:step'" in lines[2]
    assert "CHARLSTM_CUDA_PATH is no longer read (CHARLSTM_CUDA_PATH='auto' is ignored)" in r.stdout
