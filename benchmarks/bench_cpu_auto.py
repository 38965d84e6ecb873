"""The measurements behind ``auto`` on a CPU: ``torch`` against ``reference`` per shape.

Usage (from the repository root)::

    python benchmarks/bench_cpu_auto.py                  # the grid below, < 5 minutes on 2 cores
    python benchmarks/bench_cpu_auto.py --seq 1 --batch 1 --hidden 128 512 --threads-list 1

``charlstm.LSTM(H, H)`` (one layer, float32) on ``[T, B, H]``, forward under ``torch.no_grad()``
(``fwd``: a sampling step, ``eval``) and forward + backward (``fwd+bwd``: training), with the
``torch`` backend (``nn.LSTM``: oneDNN on a CPU) and the ``reference`` backend (plain tensor ops,
one small matrix product per step) holding the same weights.  The two are timed interleaved
(rep 1 of each, rep 2 of each, ...) at each thread count of ``--threads-list`` (default: torch's
default and 1); each row gives the median time (``--metric``: wall, or process CPU time; the
JSON has both), ``ref/torch`` (> 1: torch is faster), the
faster one, and what ``auto`` picks (``charlstm.backends._cpu_auto``) with its cost against the
faster one (``auto/best``).  The numbers of the rule's docstring and of ``docs/benchmarks.md``
come from this script.  Output: ``bench_cpu_auto-<device kind>[-<tag>].json/.md``.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

GRID = dict(seq=[1, 4, 16, 64], batch=[1, 16, 64], hidden=[64, 128, 256, 512])
MODES = ("fwd", "fwd+bwd")
COLUMNS = [("threads", "threads"), ("mode", "mode"), ("seq", "T"), ("batch", "B"),
           ("hidden", "H"), ("torch_ms", "torch ms"), ("reference_ms", "reference ms"),
           ("ref_over_torch", "ref/torch"), ("faster", "faster"), ("auto", "auto picks"),
           ("auto_over_best", "auto/best")]


def call(model, x, mode: str):
    """One forward (no grad) or forward + backward of ``model`` on ``x``."""
    import torch
    if mode == "fwd":
        with torch.no_grad():
            return model(x)
    y, _ = model(x)
    y.sum().backward()
    return y


def measure(T: int, B: int, H: int, mode: str, reps: int) -> tuple:
    """Median wall ms and median process-CPU ms of the torch and reference backends on one
    shape, interleaved: ``({name: wall_ms}, {name: cpu_ms})``."""
    import torch

    import charlstm
    torch.manual_seed(0)
    models = {"torch": charlstm.LSTM(H, H, backend="torch")}
    models["reference"] = charlstm.LSTM(H, H, backend="reference")
    models["reference"].load_state_dict(models["torch"].state_dict())
    x = torch.randn(T, B, H, requires_grad=mode != "fwd")
    for m in models.values():
        call(m, x, mode)                       # warm-up (oneDNN primitive creation, op loading)
    wall, cpu = {n: [] for n in models}, {n: [] for n in models}
    for _ in range(reps):
        for n, m in models.items():
            w0, c0 = time.perf_counter(), time.process_time()
            call(m, x, mode)
            wall[n].append(time.perf_counter() - w0)
            cpu[n].append(time.process_time() - c0)
    return ({n: statistics.median(t) * 1e3 for n, t in wall.items()},
            {n: statistics.median(t) * 1e3 for n, t in cpu.items()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=GRID["seq"])
    ap.add_argument("--batch", type=int, nargs="+", default=GRID["batch"])
    ap.add_argument("--hidden", type=int, nargs="+", default=GRID["hidden"])
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--threads-list", type=int, nargs="+", default=None,
                    help="torch thread counts to measure at (default: torch's default, then 1)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--metric", choices=("wall", "cpu"), default="wall",
                    help="what 'faster' compares: wall time (a quiet machine), or process CPU "
                         "time (steadier on a busy one; meaningful at 1 thread)")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results/)")
    ap.add_argument("--tag", default=None, help="suffix for the output file names")
    args = ap.parse_args(argv)

    common.ensure_importable()
    import torch

    from charlstm.backends import _cpu_auto
    device = torch.device("cpu")
    env = common.environment(device)
    threads_list = args.threads_list or sorted({torch.get_num_threads(), 1}, reverse=True)
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        for mode, T, B, H in itertools.product(args.modes, args.seq, args.batch, args.hidden):
            wall, cpu = measure(T, B, H, mode, args.reps)
            ms = wall if args.metric == "wall" else cpu
            faster = min(ms, key=ms.get)
            auto = _cpu_auto(B, H, T)
            rows.append(dict(threads=threads, mode=mode, seq=T, batch=B, hidden=H,
                             torch_ms=ms["torch"], reference_ms=ms["reference"],
                             torch_wall_ms=wall["torch"], reference_wall_ms=wall["reference"],
                             torch_cpu_ms=cpu["torch"], reference_cpu_ms=cpu["reference"],
                             ref_over_torch=ms["reference"] / ms["torch"], faster=faster,
                             auto=auto, auto_over_best=ms[auto] / ms[faster]))
            print(f"threads={threads} {mode} T={T} B={B} H={H}: torch {ms['torch']:.3f} ms, "
                  f"reference {ms['reference']:.3f} ms -> {faster}; auto {auto}", flush=True)
    worst = max(rows, key=lambda r: r["auto_over_best"])
    notes = [f"auto's worst case here: {worst['auto_over_best']:.2f}x the faster backend "
             f"(threads={worst['threads']} {worst['mode']} T={worst['seq']} B={worst['batch']} "
             f"H={worst['hidden']})"]
    config = dict(vars(args), threads_list=threads_list, layer="charlstm.LSTM(H, H), 1 layer, "
                  "float32, input [T, B, H]",
                  timer="perf_counter and process_time, interleaved, median")
    return common.finish("bench_cpu_auto", args.tag, args.out, env, device, config, rows,
                         COLUMNS, title="auto on a CPU: torch vs reference per shape",
                         notes=notes)


if __name__ == "__main__":
    sys.exit(main())
