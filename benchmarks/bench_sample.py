"""char-rnn sampling throughput (characters/s): charlstm against a plain ``nn.LSTM`` sampling loop.

Usage (from the repository root)::

    python benchmarks/bench_sample.py --cpu                      # CPU: model sizes x batches
    python benchmarks/bench_sample.py --cpu --sizes 2x128 --batches 1     # one row group
    python benchmarks/bench_sample.py                            # GPU: per backend, + CUDA graph
    python benchmarks/bench_sample.py --batches 1 64 --length 500 --dtypes float32 bfloat16

Sampling = one character per step for every sequence of the batch, from a fresh state, at
temperature 1.  Rows:

* ``plain-nn.LSTM``: the baseline, the loop a user writes without charlstm -- ``nn.Embedding`` +
  ``torch.nn.LSTM`` + ``nn.Linear`` holding the very same weights, called on ``[B, 1]`` with the
  carried state under ``torch.no_grad()``, softmax, ``torch.multinomial``, feed it back -- at
  torch's default thread count (cuDNN step by step on a GPU).
* ``plain-nn.LSTM@1thread`` (CPU): the same loop with ``torch.set_num_threads(1)``.
* ``charlstm-sample`` (CPU): what ``charlstm sample`` runs on a CPU --
  ``charlstm.charrnn.sample.generate`` with the CPU step (numpy, one thread; setting up its
  weights is inside the timed call; ``setup_ms`` is that part alone).
* ``<backend>`` (``--backends``; default on a GPU: every available one): the plain loop with
  ``CharRNN`` on that backend; on a GPU also ``<backend>+cuda-graph``, the step replayed from a
  CUDA graph (``charlstm sample --cuda-graph``).

On a CPU the rows of one configuration are timed interleaved (rep 1 of every row, then rep 2,
...), so that a shared machine's load hits them alike; each rep runs ``length`` steps.
``chars/s`` is ``B * length / median wall time``; ``chars/CPU-s`` divides by the median process
CPU time instead (the rate per core busy, steadier on a loaded machine; ``cpu/wall`` above 1
means more than one thread ran, below 1 that the machine was busy).  ``x plain`` (and ``x
plain@1t``) are ratios of wall times to the baseline measured in the same run.  ``GFLOP/s`` counts
the model's arithmetic, ``2 * (8H^2 per layer + H*V)`` per character (the input projection of
layer 0 counted, though the CPU step reads it from a table).  ``--cpu`` sets
``OPENBLAS_NUM_THREADS=1`` (unless set) before numpy loads, so that the CPU step runs on one
core.  Output: ``bench_sample-<device kind>[-<tag>].json/.md`` (``benchmarks/results/``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

BASELINE = "plain-nn.LSTM"
BASELINE_1T = "plain-nn.LSTM@1thread"
CPU_STEP = "charlstm-sample"
GRAPHED = "+cuda-graph"   # suffix of the rows whose step is replayed from a CUDA graph (GPU)
CPU_SIZES = ["1x64", "1x128", "2x128", "2x256", "2x512", "3x512"]
CPU_BATCHES = [1, 4, 16, 64]
COLUMNS = [("backend", "row"), ("dtype", "dtype"), ("batch", "B"), ("num_layers", "L"),
           ("rnn_size", "H"), ("length", "steps"), ("threads", "threads"), ("median_ms", "ms"),
           ("chars_per_s", "chars/s"), ("chars_per_cpu_s", "chars/CPU-s"),
           ("cpu_per_wall", "cpu/wall"), ("gflops", "GFLOP/s"),
           ("speedup_vs_plain", "x plain"), ("speedup_vs_plain_1t", "x plain@1t"),
           ("setup_ms", "setup ms"), ("error", "error")]


class PlainCharRNN:
    """The sampling baseline: embedding, ``torch.nn.LSTM`` and decoder holding CharRNN's weights."""

    def __init__(self, charrnn):
        import torch
        from torch import nn
        rnn = charrnn.rnn
        self.embed = charrnn.embed
        self.decoder = charrnn.decoder
        self.lstm = nn.LSTM(rnn.input_size, rnn.hidden_size, rnn.num_layers, batch_first=True)
        w = charrnn.decoder.weight
        self.lstm = self.lstm.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            self.lstm.load_state_dict(rnn.state_dict())
        self.lstm.eval()

    def __call__(self, idx, state=None):
        out, state = self.lstm(self.embed(idx), state)
        return self.decoder(out), state


