"""``charlstm`` command line: ``train``, ``sample``, ``eval``, ``viz``, ``info``.

This module only parses arguments and calls :func:`charlstm.charrnn.train`,
:func:`~charlstm.charrnn.sample`, :func:`~charlstm.charrnn.evaluate`,
:func:`charlstm.viz.visualize` and ``charlstm.info.main``.
Exit status: 0 on success, 1 when training diverged, 2 on a usage/data/checkpoint error,
130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .backends import BACKENDS, CHOICES, SELECTORS, validate_name

__all__ = ["main", "build_parser"]

#: ``--backend``'s metavar, from the registry: {auto,reference,torch,triton[:VARIANT],...}
BACKEND_METAVAR = "{" + ",".join(["auto"] + [b + ("[:VARIANT]" if b in SELECTORS else "")
                                             for b in BACKENDS]) + "}"


def backend_name(name: str) -> str:
    """``--backend``'s type: any name of :data:`charlstm.backends.CHOICES`, case-insensitive."""
    try:
        return validate_name(name)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown backend {name!r}: expected one of {', '.join(CHOICES)}") from None


def _add_train(sub) -> None:
    from .charrnn.data import DEFAULT_STDLIB_CAP
    from .charrnn.model import MODELS
    p = sub.add_parser("train", help="train a char-rnn model on a text",
                       description="Train a character-level language model (char-rnn): an "
                                   "LSTM, GRU or RNN. Defaults follow Karpathy's char-rnn.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None,
                   help="UTF-8 text file or directory of files (default: the bundled corpus, "
                        "this Python's standard-library sources)")
    g.add_argument("--stdlib-cap", type=int, default=DEFAULT_STDLIB_CAP,
                   help="size cap in bytes of the bundled corpus")
    g.add_argument("--train-frac", type=float, default=0.95)
    g.add_argument("--val-frac", type=float, default=0.05, help="test gets the rest")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, choices=tuple(MODELS),
                   help="the recurrent layer, as char-rnn's -model: lstm, gru or rnn (tanh); "
                        "default lstm, or with --resume / --init-from the checkpoint's")
    g.add_argument("--rnn-size", type=int, default=128)
    g.add_argument("--num-layers", type=int, default=2)
    g.add_argument("--dropout", type=float, default=0.0)
    g.add_argument("--backend", default="auto", type=backend_name, metavar=BACKEND_METAVAR,
                   help="the recurrent layer's backend")
    g = p.add_argument_group("optimisation")
    g.add_argument("--seq-length", type=int, default=50)
    g.add_argument("--batch-size", type=int, default=50,
                   help="global batch (streams); split across processes under torchrun")
    g.add_argument("--learning-rate", type=float, default=2e-3)
    g.add_argument("--lr-decay", type=float, default=0.97, help="factor per epoch")
    g.add_argument("--lr-decay-after", type=int, default=10, help="first epoch to decay after")
    g.add_argument("--grad-clip", type=float, default=5.0, help="elementwise gradient clamp")
    g.add_argument("--optimizer", default="rmsprop", choices=("rmsprop", "adamw"))
    g.add_argument("--max-epochs", type=float, default=50)
    g.add_argument("--max-iters", type=int, default=None, help="total iterations of the run")
    g.add_argument("--seed", type=int, default=123)
    g = p.add_argument_group("checkpoints and logging")
    g.add_argument("--eval-val-every", type=int, default=1000,
                   help="iterations between validation + checkpoint")
    g.add_argument("--checkpoint-dir", default="checkpoints")
    g.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start a new run from a checkpoint's weights and vocabulary")
    g.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue a run exactly (default: --checkpoint-dir's latest)")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="plain log lines instead of a progress bar")
    g.add_argument("--print-every", type=int, default=100,
                   help="iterations between log lines with --no-progress")
    g.add_argument("--no-plot", dest="plot", action="store_false", help="no loss_curve.png")
    g.add_argument("--sample-every", type=int, default=None, metavar="N",
                   help="a sample of the model every N iterations: printed, appended to "
                        "samples.md and metrics.jsonl (--resume keeps the run's value)")
    g.add_argument("--sample-length", type=int, default=200, metavar="L",
                   help="characters per --sample-every sample")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--dtype", default="float32", choices=("float32", "bf16", "fp16"),
                   help="autocast precision")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint file or directory (then its latest.pt)")
    p.add_argument("--length", type=int, default=2000,
                   help="characters to generate (at most, with --stop-at / --lines)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = argmax")
    p.add_argument("--top-k", type=int, default=None,
                   help="draw among the k likeliest characters")
    p.add_argument("--top-p", type=float, default=None,
                   help="nucleus sampling: draw among the likeliest characters holding this "
                        "much probability (after --top-k)")
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--prime-file", default=None, metavar="FILE",
                   help="UTF-8 file whose text is the prime (instead of --prime)")
    p.add_argument("--skip-unknown", action="store_true",
                   help="drop prime characters not in the vocabulary (with a note) instead of "
                        "stopping with an error")
    p.add_argument("--stop-at", default=None, metavar="STRING",
                   help="end a sample when STRING appears in its generated text (kept)")
    p.add_argument("--lines", type=int, default=None, metavar="N",
                   help="end a sample after its N-th generated newline")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--argmax", action="store_true", help="always take the likeliest character")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (a batch)")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto", type=backend_name, metavar=BACKEND_METAVAR,
                   help="the recurrent layer's backend (whatever trained the checkpoint); on a "
                        "CPU auto samples with the CPU step (docs/charrnn.md)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="on a GPU, replay each step from a CUDA graph (less launch overhead; "
                        "falls back to eager steps with a warning if capture fails)")


