"""Choosing the next character from logits: the rules every sampling path shares."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["check_options", "filter_logits_", "pick_next"]


def filter_logits_(logits: Tensor, top_k: Optional[int] = None,
                   top_p: Optional[float] = None) -> Tensor:
    """Mask in place, to ``-inf``, the logits ``[N, V]`` (already divided by the temperature)
    of the characters a draw must not take, and return them.

    ``top_k``: keep the ``top_k`` largest of each row (and any equal to the k-th).  ``top_p``
    (nucleus sampling, after ``top_k``): keep the likeliest characters while the probability of
    the strictly likelier ones is below ``top_p`` -- the smallest set holding at least ``top_p``
    of the mass; the likeliest character always stays.  None (or ``top_k >= V``, ``top_p ==
    1``) keeps everything.  The one rule for the model path (:func:`pick_next`) and the CPU step
    (:class:`.cpu_step.CpuStep`)."""
    V = logits.shape[-1]
    if top_k is not None and top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits.masked_fill_(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ranked, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = torch.softmax(ranked, dim=-1)
        drop = (probs.cumsum(-1) - probs) >= top_p      # mass of the likelier ones >= top_p
        logits.masked_fill_(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def check_options(temperature: float, top_k: Optional[int], top_p: Optional[float]) -> None:
    """ValueError naming the option when a sampling option is out of range."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for all characters), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None for all characters), got {top_p}")


def pick_next(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
              argmax: bool = False, generator: Optional[torch.Generator] = None,
              top_p: Optional[float] = None) -> Tensor:
    """Next ids ``[N]`` from logits ``[N, V]``: argmax when ``argmax`` or ``temperature == 0``,
    else a draw from ``softmax(logits / temperature)`` restricted by ``top_k`` / ``top_p``
    (:func:`filter_logits_`)."""
    check_options(temperature, top_k, top_p)
    if argmax or temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits_(logits.float() / temperature, top_k, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
