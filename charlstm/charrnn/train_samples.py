"""Samples of the model drawn while it trains (``charlstm train --sample-every N``).

Every ``N`` iterations the trainer draws one sample of ``length`` characters from the current
weights and records it three ways: a block printed under the progress bar, an entry appended to
``samples.md`` in the checkpoint directory, and a ``metrics.jsonl`` record::

    {"sample": TEXT, "iter": 500, "epoch": 0.43, "val_loss": 1.71 | null, "val_iter": 500 | null,
     "length": 200, "temperature": 1.0, "seed": 623}

``val_loss`` is the latest validation loss at that point (``val_iter`` says which iteration
measured it; the trainer validates before it samples, so when both fall on one iteration the
sample carries that iteration's loss).

The draw uses its own generator, seeded with ``seed + iteration``, and never the global RNG
streams, so sampling does not change the training run (the losses with and without
``--sample-every`` are identical) and a sample depends only on the weights at its iteration: a
resumed run draws the very samples an uninterrupted one draws.  ``samples.md`` is rendered from
the ``metrics.jsonl`` records: on ``--resume`` it is rewritten from the records kept (those up to
the checkpoint's iteration, see the trainer's metrics rewind) and continued, so entries are
neither duplicated nor lost.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch

from .sample import generate

__all__ = ["SAMPLES", "draw", "SampleLog"]

SAMPLES = "samples.md"


def draw(model, vocab, length: int, seed: int, temperature: float = 1.0) -> str:
    """One sample of ``length`` characters from ``model`` (no prime: the first character is
    drawn uniformly, as ``charlstm sample`` does), with a generator of its own."""
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    was_training = model.training
    try:
        ids = generate(model, None, length, temperature=temperature, generator=gen)
    finally:
        model.train(was_training)
    return vocab.decode(ids[0].cpu())


def _fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def describe(rec: dict) -> str:
    """``iteration 500 (epoch 0.43), val loss 1.7100`` for a sample record."""
    head = f"iteration {rec['iter']} (epoch {rec['epoch']:.2f})"
    if rec.get("val_loss") is None:
        return head + ", no validation loss yet"
    val = f"val loss {rec['val_loss']:.4f}"
    if rec.get("val_iter") != rec["iter"]:
        val += f" (measured at iteration {rec['val_iter']})"
    return f"{head}, {val}"


def entry(rec: dict) -> str:
    """The ``samples.md`` entry of one sample record."""
    fence = _fence(rec["sample"])
    return f"## {describe(rec)}\n\n{fence}text\n{rec['sample']}\n{fence}\n\n"


class SampleLog:
    """``samples.md`` in the checkpoint directory, kept in step with ``metrics.jsonl``."""

    def __init__(self, ckdir: Path, header: str) -> None:
        self.path = Path(ckdir) / SAMPLES
        self.header = header

    def rewrite(self, records: list) -> None:
        """Start the file over with the sample records already in ``metrics.jsonl``."""
        body = "".join(entry(r) for r in records if "sample" in r)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(f"# Samples during training\n\n{self.header}\n\n{body}", encoding="utf-8")
        tmp.replace(self.path)

    def append(self, rec: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(entry(rec))


def latest_val(records: list) -> tuple[Optional[int], Optional[float]]:
    """``(iteration, loss)`` of the last validation record (``(None, None)`` before any)."""
    for r in reversed(records):
        if r.get("split") == "val":
            return r["iter"], r["loss"]
    return None, None