def sample_fn(model, batch: int, length: int, vocab: int, device, seed: int = 0):
    """A closure sampling ``length`` characters for ``batch`` sequences from a fresh state."""
    import torch
    gen = torch.Generator(device=device)

    def fn():
        gen.manual_seed(seed)
        idx = torch.zeros(batch, 1, dtype=torch.long, device=device)
        state = None
        with torch.no_grad():
            for _ in range(length):
                logits, state = model(idx, state)
                probs = torch.softmax(logits[:, -1].float(), dim=-1)
                idx = torch.multinomial(probs, 1, generator=gen)
        return idx
    return fn


def one_thread(fn):
    """``fn`` run with ``torch.set_num_threads(1)`` (the thread count restored after)."""
    import torch

    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)
    return run


def cpu_step_fn(model, batch: int, length: int, seed: int = 0):
    """What ``charlstm sample`` runs on a CPU: ``generate`` with the CPU step, no prime."""
    import torch

    from charlstm.charrnn.sample import generate
    gen = torch.Generator()

    def fn():
        gen.manual_seed(seed)
        return generate(model, None, length, num_samples=batch, generator=gen, cpu_step=True)
    return fn


def sample_fn_graphed(model, batch: int, length: int, device, seed: int = 0):
    """The same loop as :func:`sample_fn` with the step replayed from a CUDA graph
    (``charlstm.charrnn.sample.GraphedStep``, what ``charlstm sample --cuda-graph`` runs); the
    capture happens here, outside the timed calls.  Each call starts from a zero state."""
    import torch

    from charlstm.charrnn.sample import GraphedStep
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    with torch.inference_mode():
        ids = torch.zeros(batch, dtype=torch.long, device=device)
        step = GraphedStep(model, None, ids, temperature=1.0, top_k=None, argmax=False,
                           generator=gen).capture()

    def fn():
        gen.manual_seed(seed)
        with torch.inference_mode():
            step.ids.zero_()
            for t in step.state:
                t.zero_()
            for _ in range(length):
                idx = step()
        return idx
    return fn


def parse_size(text: str) -> tuple:
    """``"2x128"`` -> ``(2, 128)`` (layers x hidden)."""
    try:
        layers, hidden = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LAYERSxHIDDEN such as 2x128, got {text!r}") from None
    return layers, hidden


def flops_per_char(layers: int, hidden: int, vocab: int) -> float:
    """2 x the model's multiply-adds per character: ``4H x 2H`` per layer, ``H x V`` decoder."""
    return 2.0 * (layers * 8 * hidden * hidden + hidden * vocab)


def time_interleaved(fns: dict, reps: int) -> dict:
    """``{name: (wall_s list, cpu_s list)}``: one warm-up call each, then ``reps`` rounds that
    call every function once, in turn (the load of a shared machine hits them alike)."""
    for fn in fns.values():
        fn()
    times = {name: ([], []) for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name][0].append(time.perf_counter() - w0)
            times[name][1].append(time.process_time() - c0)
    return times


def setup_ms(model, batch: int) -> float:
    """The shortest of 5 builds of the CPU step's weights and buffers (included in its rows;
    the shortest, because a busy machine only ever adds to it)."""
    from charlstm.charrnn.cpu_step import CpuStep
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        CpuStep(model, batch)
        ts.append(time.perf_counter() - t0)
    return min(ts) * 1e3


