"""Sampling text from a checkpoint (``charlstm sample``)."""
from __future__ import annotations

import os
from typing import Callable, Optional, TextIO, Union

import torch
from torch import Tensor

from . import checkpoint as ckpt_io
from .data import describe_chars
from .runtime import resolve_device

__all__ = ["sample", "generate", "pick_next"]


def pick_next(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
              argmax: bool = False, generator: Optional[torch.Generator] = None) -> Tensor:
    """Next ids ``[N]`` from logits ``[N, V]``: argmax when ``argmax`` or ``temperature == 0``,
    else a draw from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest."""
    if argmax or temperature == 0:
        return logits.argmax(-1)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.inference_mode()
def generate(model, prime_ids: Optional[Tensor], length: int, *, num_samples: int = 1,
             temperature: float = 1.0, top_k: Optional[int] = None, argmax: bool = False,
             generator: Optional[torch.Generator] = None,
             on_chunk: Optional[Callable[[Tensor], None]] = None, chunk: int = 1) -> Tensor:
    """``[num_samples, length]`` generated ids (on the model's device).

    The prime (``[P]`` ids) is run once as one sequence; then each step feeds the chosen ids and
    carries the state.  Without a prime the first character is drawn uniformly from the
    vocabulary (char-rnn's behaviour) and counts as generated.  Ids stay on the device; every
    ``chunk`` steps the new columns are handed to ``on_chunk`` (one host copy per chunk).
    """
    dev = next(model.parameters()).device
    model.eval()
    N, V = num_samples, model.vocab_size
    out = torch.empty(N, length, dtype=torch.int64, device=dev)
    if length == 0:
        return out
    state = None
    if prime_ids is not None and len(prime_ids):
        x = prime_ids.to(dev, torch.int64).view(1, -1).expand(N, -1)
        logits, state = model(x, state)
        nxt = pick_next(logits[:, -1], temperature, top_k, argmax, generator)
    else:
        nxt = torch.randint(V, (N,), device=dev, generator=generator)
    flushed = 0
    for t in range(length):
        out[:, t] = nxt
        if on_chunk is not None and (t + 1 - flushed >= chunk or t + 1 == length):
            on_chunk(out[:, flushed:t + 1])
            flushed = t + 1
        if t + 1 < length:
            logits, state = model(nxt.view(N, 1), state)
            nxt = pick_next(logits[:, -1], temperature, top_k, argmax, generator)
    return out


def sample(checkpoint: Union[str, os.PathLike], *, length: int = 2000, temperature: float = 1.0,
           top_k: Optional[int] = None, prime: str = "", seed: int = 123, argmax: bool = False,
           num_samples: int = 1, device: str = "auto", backend: Optional[str] = "auto",
           stream: Optional[TextIO] = None) -> list[str]:
    """Generate ``num_samples`` independent texts of ``length`` characters after ``prime``.

    Returns the generated continuations (without the prime).  With ``stream`` (e.g.
    ``sys.stdout``) the prime and then the characters are written as they are made when
    ``num_samples == 1``; several samples are each written whole, after a header line
    ``--- sample k ---``.  Characters of ``prime`` missing from the vocabulary raise a
    ValueError naming them.  ``temperature == 0`` is ``argmax``.  ``backend`` defaults to
    ``auto`` whatever backend trained the checkpoint (None: the one saved in it).
    """
    if length < 0 or num_samples < 1:
        raise ValueError(f"length must be >= 0 and num_samples >= 1, got {length}, {num_samples}")
    ck, path = ckpt_io.load(checkpoint)
    model, vocab = ckpt_io.build_model(ck, path, backend=backend)
    bad = vocab.missing(prime)
    if bad:
        raise ValueError(f"--prime contains characters not in the vocabulary of {path} "
                         f"({len(vocab)} characters): {describe_chars(bad)}")
    dev = resolve_device(device)
    model.to(dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    prime_ids = vocab.encode(prime) if prime else None

    on_chunk = None
    if stream is not None and num_samples == 1:
        stream.write(prime)
        stream.flush()

        def on_chunk(ids: Tensor) -> None:
            stream.write(vocab.decode(ids[0]))
            stream.flush()

    ids = generate(model, prime_ids, length, num_samples=num_samples, temperature=temperature,
                   top_k=top_k, argmax=argmax, generator=gen, on_chunk=on_chunk,
                   chunk=1 if dev.type == "cpu" else 64)
    ids = ids.cpu()
    texts = [vocab.decode(row) for row in ids]
    if stream is not None:
        if num_samples == 1:
            stream.write("\n")
        else:
            for k, text in enumerate(texts):
                stream.write(f"--- sample {k} ---\n{prime}{text}\n")
        stream.flush()
    return texts
