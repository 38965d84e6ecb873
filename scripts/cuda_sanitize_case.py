#!/usr/bin/env python
"""A tiny forward + backward of the cuda backend's core on both paths, for compute-sanitizer.

Run under ``compute-sanitizer --tool memcheck|racecheck|synccheck python
scripts/cuda_sanitize_case.py`` (``scripts/gpu_check.sh`` does).  Shapes are small so that
the sanitizer finishes in seconds but still cover: several blocks, a batch that is not a
multiple of the 4-row register tile, two 16-row tensor-core chunks, chunked staging, packed
rows (lengths), every dtype, and
the persistent (cooperative, grid barrier), the stepwise and the tensor-core (persistent_tc)
path.  Checks the results
against the reference backend too.  Exits 0 when everything ran and matched, 1 otherwise, 2
when there is no usable GPU/backend.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from charlstm import backends  # noqa: E402

TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 4e-2}


def case(core, reference, path: str, dtype, T: int, B: int, H: int, packed: bool) -> list:
    from charlstm.backends import cuda as cuda_backend
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(T * 100 + B * 10 + H)
    xproj = (torch.randn(T, B, 4 * H, generator=g) * 0.5).to(dev, dtype)
    w = (torch.randn(4 * H, H, generator=g) / H ** 0.5).to(dev, dtype)
    h0 = (torch.randn(B, H, generator=g) * 0.5).to(dev, dtype)
    c0 = (torch.randn(B, H, generator=g) * 0.5).to(dev, dtype)
    lengths = None
    if packed:
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T
        lengths = lens.to(dev, torch.int32)
    args = (xproj, w, h0, c0, lengths)
    with cuda_backend.use_path(path):
        out = core.fwd_op(*args)
        hs, hT, cT, cs, gates = out
        seeds = (torch.randn_like(hs), torch.randn_like(hT), torch.randn_like(cT))
        bout = core.bwd_op(*seeds, w, c0, cs, gates, lengths)
    torch.cuda.synchronize()
    ran = cuda_backend.last_path()
    errors = []
    expect = {"forward": path, "backward": path}
    if path == "persistent_tc" and dtype == torch.float32:  # tensor cores for half types only
        expect = {"forward": "persistent", "backward": "persistent"}
    if ran != expect:
        errors.append(f"asked for {path}, ran {ran}")
    want = reference.forward(*args)
    bwant = reference.backward(*seeds, w, c0, want[3], want[4], lengths)
    names = ("hs", "hT", "cT", "cs", "gates", "dgates", "dh0", "dc0")
    for name, a, b in zip(names, tuple(out) + tuple(bout), tuple(want) + tuple(bwant)):
        err = (a.float() - b.float()).abs().max().item()
        scale = max(1.0, b.float().abs().max().item())
        if not err <= TOL[dtype] * scale:
            errors.append(f"{name}: max abs error {err:.3g} (tolerance {TOL[dtype] * scale:.3g})")
    label = f"{path:10s} {str(dtype):15s} T={T} B={B} H={H} packed={packed}"
    print(("ok    " if not errors else "FAIL  ") + label + "".join(f"\n      {e}" for e in errors))
    return errors


def main() -> int:
    why = backends.unavailable_reason("cuda", torch.device("cuda") if torch.cuda.is_available() else None)
    if why:
        print(f"cuda_sanitize_case: cannot run: {why}", file=sys.stderr)
        return 2
    from charlstm.backends import cuda as cuda_backend, reference
    torch.backends.cuda.matmul.allow_tf32 = False
    core = cuda_backend.core
    failures = 0
    canary_failed = os.environ.get("CHARLSTM_GPU_CANARY_FAILED", "").split()
    for path in ("persistent", "stepwise", "persistent_tc"):
        if f"cuda-{path}" in canary_failed:   # gpu_check's canary saw it fail or hang
            print(f"SKIP  {path}: scripts/gpu_canary.py cuda-{path} failed or hung")
            continue
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for T, B, H, packed in ((3, 5, 40, True), (2, 1, 7, False), (2, 17, 24, True)):
                try:
                    failures += bool(case(core, reference, path, dtype, T, B, H, packed))
                except Exception as e:  # noqa: BLE001 - report and count every failure
                    print(f"FAIL  {path} {dtype} T={T} B={B} H={H}: {type(e).__name__}: {e}")
                    failures += 1
    print(f"cuda_sanitize_case: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
