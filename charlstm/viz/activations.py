"""Run a char-rnn model over a text and keep what the page shows: every layer's ``tanh(c)``
(LSTM only) and ``h`` at every character, and the model's top guesses for the next character.

The states come from the layer's ``return_state_sequence`` option (with ``backend="auto"`` on a
device where ``auto`` means cuDNN / torch's layer, that call runs the ``reference`` core, which
keeps every layer's steps and every step's ``c``).  A GRU or RNN model has no cell state: its
activations hold ``h`` alone.  The text is fed in chunks with the state carried, so memory
stays bounded for long texts; the result is the same as one pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Activations", "record"]


@dataclass
class Activations:
    """What the model did on ``text`` (one entry per character ``t``, after reading it)."""

    text: str
    cells: dict            # {"c": tanh(c), "h": h} (LSTM) or {"h": h}: float32 [L, T, H]
    top_ids: np.ndarray    # int64 [T, K]: the K likeliest next characters (vocabulary ids)
    top_probs: np.ndarray  # float32 [T, K]: their probabilities
    next_prob: np.ndarray  # float32 [T]: probability of the text's actual next character
    #                        (NaN at the last character)
    vocab: str

    @property
    def layers(self) -> int:
        return self.cells["h"].shape[0]

    @property
    def hidden(self) -> int:
        return self.cells["h"].shape[2]


@torch.no_grad()
def record(model, vocab, text: str, *, top_k: int = 5, chunk: int = 1024) -> Activations:
    """Feed ``text`` (characters of ``vocab`` only) through ``model`` (a :class:`CharRNN`) from a
    zero state, in eval mode."""
    if not text:
        raise ValueError("record: the text is empty")
    dev = next(model.parameters()).device
    model.eval()
    ids = vocab.encode(text).to(dev, torch.int64).view(1, -1)
    k = min(top_k, model.vocab_size)
    cs, hs, top_ids, top_probs, next_prob = [], [], [], [], []
    state = None
    for start in range(0, ids.shape[1], chunk):
        x = ids[:, start:start + chunk]
        out, state, seqs = model.rnn(model.embed(x), state, return_state_sequence=True)
        h_seq, c_seq = seqs if isinstance(seqs, tuple) else (seqs, None)
        probs = torch.softmax(model.decoder(out[0]).float(), dim=-1)        # [t, V]
        top = probs.topk(k, dim=-1)
        top_ids.append(top.indices.cpu())
        top_probs.append(top.values.cpu())
        following = ids[0, start + 1:start + 1 + x.shape[1]]               # the next characters
        p_next = torch.full((x.shape[1],), float("nan"), device=dev)
        p_next[:len(following)] = probs[torch.arange(len(following), device=dev), following]
        next_prob.append(p_next.cpu())
        if c_seq is not None:
            cs.append(c_seq[:, 0].float().tanh().cpu())                     # [L, t, H]
        hs.append(h_seq[:, 0].float().cpu())
    cells = {"c": torch.cat(cs, 1).numpy()} if cs else {}
    cells["h"] = torch.cat(hs, 1).numpy()
    return Activations(text=text, cells=cells,
                       top_ids=torch.cat(top_ids).numpy(), top_probs=torch.cat(top_probs).numpy(),
                       next_prob=torch.cat(next_prob).numpy(), vocab=vocab.chars)