def _add_eval(sub) -> None:
    from .charrnn.data import DEFAULT_STDLIB_CAP
    p = sub.add_parser("eval", help="cross-entropy of a checkpoint on a text",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint file or directory (then its latest.pt)")
    p.add_argument("--data", default=None, help="text file or directory (default: the bundled "
                                                 "corpus)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seq-length", type=int, default=None,
                   help="chunk length (default: the checkpoint's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=("float32", "bf16", "fp16"))
    p.add_argument("--backend", default="auto", type=backend_name, metavar=BACKEND_METAVAR)
    p.add_argument("--stdlib-cap", type=int, default=DEFAULT_STDLIB_CAP,
                   help="size cap in bytes of the bundled corpus (without --data)")
    p.add_argument("--json", dest="json_output", action="store_true",
                   help="print one JSON object instead of the text report")


def _add_viz(sub) -> None:
    from .viz import DEFAULT_MAX_CHARS
    p = sub.add_parser("viz", help="an HTML page of a model's cells over a text",
                       description="Colour every character of a text by one cell's value "
                                   "(an LSTM's tanh(c) or h; a GRU's or RNN's h), with the "
                                   "model's top-5 guesses for the next character; one "
                                   "self-contained HTML file.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint file or directory (then its latest.pt)")
    p.add_argument("--text", required=True, metavar="FILE", help="UTF-8 text to run the model on")
    p.add_argument("--out", default="viz.html", metavar="PAGE", help="the HTML file to write")
    p.add_argument("--cell", default=None, metavar="L:N",
                   help="layer and cell shown first, both from 0 (default: the best --find "
                        "match, else 0:0)")
    p.add_argument("--kind", default=None, choices=("c", "h"),
                   help="c: tanh(c) (LSTM only), h: h (default: c for an LSTM, h otherwise)")
    p.add_argument("--find", action="store_true",
                   help="rank cells by how well they track quotes/strings, position in the "
                        "line, indentation, bracket depth, comments, newlines; print the best")
    p.add_argument("--png", default=None, metavar="FILE",
                   help="also a static figure of the view (matplotlib)")
    p.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS,
                   help="show the first N characters of the text")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto",
                   help="the recurrent layer's backend, any name train takes (auto: the "
                        "reference core, since torch/cuDNN keeps no per-step states)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="charlstm",
                                     description="charlstm: fused LSTM/GRU/RNN kernels and a "
                                                 "char-rnn trainer/sampler")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,eval,viz,info}")
    sub.required = True
    _add_train(sub)
    _add_sample(sub)
    _add_eval(sub)
    _add_viz(sub)
    sub.add_parser("info", help="versions and backend availability", add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "info":
        from . import info  # owned elsewhere; imported only when asked for
        return info.main(argv[1:])
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    from .backends import BackendUnavailable
    from .charrnn import CheckpointError, TrainingDiverged, evaluate, sample, train
    try:
        if command == "train":
            train(args.pop("data"), **args)
        elif command == "sample":
            sample(args.pop("checkpoint"), stream=sys.stdout, **args)
        elif command == "eval":
            evaluate(args.pop("checkpoint"), args.pop("data"), **args)
        elif command == "viz":
            from .viz import visualize
            visualize(args.pop("checkpoint"), args.pop("text"), **args)
    except TrainingDiverged as e:
        print(f"charlstm {command}: {e}", file=sys.stderr)
        return 1
    except (CheckpointError, BackendUnavailable, ValueError, FileNotFoundError) as e:
        print(f"charlstm {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"charlstm {command}: interrupted", file=sys.stderr)
        return 130
    return 0
