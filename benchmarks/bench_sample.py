"""char-rnn sampling throughput (characters/s) at batch 1 and 64, per backend, against plain
nn.LSTM.

Usage (from the repository root)::

    python benchmarks/bench_sample.py
    python benchmarks/bench_sample.py --batches 1 64 --length 500 --dtypes float32 bfloat16

Sampling = one character per step for every sequence of the batch: ``CharRNN`` forward on
``[B, 1]`` with the carried state, softmax of the logits (temperature 1), one
``torch.multinomial`` draw, feed it back.  The baseline, ``plain-nn.LSTM``, is the same loop written
here with ``nn.Embedding`` + ``torch.nn.LSTM`` + ``nn.Linear`` carrying the very same weights (so on
a GPU it is cuDNN called step by step, as a user would write it without charlstm).  Models run in
the dtype itself (no autocast), in eval mode under ``torch.no_grad()``.

Characters/s = ``B * length / time`` (median of the timed repetitions, each a full ``length``
steps from a fresh state).  On a GPU each backend also gets a ``<backend>+cuda-graph`` row: the
same step captured once in a CUDA graph and replayed (``charlstm sample --cuda-graph``).
Output: ``bench_sample-<device kind>.json/.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

BASELINE = "plain-nn.LSTM"
GRAPHED = "+cuda-graph"   # suffix of the rows whose step is replayed from a CUDA graph (GPU)
COLUMNS = [("backend", "backend"), ("dtype", "dtype"), ("batch", "B"), ("length", "steps"),
           ("rnn_size", "H"), ("num_layers", "L"), ("median_ms", "ms"),
           ("chars_per_s", "chars/s"), ("us_per_step", "us/step"),
           ("speedup_vs_plain", "x plain nn.LSTM"), ("error", "error")]


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--length", type=int, default=None, help="steps per sample (GPU 500, CPU 100)")
    ap.add_argument("--dtypes", nargs="+", default=None,
                    help="default: float32 bfloat16 float16 on GPU, float32 on CPU")
    ap.add_argument("--rnn-size", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=65, help="vocabulary size (65: tiny shakespeare)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (GPU 5, CPU 3)")
    ap.add_argument("--no-graph", action="store_true",
                    help="GPU: skip the '<backend>+cuda-graph' rows (the step replayed from a "
                         "CUDA graph, as `charlstm sample --cuda-graph` runs it)")
    common.add_common_args(ap)
    args = ap.parse_args(argv)

    import torch
    device, CharRNN = common.setup_charrnn_run(args)
    gpu = device.type == "cuda"
    length = args.length or (500 if gpu else 100)
    reps = args.reps or (5 if gpu else 3)
    dtypes = args.dtypes or (["float32", "bfloat16", "float16"] if gpu else ["float32"])
    env = common.environment(device)
    rows, notes = [], []
    for dname in dtypes:
        dtype = common.parse_dtype(dname)
        names, skipped = common.select_backends(args.backends, device, dtype)
        notes += [f"skipped {n} ({common.dtype_name(dtype)}): {why}" for n, why in skipped.items()]
        torch.manual_seed(0)
        model = CharRNN(args.vocab, args.rnn_size, args.num_layers).to(device=device, dtype=dtype)
        model.eval()
        candidates = [(BASELINE, PlainCharRNN(model))] + [(n, None) for n in names]
        if gpu and not args.no_graph:   # the same backends with the step in a CUDA graph
            candidates += [(n + GRAPHED, None) for n in names]
        for batch in args.batches:
            plain_ms = None
            for name, m in candidates:
                row = dict(backend=name, dtype=common.dtype_name(dtype), batch=batch, length=length,
                           rnn_size=args.rnn_size, num_layers=args.num_layers)
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
                if name == BASELINE:
                    plain_ms = r["median_ms"]
                if plain_ms:
                    row["speedup_vs_plain"] = plain_ms / r["median_ms"]
                rows.append(row)
                print(f"{name} {row['dtype']} B={batch}: {row['chars_per_s']:.0f} chars/s",
                      flush=True)
    config = dict(vars(args), length=length, reps=reps, dtypes=dtypes,
                  loop="CharRNN([B,1], state) -> softmax -> multinomial, per step",
                  baseline="nn.Embedding + torch.nn.LSTM + nn.Linear with the same weights")
    return common.finish("bench_sample", args.tag, args.out, env, device, config, rows, COLUMNS,
                         title="char-rnn sampling throughput", notes=notes)


if __name__ == "__main__":
    sys.exit(main())
