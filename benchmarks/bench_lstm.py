"""Benchmark charlstm's recurrent layers per backend against ``torch`` (cuDNN on a GPU): the LSTM,
and the GRU and RNN cells with ``--cells`` or a row's cell field.

Usage (from the repository root)::

    python benchmarks/bench_lstm.py --quick                    # small grid, < 1 minute
    python benchmarks/bench_lstm.py                            # the full grid (GPU: long)
    python benchmarks/bench_lstm.py --row 16,1024,768,bfloat16 # one full-size row (repeatable;
                                                               #   B,T,H,dtype[,layers[,cell]])
    python benchmarks/bench_lstm.py --row 16,1024,768,bf16,1,gru   # the same shape, a GRU
    python benchmarks/bench_lstm.py --quick --cells lstm gru rnn_tanh   # the grid per cell
    python benchmarks/bench_lstm.py --latency                  # per-step latency, B=1, H=512
    python benchmarks/bench_lstm.py --quick --row ... --latency --out DIR   # sections combine

Full grid: batch (1, 8, 32, 64, 128, 256) x hidden (128, 256, 512, 1024, 2048) x seq (64, 512) x
layers (1, 3) x dtype (float32, float16, bfloat16) x {forward, forward+backward}, for the LSTM
(``--cells``: each cell, ``lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu``); input size =
hidden, unidirectional.  Every row has a ``cell``; its ``torch`` row is torch's layer of that
cell (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``: cuDNN's on a GPU), so a GRU row's speed-up is
against cuDNN's GRU.  Every backend of a configuration sees the same weights and inputs.  Each
kernel path of ``charlstm.backends.variants()`` is timed on its own (``triton:persistent``,
``triton:sequence``, ``triton:step``, ``cuda:persistent_tc``, ``cuda:persistent``,
``cuda:stepwise``; ``--backends triton`` means all of triton's); a row's ``ran_path`` appears
where another path ran (``cuda:persistent_tc`` runs ``cuda:persistent`` for float32), and forcing
a persistent path on a shape it cannot hold is an error row.

Each row: median time (CUDA events on a GPU, ``time.perf_counter`` on a CPU, after warm-up),
speed-up over ``torch`` measured in the same run (``torch_ms / ms``; > 1 is faster), achieved
TFLOP/s (``2*T*B*G*H*(I+H)`` per layer forward with G gates, 4 for the LSTM; backward counted as
2x forward), and peak memory
(``torch.cuda.max_memory_allocated`` for one call; n/a on a CPU).

Output under ``benchmarks/results/`` (or ``--out``): ``bench_lstm-<device kind>[-<tag>].json``
(environment + grid + rows), ``.md`` (tables) and ``.png`` (speed-up over torch vs batch, one
line per hidden size).  On a CPU the default backends are ``torch`` and ``reference``; the
Triton interpreter runs only when named in ``--backends``.
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

FULL_GRID = dict(batch=[1, 8, 32, 64, 128, 256], hidden=[128, 256, 512, 1024, 2048], seq=[64, 512],
                 layers=[1, 3], dtype=["float32", "float16", "bfloat16"])
QUICK_GRID = {
    "cuda": dict(batch=[1, 8, 64, 256], hidden=[256, 1024], seq=[512], layers=[1],
                 dtype=["float16", "bfloat16"]),
    "cpu": dict(batch=[1, 8, 32], hidden=[64, 128], seq=[32], layers=[1], dtype=["float32"]),
}
MODES = ("fwd", "fwd+bwd")
LATENCY = dict(batch=1, hidden=512, seq={"cuda": 4096, "cpu": 256})

TITLE = "charlstm recurrent-layer benchmark (LSTM, GRU, RNN)"
#: the cells a row may name (the contract's)
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")

COLUMNS = [("section", "section"), ("cell", "cell"), ("backend", "backend"), ("dtype", "dtype"),
           ("batch", "B"),
           ("seq", "T"), ("hidden", "H"), ("layers", "L"), ("mode", "mode"),
           ("median_ms", "ms"), ("speedup_vs_torch", "x torch"), ("tflops", "TFLOP/s"),
           ("us_per_step", "us/step"), ("peak_mem_mib", "peak MiB"), ("error", "error")]


def parse_row(text: str) -> dict:
    """``"B,T,H,dtype[,layers[,cell]]"`` -> a config dict; a clear error on anything else."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (4, 5, 6):
        raise argparse.ArgumentTypeError(f"--row expects B,T,H,dtype[,layers[,cell]], got "
                                         f"{text!r}")
    try:
        b, t, h = (int(p) for p in parts[:3])
        layers = int(parts[4]) if len(parts) >= 5 else 1
        dtype = common.dtype_name(common.parse_dtype(parts[3]))
        cell = parse_cell(parts[5]) if len(parts) == 6 else "lstm"
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--row {text!r}: {e}") from None
    return dict(batch=b, seq=t, hidden=h, layers=layers, dtype=dtype, cell=cell)


