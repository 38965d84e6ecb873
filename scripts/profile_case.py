#!/usr/bin/env python
"""One forward + backward of a backend's recurrent core at the headline shape, for Nsight
Compute (``scripts/gpu_check.sh``'s ``ncu`` step runs it under ``ncu``).

    ncu --kernel-name regex:'persistent|lstm_' --launch-skip K --launch-count N \\
        python scripts/profile_case.py --backend cuda --path auto

Shape: B=16, H=768, bfloat16 (the headline row of the benchmarks) with T=64 instead of 1024:
per-step behaviour is the same and the profiler's replays stay short.  The case runs twice
(warm-up, then the profiled run); on stdout it prints which kernels each run launched and the
cuda backend's path, so the profile can be matched to the code.  Exits 2 without a GPU or when
the backend cannot run here.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("cuda", "triton"), required=True)
    ap.add_argument("--path", default="auto", help="cuda backend path (auto, persistent, ...)")
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--H", type=int, default=768)
    ap.add_argument("--dtype", default="bfloat16", choices=("float32", "float16", "bfloat16"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU", file=sys.stderr)
        return 2
    from charlstm import backends
    dtype = getattr(torch, args.dtype)
    dev = torch.device("cuda")
    why = backends.unavailable_reason(args.backend, dev, dtype)
    if why:
        print(f"{args.backend}: {why}", file=sys.stderr)
        return 2
    core = backends.core_for(args.backend)
    g = torch.Generator().manual_seed(0)
    T, B, H = args.T, args.B, args.H
    xproj = (torch.randn(T, B, 4 * H, generator=g) * 0.5).to(dev, dtype).requires_grad_()
    w = (torch.randn(4 * H, H, generator=g) / H ** 0.5).to(dev, dtype).requires_grad_()
    h0 = torch.zeros(B, H, device=dev, dtype=dtype)
    c0 = torch.zeros(B, H, device=dev, dtype=dtype)

    def run():
        hs, hT, cT = core(xproj, w, h0, c0, None)
        (hs.float().square().sum() + hT.float().sum()).backward()
        torch.cuda.synchronize()

    import contextlib
    ctx = contextlib.nullcontext()
    if args.backend == "cuda":
        from charlstm.backends import cuda as cuda_backend
        ctx = cuda_backend.use_path(args.path)
    with ctx:
        for label in ("warm-up", "profiled"):
            run()
            extra = ""
            if args.backend == "cuda":
                from charlstm.backends import cuda as cuda_backend
                extra = f" paths {cuda_backend.last_path()}"
            print(f"{label}: {args.backend} T={T} B={B} H={H} {args.dtype}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
