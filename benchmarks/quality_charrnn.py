"""Quality at a fixed time budget: charlstm's CharRNN vs the same model on torch's own layer
(``torch.nn.LSTM``, ``nn.GRU`` or ``nn.RNN``, per ``--model``).

Both models train on tiny-shakespeare (``../shared/corpora/tinyshakespeare.txt`` from the project
root, char-rnn's 95/5 split; ``--data bundled``: charlstm's default corpus) with the same data
pipeline (char-rnn stream batches, carried state), the same initial weights (copied), optimizer
(RMSprop 2e-3, alpha 0.95), gradient clamp (5) and seed, each for ``--budget-s`` seconds of
*process CPU time* spent training (``time.process_time``, validation excluded; with
``--threads 1`` by default, so a busy shared machine slows the run down but does not change how
much work fits in the budget).  The only difference is the recurrent layer's class (the plain
model is the same ``CharRNN`` with its layer swapped for torch's, holding copies of the same
weights), so this measures what the charlstm layer costs or saves and checks that it learns as
well.  Prints a Markdown table and one JSON line.

    python benchmarks/quality_charrnn.py --budget-s 300 [--model lstm|gru|rnn] [--threads 1] \
        [--device cpu] [--backend auto] [--data bundled]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from charlstm.charrnn import CharRNN  # noqa: E402
from charlstm.charrnn.data import StreamBatcher, load_corpus, split  # noqa: E402
from charlstm.charrnn.evaluate import stream_loss  # noqa: E402
from charlstm.charrnn.model import MODELS  # noqa: E402
from charlstm.charrnn.train import batch_loss  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def plain_twin(model: CharRNN) -> CharRNN:
    """A copy of ``model`` whose recurrent layer is torch's own (``nn.LSTM``, ``nn.GRU`` or
    ``nn.RNN``) holding copies of the same weights: only the layer class differs."""
    from charlstm.family import make_layer
    rnn = model.rnn
    twin = copy.deepcopy(model)
    twin.rnn = make_layer(rnn.cell.name, rnn.input_size, rnn.hidden_size, plain=True,
                          num_layers=rnn.num_layers, dropout=rnn.dropout, batch_first=True)
    twin.rnn.load_state_dict(rnn.state_dict())
    return twin.to(next(model.parameters()).device)


def run(name, model, batcher, val_ids, args, dev):
    opt = torch.optim.RMSprop(model.parameters(), lr=args.learning_rate, alpha=0.95, eps=1e-8)
    torch.manual_seed(args.seed)
    hidden, it, spent, wall, curve = None, 0, 0.0, 0.0, []
    nb = len(batcher)
    while spent < args.budget_s:
        t0, w0 = time.process_time(), time.perf_counter()
        k = it % nb
        if k == 0:
            hidden = None
        x, y = batcher.batch(k)
        loss, hidden = batch_loss(model, x.to(dev), y.to(dev), hidden, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 5.0)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        spent += time.process_time() - t0
        wall += time.perf_counter() - w0
        it += 1
        if it % args.eval_every == 0:
            v = stream_loss(model, val_ids, 50, args.seq_length, dev)
            curve.append((it, round(spent, 1), v[0] / v[1]))
            print(f"{name}: iter {it}, {spent:.0f} CPU s, train loss {loss.item():.4f}, "
                  f"val loss {curve[-1][2]:.4f}", file=sys.stderr, flush=True)
    tot, n = stream_loss(model, val_ids, 50, args.seq_length, dev)
    return {"model": name, "iterations": it, "train_cpu_s": round(spent, 1),
            "train_wall_s": round(wall, 1),
            "chars_per_cpu_s": round(it * args.batch_size * args.seq_length / spent),
            "val_loss": round(tot / n, 4), "val_bits_per_char": round(tot / n / math.log(2), 4),
            "epochs": round(it / nb, 3), "curve": curve}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, default=300)
    p.add_argument("--model", default="lstm", choices=tuple(MODELS),
                   help="the recurrent layer (charlstm train --model)")
    p.add_argument("--rnn-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--seq-length", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--backend", default="auto")
    p.add_argument("--data", default=str(CORPUS),
                   help="a text file, or 'bundled' for charlstm's default corpus (stdlib sources)")
    args = p.parse_args(argv)
    if args.data == "bundled":
        args.data = None
    elif not Path(args.data).is_file():
        print(f"skipped: corpus {args.data} not found", file=sys.stderr)
        return 0
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.data)
    train_ids, val_ids, _ = split(corpus.ids, 0.95, 0.05)
    batcher = StreamBatcher(train_ids, args.batch_size, args.seq_length)
    torch.manual_seed(args.seed)
    ours = CharRNN(len(corpus.vocab), args.rnn_size, args.num_layers, backend=args.backend,
                   cell=args.model).to(dev)
    plain = plain_twin(ours)
    torch_name = f"nn.{type(plain.rnn).__name__}"
    results = [run(f"charlstm CharRNN --model {args.model} (backend {args.backend})", ours,
                   batcher, val_ids, args, dev),
               run(f"the same model on plain {torch_name}", plain, batcher, val_ids, args, dev)]
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": str(dev),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                       f"{platform.processor() or platform.platform()}",
            "torch": torch.__version__, "params": sum(q.numel() for q in ours.parameters()),
            "budget_s": args.budget_s, "model": args.model, "data": corpus.source,
            "vocab": len(corpus.vocab),
            "batch_size": args.batch_size, "seq_length": args.seq_length}
    print("| model | iterations | train CPU s | wall s | chars/CPU s | epochs | val loss (nats) "
          "| bits/char |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['iterations']} | {r['train_cpu_s']} | {r['train_wall_s']} | "
              f"{r['chars_per_cpu_s']:,} | "
              f"{r['epochs']} | {r['val_loss']} | {r['val_bits_per_char']} |")
    print(json.dumps({"meta": meta, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
