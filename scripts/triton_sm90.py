"""Compile charlstm's Triton kernels ahead of time for sm_90 (no GPU needed); optionally report
what ptxas says about each build (registers per thread, spill bytes).

    python scripts/triton_sm90.py OUT_DIR [--set test|report] [--cells lstm,gru,...] [--ptxas]

Each build is one kernel (``fwd``: :func:`charlstm.backends.triton.forward.lstm_fwd_kernel`,
``bwd``: :func:`...backward.lstm_bwd_kernel`) for one cell (the ``CELL`` constexpr), dtype,
with or without ``lengths``, with or without the persistent schedule's grid barrier (compiled
with ``launch_cooperative_grid``, as :func:`run_schedule` launches it), tiles and warps.  For
each it writes ``OUT_DIR/<name>.ptx`` and ``OUT_DIR/<name>.json`` (the compiled kernel's
``launch_cooperative_grid`` metadata; with ``--ptxas`` also ``regs``, ``spill_stores``,
``spill_loads`` from ``ptxas -v`` for sm_90a) and prints one line.

Sets: ``test`` -- what ``tests/test_triton_kernels.py`` checks (every dtype for the LSTM, with
and without the barrier; the barrier builds of the other cells in float32 and bfloat16), named
``<kernel>-<cell>-<dtype>-<sync|plain>``; ``report`` -- a spread of tile configurations per
cell, named ``<kernel>-<cell>-<dtype>-<BB>x<BH>x<BK>-w<warps>-<sync|plain>[-resident]``, for
comparing register pressure (docs/triton.md quotes it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)   # compile for real, whatever the caller set
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from charlstm.backends.contract import CELLS  # noqa: E402
from charlstm.backends.triton.backward import lstm_bwd_kernel  # noqa: E402
from charlstm.backends.triton.common import dot_slots  # noqa: E402
from charlstm.backends.triton.forward import lstm_fwd_kernel  # noqa: E402

KERNELS = {"fwd": lstm_fwd_kernel, "bwd": lstm_bwd_kernel}
#: pointer arguments in float32 whatever the input dtype (saved tensors, carries)
FP32_PTRS = {"cs_ptr", "gates_ptr", "dhbuf_ptr", "cellbuf_ptr"}


def signature(kernel, dtype: str) -> dict:
    """Triton's signature for ``kernel`` with input dtype ``dtype`` (``fp32``/``fp16``/``bf16``)."""
    out = {}
    for prm in kernel.params:
        n = prm.name
        if prm.is_constexpr:
            out[n] = "constexpr"
        elif n == "len_ptr":
            out[n] = "*i32"
        elif n == "sync_ptr":
            out[n] = "*i64"
        elif n.endswith("_ptr"):
            out[n] = "*fp32" if n in FP32_PTRS else "*" + dtype
        else:
            out[n] = "i32"
    return out


def build(kernel: str, cell: str, dtype: str, *, lengths: bool, sync: bool, block_b: int,
          block_h: int, block_k: int, warps: int, resident: bool = False):
    """One ahead-of-time compile for sm_90 -> the compiled kernel."""
    fn = KERNELS[kernel]
    consts = dict(CELL=cell, HAS_LENGTHS=lengths, DOT_F32=False,
                  PRECISION="ieee" if dtype == "fp32" else "tf32", GRID_SYNC=sync,
                  XCACHE=".cg" if sync else "", BLOCK_B=block_b, BLOCK_H=block_h,
                  BLOCK_K=block_k)
    if kernel == "fwd":
        consts["W_RESIDENT"] = resident
    # run_schedule launches the barrier grids cooperatively: compile them that way
    return triton.compile(ASTSource(fn, signature(fn, dtype), constexprs=consts),
                          target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps, num_stages=2,
                                       launch_cooperative_grid=sync))


def ptxas_report(ptx: str) -> dict:
    """``ptxas -v`` for sm_90a (the ptxas Triton itself uses) -> regs and spill bytes."""
    from triton.backends.nvidia import compiler as nvc
    ptxas = nvc.get_ptxas(90).path
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([ptxas, "-arch=sm_90a", "-v", src, "-o", os.path.join(tmp, "k.o")],
                           capture_output=True, text=True)
    text = r.stdout + r.stderr
    m = re.search(r"Used (\d+) registers", text)
    if r.returncode or not m:
        raise RuntimeError(f"ptxas failed: {text[-2000:]}")
    return {"regs": int(m.group(1)),
            "spill_stores": int(re.search(r"(\d+) bytes spill stores", text).group(1)),
            "spill_loads": int(re.search(r"(\d+) bytes spill loads", text).group(1))}


