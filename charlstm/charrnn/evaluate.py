"""Loss of a model over a whole text, and ``charlstm eval``."""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Optional, TextIO, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import checkpoint as ckpt_io
from .data import DEFAULT_STDLIB_CAP, describe_chars, load_corpus
from .runtime import autocast, check_amp, parse_dtype, resolve_device

__all__ = ["stream_loss", "evaluate", "format_result"]


@torch.no_grad()
def stream_loss(model, ids: Tensor, batch_size: int, seq_length: int,
                device: torch.device, amp_dtype=None) -> tuple[float, int]:
    """Sum of next-character cross-entropies (nats) over ``ids`` and how many were scored.

    Every one of the ``len(ids) - 1`` predictions is scored exactly once.  The text is cut into
    ``S = min(batch_size, (len-1) // seq_length)`` (at least 1) contiguous streams, run in chunks
    of ``seq_length`` with the state carried; the few characters left over (fewer than ``S``)
    continue the last stream from its final state.  The model is put in eval mode and restored.
    """
    M = len(ids) - 1
    if M < 1:
        return 0.0, 0
    was_training = model.training
    model.eval()
    try:
        S = max(1, min(batch_size, M // seq_length))
        L = M // S
        used = S * L
        x = ids[:used].view(S, L)
        y = ids[1:used + 1].view(S, L)
        total = torch.zeros((), dtype=torch.float64, device=device)

        def run(xs, ys, state):
            with autocast(device, amp_dtype):
                logits, state = model(xs.to(device, torch.int64), state)
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                  ys.to(device, torch.int64).reshape(-1), reduction="sum")
            return nll.double(), state

        state = None
        for t in range(0, L, seq_length):
            nll, state = run(x[:, t:t + seq_length], y[:, t:t + seq_length], state)
            total += nll
        if used < M:
            last = tuple(s[:, -1:].contiguous() for s in state)
            tail_x = ids[used:M].view(1, -1)
            tail_y = ids[used + 1:M + 1].view(1, -1)
            for t in range(0, tail_x.shape[1], seq_length):
                nll, last = run(tail_x[:, t:t + seq_length], tail_y[:, t:t + seq_length], last)
                total += nll
        return float(total), M
    finally:
        model.train(was_training)


def format_result(r: dict) -> str:
    """The last line of ``charlstm eval``: ``loss 1.2345 nats, 1.7810 bits/char, N chars``."""
    return f"loss {r['loss']:.4f} nats, {r['bits_per_char']:.4f} bits/char, {r['chars']} chars"


def evaluate(checkpoint: Union[str, os.PathLike], data: Union[str, os.PathLike, None] = None, *,
             batch_size: int = 50, seq_length: Optional[int] = None, device: str = "auto",
             dtype: str = "float32", backend: Optional[str] = "auto", json_output: bool = False,
             stdlib_cap: int = DEFAULT_STDLIB_CAP, out: Optional[TextIO] = None) -> dict:
    """Mean next-character cross-entropy of a checkpoint's model on a text.

    ``data``: a file or directory (None: the bundled corpus, capped at ``stdlib_cap`` bytes).
    Characters not in the checkpoint's vocabulary are removed before scoring, counted and
    reported (not an error).  ``backend``: ``auto`` whatever trained the checkpoint (None: the
    one saved in it).
    Returns ``{"loss", "bits_per_char", "chars", "oov_chars", "oov", "checkpoint", "data"}``;
    writes a report to ``out`` (default: stdout; e.g. an ``io.StringIO`` to capture it)
    whose last line is :func:`format_result` (with ``json_output``: one JSON line instead).
    """
    out = sys.stdout if out is None else out
    ck, path = ckpt_io.load(checkpoint)
    model, vocab = ckpt_io.build_model(ck, path, backend=backend)
    dev = resolve_device(device)
    model.to(dev)
    corpus = load_corpus(data, stdlib_cap=stdlib_cap)
    ids, missing = corpus.vocab.remap(corpus.ids, vocab)
    if missing:
        ids = ids[ids >= 0]
    if seq_length is None:
        seq_length = int(ck.get("train_args", {}).get("seq_length", 50))
    if len(ids) < 2:
        raise ValueError(f"{corpus.source}: fewer than 2 in-vocabulary characters to score")
    amp_dtype = parse_dtype(dtype)
    check_amp(dev, amp_dtype)
    total, n = stream_loss(model, ids, batch_size, seq_length, dev, amp_dtype)
    loss = total / n
    result = {"loss": loss, "bits_per_char": loss / math.log(2), "chars": n,
              "oov_chars": sum(missing.values()), "oov": missing, "checkpoint": str(path),
              "data": corpus.source}
    if json_output:
        print(json.dumps(result, ensure_ascii=False), file=out)
    else:
        print(f"checkpoint {path}", file=out)
        print(f"data {corpus.source}", file=out)
        if missing:
            counts = ", ".join(f"{describe_chars([c])} x{k}" for c, k in sorted(missing.items()))
            print(f"skipped {result['oov_chars']} out-of-vocabulary characters "
                  f"({len(missing)} distinct: {counts})", file=out)
        print(format_result(result), file=out)
    return result
