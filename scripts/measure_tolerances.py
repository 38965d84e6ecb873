#!/usr/bin/env python
"""Measure the worst errors that the CPU test tolerances must cover, and print them beside the
bounds the tests use (the table in docs/testing.md comes from this script).

    python scripts/measure_tolerances.py            # conformance grid + cuDNN fixtures (~1 min)
    python scripts/measure_tolerances.py --no-kernels   # skip the Triton-interpreter subset

Two measurements:

* ``tests/test_lstm_conformance.py`` -- charlstm's layers against torch's (LSTM, GRU, RNN) on the
  same data, every output and gradient: the smallest ``tol`` for which
  ``assert_close(got, ref, atol=tol, rtol=tol)`` passes, i.e. ``max |got - ref| / (1 + |ref|)``
  over every element of every tensor of every case.  Per cell and dtype over its grid (reference
  backend), and in float32 over the kernel subset for each kernel backend that runs here.
  The bound is ``lstm_cases.TOLERANCES[dtype]``, one for every cell.
* ``tests/test_cudnn_fixtures.py`` check 1 -- the stored (cuDNN or CPU stand-in) tensors against
  the float64 reference: ``max |fixture - ref64| / (eps(dtype) * max(1, max |ref64|))`` per
  tensor, worst over cases and tensors, per family of cells (fixture file) and dtype.  The bound
  is ``FIXTURE_TOL_EPS[dtype]``, one for every family.

Exit status 1 when a measured worst exceeds its bound (the tests would fail too).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if not torch.cuda.is_available():       # as tests/conftest.py: before charlstm's kernels load
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.pop("CHARLSTM_BACKEND", None)
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import lstm_cases  # noqa: E402
import test_cudnn_fixtures as fixtures  # noqa: E402
import test_lstm_conformance as conformance  # noqa: E402

from charlstm import backends  # noqa: E402


def needed_tol(ref: dict, got: dict) -> float:
    """The smallest tol with |got - ref| <= tol + tol * |ref| everywhere."""
    return max(((got[k].double().cpu() - ref[k].double().cpu()).abs()
                / (1 + ref[k].double().cpu().abs())).max().item() for k in ref)


def by_cell(cases) -> dict:
    """``cases`` grouped by their cell, in order of first appearance."""
    out: dict = {}
    for case in cases:
        out.setdefault(case.cell, []).append(case)
    return out


def worst_over(cases, backend: str, dtype) -> tuple[float, str]:
    worst, where = 0.0, ""
    for case in cases:
        ref, got = lstm_cases.run_pair(case, backend, dtype)
        t = needed_tol(ref, got)
        if t > worst:
            worst, where = t, case.id()
    return worst, where


def cpu_kernel_backends() -> list[str]:
    """The kernel backends (or backend:variant names, once they exist) that run on this CPU."""
    cpu = torch.device("cpu")
    if hasattr(backends, "kernel_variants"):
        return [v.name for v in backends.kernel_variants(cpu, torch.float32)
                if v.available and v.backend != "reference"]
    return [b for b in ("triton", "cuda") if not backends.unavailable_reason(b, cpu, torch.float32)]


def fixture_worst(dtype_name: str, family: str) -> tuple[float, str]:
    eps = torch.finfo(getattr(torch, dtype_name)).eps
    worst, where = 0.0, ""
    for _, case in fixtures.gen.family_cases(family):
        ref = fixtures.reference64(dtype_name, case["name"])
        for k, e in fixtures.fixture_errors(dtype_name, case["name"]).items():
            ratio = e / (eps * fixtures.scale(ref[k]))
            if ratio > worst:
                worst, where = ratio, f"{case['name']}/{k}"
    return worst, where


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-kernels", action="store_true",
                    help="skip the kernel subset (the Triton interpreter is the slow part)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows, failed = [], False
    t0 = time.perf_counter()
    for cell, cases in by_cell(conformance.ALL_CELLS).items():
        for dtype in (torch.float64, torch.float32):
            worst, where = worst_over(cases, "reference", dtype)
            rows.append((f"conformance grid {cell}, reference", str(dtype).replace("torch.", ""),
                         lstm_cases.TOLERANCES[dtype][0], worst, where))
    if not args.no_kernels:
        for name in cpu_kernel_backends():
            for cell, cases in by_cell(conformance.KERNEL_CASES).items():
                if backends.cell_reason(backends.parse_name(name)[0], cell):
                    continue
                worst, where = worst_over(cases, name, torch.float32)
                rows.append((f"conformance kernel subset {cell}, {name}", "float32",
                             lstm_cases.TOLERANCES[torch.float32][0], worst, where))
    for family in fixtures.gen.FAMILIES:
        for dtype_name in fixtures.gen.DTYPES:
            worst, where = fixture_worst(dtype_name, family)
            source = fixtures.SOURCE[f"{family}_{dtype_name}"]
            bound = fixtures.FIXTURE_TOL_EPS[getattr(torch, dtype_name)]
            rows.append((f"cuDNN fixture check 1, {family} ({source}), x eps*scale", dtype_name,
                         bound, worst, where))
    print("| check | dtype | bound | measured worst | bound / worst | worst case |")
    print("|---|---|---|---|---|---|")
    for check, dt, bound, worst, where in rows:
        ratio = f"{bound / worst:.1f}" if worst else "inf"
        print(f"| {check} | {dt} | {bound:.3g} | {worst:.3g} | {ratio} | {where} |")
        failed |= worst > bound
    print(f"\n({time.perf_counter() - t0:.0f} s; torch {torch.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
