"""char-rnn training throughput (characters/s) per backend and dtype, end to end.

Usage (from the repository root)::

    python benchmarks/bench_train.py                         # char-rnn defaults, every backend
    python benchmarks/bench_train.py --dtypes float32 bfloat16 --iters 50 --out DIR

One iteration = ``CharRNN`` forward on a ``[batch, seq]`` slice of the corpus, cross-entropy loss,
backward, char-rnn's elementwise gradient clamp (5) and an RMSprop step (lr 2e-3, alpha 0.95):
what training does, minus data loading and logging.  The model is char-rnn's default (2 layers of
128, batch 50, seq 50) unless told otherwise.  float32 runs the model in float32; float16 and
bfloat16 run it under ``torch.autocast`` with float32 master weights (float16 adds a GradScaler),
which is how one trains in those dtypes.

Characters/s = ``batch * seq / median iteration time``.  The text is the shared corpus
(``../shared/corpora/tinyshakespeare.txt``) when it exists, random tokens otherwise (the JSON
says which; throughput does not depend on it).  Output: ``bench_train-<device kind>.json/.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

COLUMNS = [("backend", "backend"), ("dtype", "dtype"), ("batch", "B"), ("seq", "T"),
           ("rnn_size", "H"), ("num_layers", "L"), ("median_ms", "ms/iter"),
           ("chars_per_s", "chars/s"), ("speedup_vs_torch", "x torch"),
           ("loss_first", "loss first"),
           ("loss_last", "loss last"), ("peak_mem_mib", "peak MiB"), ("error", "error")]


def train_step_fn(model, tokens, args, device, dtype):
    """A closure doing one training iteration on the next batch; returns (fn, losses list)."""
    import torch
    import torch.nn.functional as F
    B, T = args.batch, args.seq
    n = tokens.numel() - T - 1
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, n, (max(64, args.iters + args.warmup_iters + 2), B), generator=g)
    offs = torch.arange(T + 1)
    batches = [tokens[(s.unsqueeze(1) + offs)].to(device) for s in starts]   # each [B, T+1]
    opt = torch.optim.RMSprop(model.parameters(), lr=2e-3, alpha=0.95)
    amp = dtype != torch.float32
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    losses, it = [], [0]

    def fn():
        xy = batches[it[0] % len(batches)]
        it[0] += 1
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            logits, _ = model(xy[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                   xy[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                p.grad.clamp_(-5, 5)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        losses.append(loss.detach())
    return fn, losses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtypes", nargs="+", default=None,
                    help="default: float32 bfloat16 float16 on GPU, float32 on CPU")
    ap.add_argument("--rnn-size", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--seq", type=int, default=50)
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (GPU 50, CPU 5)")
    ap.add_argument("--warmup-iters", type=int, default=None, help="untimed (GPU 10, CPU 2)")
    common.add_common_args(ap)
    args = ap.parse_args(argv)

    import torch
    device, CharRNN = common.setup_charrnn_run(args)
    gpu = device.type == "cuda"
    args.iters = args.iters or (50 if gpu else 5)
    args.warmup_iters = args.warmup_iters if args.warmup_iters is not None else (10 if gpu else 2)
    dtypes = args.dtypes or (["float32", "bfloat16", "float16"] if gpu else ["float32"])
    tokens, vocab, source = common.corpus_tokens()
    env = common.environment(device)
    rows, notes = [], [f"text: {source}"]
    for dname in dtypes:
        dtype = common.parse_dtype(dname)
        names, skipped = common.select_backends(args.backends, device, dtype)
        notes += [f"skipped {n} ({common.dtype_name(dtype)}): {why}" for n, why in skipped.items()]
        torch_ms = None
        for name in names:
            row = dict(backend=name, dtype=common.dtype_name(dtype), batch=args.batch, seq=args.seq,
                       rnn_size=args.rnn_size, num_layers=args.num_layers, vocab=vocab)
            torch.manual_seed(0)
            try:
                model = CharRNN(vocab, args.rnn_size, args.num_layers, backend=name).to(device)
                model.train()
                fn, losses = train_step_fn(model, tokens, args, device, dtype)
                r = common.time_fn(fn, device, warmup=args.warmup_iters, reps=args.iters)
            except (RuntimeError, ValueError, NotImplementedError) as e:
                row["error"] = f"{type(e).__name__}: {e}"[:200]
                rows.append(row)
                print(f"{name} {row['dtype']}: error {row['error']}", flush=True)
                continue
            row.update(median_ms=r["median_ms"], peak_mem_mib=r["peak_mem_mib"], timer=r["timer"],
                       iters=r["reps"], chars_per_s=args.batch * args.seq / (r["median_ms"] * 1e-3),
                       loss_first=float(losses[0]), loss_last=float(losses[-1]))
            if name == "torch":
                torch_ms = r["median_ms"]
            if torch_ms:
                row["speedup_vs_torch"] = torch_ms / r["median_ms"]
            rows.append(row)
            print(f"{name} {row['dtype']}: {row['chars_per_s']:.0f} chars/s", flush=True)
            del model, fn
    config = dict(vars(args), text=source, vocab=vocab,
                  step="CharRNN fwd + CE + backward + clamp(5) + RMSprop(2e-3, 0.95)")
    return common.finish("bench_train", args.tag, args.out, env, device, config, rows, COLUMNS,
                         title="char-rnn training throughput", notes=notes)


if __name__ == "__main__":
    sys.exit(main())
