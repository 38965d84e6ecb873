#!/usr/bin/env python
"""A tiny forward + backward of kernel variants, for compute-sanitizer.

    compute-sanitizer --tool racecheck --kernel-name regex='persistent|step_kernel|lstm_' \\
        python scripts/cuda_sanitize_case.py triton:persistent cuda:persistent cuda:persistent_tc
    python scripts/cuda_sanitize_case.py            # every available kernel variant (memcheck)
    python scripts/cuda_sanitize_case.py --cells all cuda:persistent   # every cell, one variant

``scripts/gpu_check.py`` runs it under racecheck and synccheck for the spin-barrier variants and
under memcheck for all of them.  One tiny case per variant, so the instrumented run takes
seconds: T=3, B=5 (not a multiple of the 4-row tile), H=40 (several blocks/programs), packed
rows; float32, or bfloat16 for a tensor-core variant.  ``--cells`` (comma separated, or ``all``;
default ``lstm``) runs the case once per recurrent cell.  Each case is
:func:`gpu_canary.check_variant` (inputs from ``charlstm.testing.core_inputs``, the 2x rule
against a float64 reference, which variant ran).  A variant that is unavailable here -- e.g.
disabled by the GPU check's canary through ``CHARLSTM_DISABLED_VARIANTS`` -- is skipped with its
reason.

Exit status: 0 every case ran (precision findings are printed, not failed: the correctness step
judges those); 1 a case failed (error, non-finite output, another variant ran); 77 nothing could
run here.  compute-sanitizer's own findings come through its ``--error-exitcode``.
"""
from __future__ import annotations

import argparse
import sys

import torch
from gpu_canary import SKIP_RC, check_variant, default_dtype  # scripts/ is on sys.path

from charlstm import backends
from charlstm.backends.contract import CELLS

SHAPE = (3, 5, 40)   # T, B, H


def parse_cells(text: str) -> list:
    """``"all"`` or comma-separated cell names -> the list; an unknown name is a usage error."""
    cells = list(CELLS) if text == "all" else [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise argparse.ArgumentTypeError(f"--cells {text!r}: expected 'all' or names from "
                                         f"{', '.join(CELLS)}")
    return cells


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="*", help="kernel variants (default: every available one)")
    ap.add_argument("--cells", type=parse_cells, default=["lstm"],
                    help="comma-separated cells, or all (default lstm)")
    args = ap.parse_args(argv)
    names = args.variants
    if not torch.cuda.is_available():
        print("cuda_sanitize_case: cannot run here: no CUDA GPU")
        return SKIP_RC
    dev = torch.device("cuda")
    if not names:
        names = [v.name for v in backends.kernel_variants(dev) if v.name != "reference"]
    torch.backends.cuda.matmul.allow_tf32 = False
    ran = failures = 0
    for name, cell in [(n, c) for n in names for c in args.cells]:
        dtype = default_dtype(name)
        why = backends.unavailable_reason(name, dev, dtype, cell)
        if why:
            print(f"SKIP  {name} {cell}: {why}")
            continue
        try:
            problems, note = check_variant(name, dev, dtype, *SHAPE, cell)
        except Exception as e:  # noqa: BLE001 - report and count every failure
            problems, note = [f"{type(e).__name__}: {e}"], f"{name} {cell}"
        ran += 1
        failures += bool(problems)
        detail = "".join(f"\n      {p}" for p in problems)
        print(("FAIL  " if problems else "ok    ") + note + detail)
    if not ran:
        print(f"cuda_sanitize_case: cannot run here: none of {', '.join(names)} is available")
        return SKIP_RC
    print(f"cuda_sanitize_case: {ran} case(s) (variant x cell) ran, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