def parse_cell(text: str) -> str:
    """A cell name of :data:`CELLS`; ValueError listing them otherwise."""
    if text not in CELLS:
        raise ValueError(f"unknown cell {text!r}: expected one of {', '.join(CELLS)}")
    return text


def grid_configs(grid: dict) -> list[dict]:
    return [dict(batch=b, seq=t, hidden=h, layers=n, dtype=d, cell=c)
            for c in grid["cell"] for d in grid["dtype"] for n in grid["layers"]
            for t in grid["seq"] for h in grid["hidden"] for b in grid["batch"]]


def make_case(cfg: dict, device, seed: int = 0):
    """Weights (a state_dict) and inputs shared by every backend of one configuration."""
    import torch

    from charlstm.family import make_layer
    dtype = common.parse_dtype(cfg["dtype"])
    g = torch.Generator().manual_seed(seed)
    H, B, T = cfg["hidden"], cfg["batch"], cfg["seq"]
    base = make_layer(cfg["cell"], H, H, num_layers=cfg["layers"], device="meta")  # shapes only
    state = {k: ((torch.rand(v.shape, generator=g) * 2 - 1) / H ** 0.5).to(device, dtype)
             for k, v in base.state_dict().items()}
    x = torch.randn(T, B, H, generator=g).to(device, dtype)
    dy = torch.randn(T, B, H, generator=g).to(device, dtype)
    return state, x, dy


def measure(cfg: dict, backends: list[str], device, modes, warmup: int, reps: int,
            section: str) -> list[dict]:
    """Time every backend on one configuration; the first backend must be ``torch``."""
    import torch

    from charlstm.backends.contract import cell_of
    from charlstm.family import make_layer
    rows = []
    dtype = common.parse_dtype(cfg["dtype"])
    try:
        state, x, dy = make_case(cfg, device)
    except RuntimeError as e:     # e.g. out of memory for the largest shapes
        return [dict(cfg, section=section, backend=b, mode=m, error=f"setup: {e}"[:200])
                for b in backends for m in modes]
    torch_ms = {}
    for name in backends:
        try:
            model = make_layer(cfg["cell"], cfg["hidden"], cfg["hidden"],
                               num_layers=cfg["layers"], backend=name, device=device,
                               dtype=dtype)
            model.load_state_dict(state)
        except (RuntimeError, *common_errors()) as e:
            rows += [dict(cfg, section=section, backend=name, mode=m,
                          error=f"setup: {type(e).__name__}: {e}"[:200]) for m in modes]
            continue
        xg = x.detach().requires_grad_(True)
        for mode in modes:
            if mode == "fwd":
                def fn(model=model):
                    with torch.no_grad():
                        return model(x)
            else:
                def fn(model=model, xg=xg):
                    y, _ = model(xg)
                    y.backward(dy)
            row = dict(cfg, section=section, backend=name, mode=mode)
            try:
                r = common.time_fn(fn, device, warmup=warmup, reps=reps)
                path = common.ran_differently(name)
                if path:
                    row["ran_path"] = path
            except (RuntimeError, *common_errors()) as e:
                row["error"] = f"{type(e).__name__}: {e}"[:200]
                rows.append(row)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            row.update(median_ms=r["median_ms"], min_ms=r["min_ms"], timer=r["timer"],
                       reps=r["reps"], peak_mem_mib=r["peak_mem_mib"])
            flops = common.rnn_flops(cfg["seq"], cfg["batch"], cfg["hidden"], cfg["hidden"],
                                     cfg["layers"], backward=mode != "fwd",
                                     gates=cell_of(cfg["cell"]).gates)
            row["tflops"] = flops / (r["median_ms"] * 1e-3) / 1e12
            row["us_per_step"] = r["median_ms"] * 1e3 / cfg["seq"]
            if name == "torch":
                torch_ms[mode] = r["median_ms"]
            if mode in torch_ms:
                row["ratio_to_torch"] = r["median_ms"] / torch_ms[mode]
                row["speedup_vs_torch"] = torch_ms[mode] / r["median_ms"]
            rows.append(row)
        model = xg = fn = None     # free this backend's model before the next one is built
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def common_errors():
    """Exceptions a backend may raise for a shape it does not support (recorded, not fatal)."""
    import charlstm
    return (charlstm.BackendUnavailable, ValueError, NotImplementedError)