def run_cpu(args, CharRNN, device, length: int, reps: int) -> tuple:
    """The CPU table: every size x batch, plain loops and the CPU step (and ``--backends``'
    model-step loops), interleaved per configuration."""
    import torch
    rows = []
    sizes = args.sizes or [parse_size(s) for s in CPU_SIZES]
    batches = args.batches or CPU_BATCHES
    threads = torch.get_num_threads()
    for layers, hidden in sizes:
        flop = flops_per_char(layers, hidden, args.vocab)
        torch.manual_seed(0)
        model = CharRNN(args.vocab, hidden, layers).eval()
        plain = PlainCharRNN(model)
        for batch in batches:
            fns = {BASELINE: sample_fn(plain, batch, length, args.vocab, device),
                   BASELINE_1T: one_thread(sample_fn(plain, batch, length, args.vocab, device)),
                   CPU_STEP: cpu_step_fn(model, batch, length)}
            for name in args.backends or []:
                m = CharRNN(args.vocab, hidden, layers, backend=name).eval()
                m.load_state_dict(model.state_dict())
                fns[name] = sample_fn(m, batch, length, args.vocab, device)
            times = time_interleaved(fns, reps)
            wall = {n: statistics.median(w) for n, (w, _) in times.items()}
            for name, (_, c) in times.items():
                row = dict(backend=name, dtype="float32", batch=batch, length=length,
                           rnn_size=hidden, num_layers=layers, reps=reps, timer="perf_counter",
                           threads=1 if name in (BASELINE_1T, CPU_STEP) else threads,
                           median_ms=wall[name] * 1e3, cpu_ms=statistics.median(c) * 1e3,
                           chars_per_s=batch * length / wall[name],
                           chars_per_cpu_s=batch * length / max(statistics.median(c), 1e-9),
                           cpu_per_wall=statistics.median(c) / wall[name],
                           speedup_vs_plain=wall[BASELINE] / wall[name],
                           speedup_vs_plain_1t=wall[BASELINE_1T] / wall[name])
                row["gflops"] = row["chars_per_s"] * flop / 1e9
                if name == CPU_STEP:
                    row["setup_ms"] = setup_ms(model, batch)
                rows.append(row)
            print(f"{layers}x{hidden} B={batch}: " + ", ".join(
                f"{n} {batch * length / wall[n]:.0f}" for n in fns) + " chars/s", flush=True)
    return rows, []