#: the ``test`` set's (dtype, lengths, barrier) per cell: every dtype for the LSTM, the barrier
#: builds of the others (the dtypes split between the two RNNs, whose code differs only in the
#: activation), which is what the compile and PTX checks need at the least compile time
TEST_COMBOS = {
    "lstm": (("fp32", False, False), ("fp16", True, False), ("bf16", True, False),
             ("fp32", False, True), ("fp16", True, True), ("bf16", True, True)),
    "gru": (("fp32", False, True), ("bf16", True, True)),
    "rnn_tanh": (("bf16", True, True),),
    "rnn_relu": (("fp32", False, True),),
}


def test_builds(cells):
    """The ``test`` set: (name, kernel, cell, dtype, options)."""
    for cell in cells:
        combos = TEST_COMBOS[cell]
        for dtype, lengths, sync in combos:
            blocks = dict(block_b=16, block_h=32, block_k=32, warps=4)
            for kernel in ("fwd", "bwd"):
                kw = dict(blocks, lengths=lengths, sync=sync)
                if kernel == "fwd" and sync:
                    # the persistent forward's narrow tile with W_hh register-resident
                    kw.update(block_h=max(8, 16 // dot_slots(cell)), block_k=256, resident=True)
                yield (f"{kernel}-{cell}-{dtype}-{'sync' if sync else 'plain'}", kernel, cell,
                       dtype, kw)


#: the ``report`` set's tiles: (BLOCK_B, BLOCK_H, BLOCK_K, warps, barrier, W_RESIDENT)
REPORT_TILES = [(16, 32, 32, 4, False, False), (16, 64, 64, 4, False, False),
                (64, 64, 64, 8, False, False), (16, 16, 64, 4, True, False),
                (16, 8, 64, 4, True, False), (32, 32, 64, 4, True, False),
                (16, 8, 256, 4, True, True), (16, 16, 512, 8, True, True)]


def report_builds(cells):
    for cell in cells:
        for dtype in ("fp32", "bf16"):
            for bb, bh, bk, w, sync, res in REPORT_TILES:
                for kernel in ("fwd", "bwd"):
                    narrowest = 16 // dot_slots(cell) if kernel == "fwd" else 16
                    if bh < narrowest or (res and kernel == "bwd"):
                        continue
                    name = (f"{kernel}-{cell}-{dtype}-{bb}x{bh}x{bk}-w{w}-"
                            f"{'sync' if sync else 'plain'}{'-resident' if res else ''}")
                    yield name, kernel, cell, dtype, dict(
                        lengths=True, sync=sync, block_b=bb, block_h=bh, block_k=bk, warps=w,
                        resident=res)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--set", choices=("test", "report"), default="test")
    ap.add_argument("--cells", default=",".join(CELLS),
                    help=f"comma-separated cells (default: all of {', '.join(CELLS)})")
    ap.add_argument("--ptxas", action="store_true", help="also report ptxas's registers/spills")
    args = ap.parse_args(argv)
    cells = [c for c in args.cells.split(",") if c]
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        ap.error(f"unknown cell(s) {unknown}: expected some of {', '.join(CELLS)}")
    os.makedirs(args.out_dir, exist_ok=True)
    builds = test_builds(cells) if args.set == "test" else report_builds(cells)
    for name, kernel, cell, dtype, kw in builds:
        k = build(kernel, cell, dtype, **kw)
        if not k.asm.get("cubin"):
            raise RuntimeError(f"{name}: no cubin")
        meta = {"launch_cooperative_grid": getattr(k.metadata, "launch_cooperative_grid", None)}
        if args.ptxas:
            meta.update(ptxas_report(k.asm["ptx"]))
        stem = os.path.join(args.out_dir, name)
        with open(stem + ".ptx", "w") as f:
            f.write(k.asm["ptx"])
        with open(stem + ".json", "w") as f:
            json.dump(meta, f)
        extra = (f" regs {meta['regs']} spill stores {meta['spill_stores']} loads "
                 f"{meta['spill_loads']}" if args.ptxas else "")
        print(f"{name} ok{extra}", flush=True)


if __name__ == "__main__":
    main()