def plot(rows: list[dict], path: Path, title: str) -> bool:
    """Speed-up over torch vs batch size; one panel per (backend, mode, dtype), one line per H.

    Uses the grid section only, at its longest sequence and fewest layers.  Returns False (and
    writes nothing) when there is nothing to plot.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grid = [r for r in rows if r["section"] == "grid" and r.get("speedup_vs_torch")
            and r["backend"] != "torch"]
    if not grid:
        return False
    T = max(r["seq"] for r in grid)
    L = min(r["layers"] for r in grid)
    grid = [r for r in grid if r["seq"] == T and r["layers"] == L]
    panels = sorted({(r["backend"], r["mode"], r["dtype"], r.get("cell", "lstm")) for r in grid})
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (b, m, d, c) in zip(axes.flat, panels):
        for h in sorted({r["hidden"] for r in grid}):
            pts = sorted((r["batch"], r["speedup_vs_torch"]) for r in grid
                         if (r["backend"], r["mode"], r["dtype"], r.get("cell", "lstm"),
                             r["hidden"]) == (b, m, d, c, h))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"H={h}")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{b} {m} {d}" + ("" if c == "lstm" else f" {c}") + f" (T={T}, L={L})",
                     fontsize=9)
        ax.set_xlabel("batch")
        ax.set_ylabel("speed-up over torch")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small grid (< 1 minute)")
    ap.add_argument("--row", action="append", type=parse_row, default=[], metavar="B,T,H,DTYPE[,L]",
                    help="add one configuration (repeatable); alone (no --quick/--grid/axis "
                    "override) only the rows run")
    ap.add_argument("--latency", action="store_true",
                    help="per-step latency: B=1, H=512, forward, time/T for a long T")
    ap.add_argument("--latency-seq", type=int, default=None, help="T for --latency")
    ap.add_argument("--latency-dtype", default=None, help="dtype for --latency "
                    "(default bfloat16 on GPU, float32 on CPU)")
    ap.add_argument("--grid", action="store_true",
                    help="run the full grid even with --row/--latency")
    ap.add_argument("--batch", type=int, nargs="+", help="override the grid's batch sizes")
    ap.add_argument("--hidden", type=int, nargs="+", help="override the grid's hidden sizes")
    ap.add_argument("--seq", type=int, nargs="+", help="override the grid's sequence lengths")
    ap.add_argument("--layers", type=int, nargs="+", help="override the grid's layer counts")
    ap.add_argument("--dtypes", nargs="+", help="override the grid's dtypes")
    ap.add_argument("--cells", nargs="+", type=parse_cell, metavar="CELL",
                    help=f"the grid's cells (default lstm; {', '.join(CELLS)})")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--no-plot", action="store_true")
    common.add_common_args(ap)
    args = ap.parse_args(argv)

    import torch
    common.ensure_importable()
    device = common.pick_device(args.device)
    common.apply_threads(args)
    if device.type == "cpu":
        common.set_interpreter_if_no_gpu()
    kind = "cuda" if device.type == "cuda" else "cpu"
    warmup = args.warmup if args.warmup is not None else (10 if kind == "cuda" else 2)
    reps = args.reps if args.reps is not None else (30 if kind == "cuda" else 5)

    overrides = any((args.batch, args.hidden, args.seq, args.layers, args.dtypes, args.cells))
    run_grid = args.grid or args.quick or overrides or not (args.row or args.latency)
    grid = dict(QUICK_GRID[kind] if args.quick else FULL_GRID, cell=["lstm"])
    for key, arg in (("batch", args.batch), ("hidden", args.hidden), ("seq", args.seq),
                     ("layers", args.layers), ("dtype", args.dtypes), ("cell", args.cells)):
        if arg:
            grid[key] = arg
    grid["dtype"] = [common.dtype_name(common.parse_dtype(d)) for d in grid["dtype"]]

    plan = []   # (section, cfg, modes)
    if run_grid:
        plan += [("grid", c, args.modes) for c in grid_configs(grid)]
    plan += [("row", c, args.modes) for c in args.row]
    lat = None
    if args.latency:
        lat = dict(batch=LATENCY["batch"], hidden=LATENCY["hidden"], layers=1, cell="lstm",
                   seq=args.latency_seq or LATENCY["seq"][kind],
                   dtype=common.dtype_name(common.parse_dtype(
                       args.latency_dtype or ("bfloat16" if kind == "cuda" else "float32"))))
        plan.append(("latency", lat, ["fwd"]))

    env = common.environment(device)
    config = {"grid": grid if run_grid else None, "rows": args.row, "latency": lat,
              "modes": args.modes, "warmup": warmup, "reps": reps, "backends": args.backends,
              "input_size": "= hidden", "bidirectional": False,
              "flops": "2*T*B*G*H*(I+H) per layer forward (G gates: LSTM 4, GRU 3, RNN 1); "
                       "fwd+bwd = 3x forward"}
    tag = args.tag or ("quick" if args.quick else None)
    rows, skipped_all = [], {}
    torch.manual_seed(0)
    for i, (section, cfg, modes) in enumerate(plan):
        names, skipped = common.select_backends(args.backends, device,
                                                common.parse_dtype(cfg["dtype"]), variants=True,
                                                cell=cfg["cell"])
        for n, why in skipped.items():
            skipped_all.setdefault(f"{n} ({cfg['dtype']}, {cfg['cell']})", why)
        new = measure(cfg, names, device, modes, warmup, reps, section)
        rows += new
        done = [f"{r['backend']}/{r['mode']}=" + (common.fmt(r.get('median_ms')) + "ms"
                                                 if "error" not in r else "error") for r in new]
        print(f"[{i + 1}/{len(plan)}] {section} {cfg['cell']} B={cfg['batch']} T={cfg['seq']} "
              f"H={cfg['hidden']} L={cfg['layers']} {cfg['dtype']}: {' '.join(done)}", flush=True)
        if i + 1 < len(plan):   # a killed run (timeout, hung kernel) keeps what it measured
            common.write_partial("bench_lstm", tag, args.out, env, config, rows, COLUMNS,
                                 title=TITLE, done=i + 1, total=len(plan))

    draw = None if args.no_plot else (
        lambda png: plot(rows, png, f"speed-up over torch, {env['device_name']}"))
    return common.finish("bench_lstm", tag, args.out,
                         env, device, config, rows, COLUMNS, title=TITLE,
                         notes=[f"skipped {k}: {v}" for k, v in skipped_all.items()], plot=draw)


if __name__ == "__main__":
    sys.exit(main())