def run_gpu(args, CharRNN, device, length: int, reps: int) -> tuple:
    """The GPU table: per dtype and batch, the plain loop and every backend (+ CUDA graph)."""
    import torch
    rows, notes = [], []
    layers, hidden = (args.sizes or [(2, 128)])[0]
    flop = flops_per_char(layers, hidden, args.vocab)
    dtypes = args.dtypes or ["float32", "bfloat16", "float16"]
    for dname in dtypes:
        dtype = common.parse_dtype(dname)
        names, skipped = common.select_backends(args.backends, device, dtype)
        notes += [f"skipped {n} ({common.dtype_name(dtype)}): {why}" for n, why in skipped.items()]
        torch.manual_seed(0)
        model = CharRNN(args.vocab, hidden, layers).to(device=device, dtype=dtype).eval()
        candidates = [(BASELINE, PlainCharRNN(model))] + [(n, None) for n in names]
        if not args.no_graph:   # the same backends with the step in a CUDA graph
            candidates += [(n + GRAPHED, None) for n in names]
        for batch in args.batches or [1, 64]:
            plain_ms = None
            for name, m in candidates:
                row = dict(backend=name, dtype=common.dtype_name(dtype), batch=batch, length=length,
                           rnn_size=hidden, num_layers=layers)
                graphed = name.endswith(GRAPHED)
                if m is None:
                    model.backend = name[:-len(GRAPHED)] if graphed else name
                    m = model
                try:
                    fn = (sample_fn_graphed(m, batch, length, device) if graphed
                          else sample_fn(m, batch, length, args.vocab, device))
                    r = common.time_fn(fn, device, warmup=1, reps=reps, measure_memory=False)
                except (RuntimeError, ValueError, NotImplementedError) as e:
                    row["error"] = f"{type(e).__name__}: {e}"[:200]
                    rows.append(row)
                    continue
                row.update(median_ms=r["median_ms"], timer=r["timer"], reps=r["reps"],
                           chars_per_s=batch * length / (r["median_ms"] * 1e-3),
                           us_per_step=r["median_ms"] * 1e3 / length)
                row["gflops"] = row["chars_per_s"] * flop / 1e9
                if name == BASELINE:
                    plain_ms = r["median_ms"]
                if plain_ms:
                    row["speedup_vs_plain"] = plain_ms / r["median_ms"]
                rows.append(row)
                print(f"{name} {row['dtype']} B={batch}: {row['chars_per_s']:.0f} chars/s",
                      flush=True)
    return rows, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true",
                    help="the CPU table (same as --device cpu): sizes x batches, plain loops and "
                         "the CPU step, timed interleaved")
    ap.add_argument("--sizes", type=parse_size, nargs="+", default=None, metavar="LxH",
                    help=f"model sizes, layers x hidden (CPU default: {' '.join(CPU_SIZES)}; "
                         f"GPU: 2x128, one size)")
    ap.add_argument("--batches", type=int, nargs="+", default=None,
                    help=f"batch sizes (CPU default: {CPU_BATCHES}; GPU: 1 64)")
    ap.add_argument("--length", type=int, default=None, help="steps per sample (GPU 500, CPU 300)")
    ap.add_argument("--dtypes", nargs="+", default=None,
                    help="GPU: default float32 bfloat16 float16 (the CPU table is float32)")
    ap.add_argument("--rnn-size", type=int, default=None,
                    help="one model size with --num-layers (instead of --sizes; default 128)")
    ap.add_argument("--num-layers", type=int, default=None, help="see --rnn-size (default 2)")
    ap.add_argument("--vocab", type=int, default=65, help="vocabulary size (65: tiny shakespeare)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (GPU 5, CPU 5)")
    ap.add_argument("--no-graph", action="store_true",
                    help="GPU: skip the '<backend>+cuda-graph' rows (the step replayed from a "
                         "CUDA graph, as `charlstm sample --cuda-graph` runs it)")
    common.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.cpu:
        args.device = "cpu"
    if args.sizes is None and (args.rnn_size or args.num_layers):
        args.sizes = [(args.num_layers or 2, args.rnn_size or 128)]
    if args.device == "cpu":   # before numpy loads: the CPU step's BLAS on one core
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    device, CharRNN = common.setup_charrnn_run(args)
    gpu = device.type == "cuda"
    length = args.length or (500 if gpu else 300)
    reps = args.reps or 5
    env = common.environment(device)
    env["openblas_num_threads"] = os.environ.get("OPENBLAS_NUM_THREADS")
    rows, notes = (run_gpu if gpu else run_cpu)(args, CharRNN, device, length, reps)
    config = dict(vars(args), length=length, reps=reps,
                  loop="CharRNN([B,1], state) -> softmax -> multinomial, per step; "
                       "charlstm-sample: generate() with the CPU step",
                  baseline="nn.Embedding + torch.nn.LSTM + nn.Linear with the same weights",
                  flops_per_char="2 * (8 H^2 per layer + H V)")
    config["sizes"] = [f"{n}x{h}" for n, h in (args.sizes or [])] or None
    if not gpu:
        notes.append(f"Rows of one configuration timed interleaved; torch threads "
                     f"{env['torch_threads']} for {BASELINE} and the --backends rows, 1 for "
                     f"{BASELINE_1T} and {CPU_STEP}; OPENBLAS_NUM_THREADS="
                     f"{env['openblas_num_threads']}.")
    return common.finish("bench_sample", args.tag, args.out, env, device, config, rows, COLUMNS,
                         title="char-rnn sampling throughput", notes=notes)


if __name__ == "__main__":
    sys.exit(main())
