#!/usr/bin/env python
"""One small forward + backward of one kernel path, to find out quickly whether it runs (and
does not hang) before the long GPU steps use it.  ``scripts/gpu_check.sh``'s ``canary`` step
runs each KIND under ``timeout``; a KIND that fails or hangs is recorded, and the later steps
steer around it (see ``tests/conftest.py``: ``CHARLSTM_GPU_CANARY_FAILED``).

    python scripts/gpu_canary.py triton-persistent | cuda-persistent | cuda-persistent_tc
    python scripts/gpu_canary.py triton-persistent --device cpu   # under TRITON_INTERPRET=1

Shapes make every multi-program barrier real: H = 200 over many programs, B = 20 over two
batch tiles (triton) or 16-row chunks (cuda), packed rows, T = 12.  The result is compared
with the reference backend (loosely: a canary, not a precision test).  Exit 0 when it ran and
matched, 1 on a mismatch or error, 2 when the path cannot run here.
"""
from __future__ import annotations

import contextlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

KINDS = ("triton-persistent", "cuda-persistent", "cuda-persistent_tc")


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu to check this "
                    "script itself under the Triton interpreter")
    args = ap.parse_args(argv)
    kind = args.kind
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU", file=sys.stderr)
        return 2
    from charlstm import backends
    from charlstm.backends import reference
    backend, path = kind.split("-", 1)
    dtype = torch.bfloat16 if path == "persistent_tc" else torch.float32
    why = backends.unavailable_reason(backend, dev, dtype)
    if why:
        print(f"{kind}: {why}", file=sys.stderr)
        return 2
    ctx = contextlib.nullcontext()
    if backend == "cuda":
        from charlstm.backends import cuda as cuda_backend
        ctx = cuda_backend.use_path(path)
    else:
        os.environ["CHARLSTM_TRITON_SCHEDULE"] = "persistent"
    core = backends.core_for(backend)
    T, B, H = 12, 20, 200
    g = torch.Generator().manual_seed(0)
    xproj = (torch.randn(T, B, 4 * H, generator=g) * 0.5).to(dev, dtype)
    w = (torch.randn(4 * H, H, generator=g) / H ** 0.5).to(dev, dtype)
    h0 = (torch.randn(B, H, generator=g) * 0.5).to(dev, dtype)
    c0 = (torch.randn(B, H, generator=g) * 0.5).to(dev, dtype)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    lengths = lengths.to(dev, torch.int32)
    seeds = [torch.randn(T, B, H, generator=g).to(dev, dtype),
             torch.randn(B, H, generator=g).to(dev, dtype), torch.randn(B, H, generator=g).to(dev, dtype)]

    def run(fn):
        args = [t.clone().requires_grad_() for t in (xproj, w, h0, c0)]
        outs = fn(*args, lengths)
        torch.autograd.backward(outs, seeds)
        return [o.detach().float() for o in outs] + [a.grad.float() for a in args]

    with ctx:
        got = run(core)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    want = run(reference.core)
    tol = 1e-3 if dtype == torch.float32 else 1e-1
    worst = max(((a - b).abs().max() / max(1.0, b.abs().max().item())).item()
                for a, b in zip(got, want))
    ran = ""
    if backend == "cuda":
        from charlstm.backends import cuda as cuda_backend
        ran = f" (ran {cuda_backend.last_path()})"
    print(f"{kind}: max relative error {worst:.3g} (tolerance {tol}){ran}")
    return 0 if worst <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
