#!/usr/bin/env python
"""One forward + backward per kernel variant at the headline shape, for Nsight Compute.

    ncu --profile-from-start off --kernel-name regex:'persistent|step_kernel|lstm_' \\
        python scripts/profile_case.py triton:persistent cuda:persistent cuda:persistent_tc

``scripts/gpu_check.py``'s ``ncu`` step runs it so.  Shape: B=16, H=768, bfloat16 (the headline
row) with T=64 instead of 1024: per-step behaviour is the same and the profiler's replays stay
short.  Every variant runs once as a warm-up (compiles, caches), then once more between
``torch.cuda.profiler.start()`` and ``stop()``: with ``--profile-from-start off`` only that
second run is profiled.  stdout says which variant ran each direction
(``charlstm.backends.last_run()``) so the profile can be matched to the code.  Inputs come from
``charlstm.testing.core_inputs``.  A variant that cannot run here (e.g. disabled by the GPU
check's canary) is skipped with its reason; exit 77 when none can run, else 0.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from charlstm import backends  # noqa: E402
from charlstm.testing import core_inputs  # noqa: E402

SKIP_RC = 77


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="concrete kernel variants, e.g. cuda:persistent")
    ap.add_argument("--shape", default="64,16,768", help="T,B,H (default %(default)s)")
    ap.add_argument("--dtype", default="bfloat16", choices=("float32", "float16", "bfloat16"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_case: cannot run here: no CUDA GPU")
        return SKIP_RC
    dev, dtype = torch.device("cuda"), getattr(torch, args.dtype)
    T, B, H = (int(x) for x in args.shape.split(","))
    (*inputs, L, _b_hn), grads = core_inputs(T, B, H, dtype, dev, seed=0)
    runnable = []
    for name in args.variants:
        why = backends.unavailable_reason(name, dev, dtype)
        print(f"SKIP  {name}: {why}" if why else f"run   {name}", flush=True)
        if not why:
            runnable.append((name, backends.core_for(name)))
    if not runnable:
        print("profile_case: cannot run here: none of the variants is available")
        return SKIP_RC

    def run(name, core, label):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        torch.autograd.backward(core(*leaves, L), grads)
        torch.cuda.synchronize()
        print(f"{label:8s} {name} T={T} B={B} H={H} {args.dtype}: ran {backends.last_run()}",
              flush=True)

    for name, core in runnable:
        run(name, core, "warm-up")
    torch.cuda.profiler.start()
    for name, core in runnable:
        run(name, core, "profiled")
    torch.cuda.profiler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
