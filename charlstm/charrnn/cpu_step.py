"""``CpuStep``: one character of ``CharRNN`` sampling on a CPU in a few large numpy calls.

Why not the model itself: one step of a 2x128 model at batch 1 is ~0.5 MFLOP (~10 us of
arithmetic on one core), but a ``CharRNN`` forward costs ~30 torch calls of 2-5 us each plus
torch's CPU LSTM (oneDNN), whose per-call overhead alone is larger than the arithmetic.  numpy
calls on small arrays cost ~0.5 us, so the step is written as ~9 numpy calls per layer over
weights prepared once (``docs/charrnn.md``, "The CPU sampling step", has the measurements and
the alternatives that lost).  Pure numpy: nothing is compiled, at install or at run time.

Prepared weights (float32, from the model's own float32 parameters; only exact operations --
row permutation, concatenation, scaling by 1/2 -- except the first layer's table and the
temperature):

* gate rows reordered from torch's ``(i, f, g, o)`` to ``(g, f, i, o)`` and the sigmoid rows
  (f, i, o) halved, so that ONE ``tanh`` over all ``4H`` pre-activations gives ``tanh(g)`` and
  ``tanh(x/2)``, and ``sigmoid(x) = 0.5 * tanh(x/2) + 0.5`` is two calls on ``3H`` columns;
* layer 0: the embedding followed by the input projection is a per-character function, so it
  is a table ``[V, 4H] = embed.weight @ W_ih0^T + b_ih0 + b_hh0`` (one row read per step);
* layer ``l > 0``: ``[W_ih; b; W_hh]^T``, ``[2H + 1, 4H]``, multiplied by the contiguous slice
  ``[h_{l-1}, 1, h_l]`` of the state buffer ``X`` below: input, bias and recurrence in one
  matrix product, no copies;
* decoder: ``[W_dec; b_dec]^T / temperature``, ``[H + 1, V]``, times ``[h_{L-1}, 1]``.

State buffers: ``X [B, L*(H+1)] = [h_0, 1, h_1, 1, ..., h_{L-1}, 1]`` (each layer's new ``h`` is
written in place, where the next layer and the next step read it) and per layer
``R [B, 5H] = [c | g, f, i, o]`` (``c`` next to ``g`` and ``f, i`` in order, so that
``[c, g] * [f, i]`` is one call and ``c' = c*f + g*i`` one more).

Draws: Gumbel-max -- ``argmax(logits / T + G)`` with ``G = -log(-log(U))``, ``U`` uniform from
``torch.rand`` on the given generator, made in blocks of many steps at once -- is an exact draw
from ``softmax(logits / T)`` and costs one add and one argmax per step (~1 us at V = 65; a
numpy cumulative-sum search ~5 us, ``torch.softmax`` + ``torch.multinomial`` ~15 us).
``top_k`` / ``top_p`` first mask the logits to ``-inf`` with the same function the model path
uses (:func:`.draw.filter_logits_`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .draw import filter_logits_

__all__ = ["CpuStep", "cpu_step_reason"]

#: uniforms drawn per refill of the Gumbel noise (steps x batch x vocabulary), ~256 KiB
NOISE_BLOCK = 1 << 16


def cpu_step_reason(model) -> Optional[str]:
    """None when :class:`CpuStep` can run ``model``, else why not (one sentence)."""
    w = model.decoder.weight
    if w.device.type != "cpu":
        return f"the model is on {w.device}, the CPU step runs on the CPU"
    if w.dtype != torch.float32:
        return f"the model is {w.dtype}, the CPU step runs float32"
    rnn = model.rnn
    if rnn.bidirectional or rnn.proj_size or not rnn.bias:
        return "the CPU step runs a unidirectional LSTM with biases and no projection"
    return None


class CpuStep:
    """``CharRNN`` sampling for ``batch`` sequences on a CPU: ``step(ids) -> next ids``.

    ``ids`` and the result are int64 numpy arrays ``[batch]``.  ``argmax`` (or
    ``temperature == 0``) takes the likeliest character; otherwise a draw from
    ``softmax(logits / temperature)`` restricted by ``top_k`` / ``top_p``
    (:func:`.draw.filter_logits_`), with uniforms from ``torch.rand(generator=generator)``.
    ``length`` (a hint) bounds how many steps of noise are made ahead.

    The weights are copied when the object is made: later changes to the model are not seen.
    The state starts at zero; :meth:`load_state` / :meth:`state` move it in and out as torch
    tensors ``[num_layers, batch, rnn_size]`` (``[num_layers, 1, rnn_size]`` loads into every
    row).  Results match the model's (the ``reference`` backend) to float32 rounding: the
    products are summed in another order and ``sigmoid`` is ``0.5 * tanh(x / 2) + 0.5``.
    """

    def __init__(self, model, batch: int, *, temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None,
                 argmax: bool = False, generator: Optional[torch.Generator] = None,
                 length: int = NOISE_BLOCK) -> None:
        why = cpu_step_reason(model)
        if why:
            raise ValueError(f"CpuStep: {why}")
        if batch < 1:
            raise ValueError(f"CpuStep: batch must be >= 1, got {batch}")
        self.batch, self.greedy = batch, bool(argmax or temperature == 0)
        self.top_k, self.top_p, self.generator = top_k, top_p, generator
        self.inv_temperature = 1.0 if self.greedy else 1.0 / temperature
        L, H, V = model.num_layers, model.rnn_size, model.vocab_size
        self.num_layers, self.rnn_size, self.vocab_size = L, H, V
        self.table, weights, self.w_dec = self._prepare(model, self.inv_temperature)

        S = H + 1                                   # one layer's slot in X: [h_l, 1]
        self.X = np.zeros((batch, L * S), np.float32)
        self.X[:, H::S] = 1.0
        self.R = [np.zeros((batch, 5 * H), np.float32) for _ in range(L)]
        self.logits = np.empty((batch, V), np.float32)
        self._layers = []
        for k in range(L):
            R, P = self.R[k], np.empty((batch, 2 * H), np.float32)
            inp = self.X[:, :H] if k == 0 else self.X[:, (k - 1) * S:k * S + H]
            self._layers.append((inp, weights[k], R[:, H:], R[:, 2 * H:], R[:, :2 * H],
                                 R[:, 2 * H:4 * H], P, P[:, :H], P[:, H:], R[:, :H],
                                 self.X[:, k * S:k * S + H], R[:, 4 * H:]))
        self._dec_in = self.X[:, (L - 1) * S:L * S]
        self._noise_steps = max(1, min(length, NOISE_BLOCK // (batch * V)))
        self._noise, self._noise_pos = None, 0

    @staticmethod
    @torch.inference_mode()
    def _prepare(model, inv_temperature: float):
        """``(table [V, 4H], [W_0 [H, 4H], W_l [2H+1, 4H] ...], w_dec [H+1, V])`` as numpy."""
        H, rnn = model.rnn_size, model.rnn

        def gates_t(w: Tensor) -> np.ndarray:
            """``[4H, K] -> [K, 4H]``: gate blocks in (g, f, i, o), the sigmoid ones halved."""
            i, f, g, o = w.split(H)
            return torch.cat([g, f * 0.5, i * 0.5, o * 0.5]).t().contiguous().numpy()

        def bias(k: int) -> Tensor:
            return (getattr(rnn, f"bias_ih_l{k}") + getattr(rnn, f"bias_hh_l{k}"))[:, None]

        table = gates_t(torch.addmm(bias(0), rnn.weight_ih_l0, model.embed.weight.t()))
        weights = [gates_t(rnn.weight_hh_l0)]
        for k in range(1, model.num_layers):
            weights.append(gates_t(torch.cat([getattr(rnn, f"weight_ih_l{k}"), bias(k),
                                              getattr(rnn, f"weight_hh_l{k}")], dim=1)))
        w_dec = torch.cat([model.decoder.weight, model.decoder.bias[:, None]], dim=1)
        return table, weights, np.ascontiguousarray((w_dec * inv_temperature).t().numpy())

    # ------------------------------------------------------------------ state
    def load_state(self, h: Tensor, c: Tensor) -> None:
        """Set ``(h, c)`` from tensors ``[num_layers, batch or 1, rnn_size]``."""
        for k, lay in enumerate(self._layers):
            lay[10][...] = h[k].detach().float().numpy()
            lay[9][...] = c[k].detach().float().numpy()

    def state(self) -> tuple[Tensor, Tensor]:
        """A copy of ``(h, c)``, each ``[num_layers, batch, rnn_size]`` float32."""
        h = np.stack([lay[10] for lay in self._layers])
        c = np.stack([lay[9] for lay in self._layers])
        return torch.from_numpy(h), torch.from_numpy(c)

    # ------------------------------------------------------------------ step
    def forward(self, ids: np.ndarray) -> np.ndarray:
        """Feed ``ids [batch]``: advance the state one step and return ``logits / T``
        ``[batch, V]`` (a view of a buffer the next call overwrites)."""
        row = self.table[ids[0]] if self.batch == 1 else self.table[ids]   # layer 0's input
        for k, (inp, w, z, sig, cg, fi, p, p0, p1, c, h, o) in enumerate(self._layers):
            np.matmul(inp, w, out=z)
            if k == 0:
                z += row
            np.tanh(z, out=z)                       # tanh(g), tanh(f/2), tanh(i/2), tanh(o/2)
            sig *= 0.5
            sig += 0.5                              # sigmoid(f), sigmoid(i), sigmoid(o)
            np.multiply(cg, fi, out=p)              # [c * f, g * i]
            np.add(p0, p1, out=c)                   # c' = c * f + g * i
            np.tanh(c, out=h)
            h *= o                                  # h' = o * tanh(c')
        return np.matmul(self._dec_in, self.w_dec, out=self.logits)

    def draw(self, logits: np.ndarray) -> np.ndarray:
        """Next ids ``[batch]`` from ``logits / T`` ``[batch, V]`` (modified in place)."""
        if self.greedy:
            return logits.argmax(1)
        if self.top_k is not None or self.top_p is not None:
            filter_logits_(torch.from_numpy(logits), self.top_k, self.top_p)
        if self._noise is None or self._noise_pos == len(self._noise):
            self._refill_noise()
        logits += self._noise[self._noise_pos]
        self._noise_pos += 1
        return logits.argmax(1)

    def pick(self, logits: Tensor) -> np.ndarray:
        """Next ids from unscaled logits ``[batch or 1, V]`` (e.g. the prime's last step)."""
        np.multiply(logits.detach().float().numpy(), self.inv_temperature, out=self.logits)
        return self.draw(self.logits)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """One sampling step: feed ``ids [batch]``, return the next ids ``[batch]``."""
        return self.draw(self.forward(ids))

    def _refill_noise(self) -> None:
        """Gumbel noise ``-log(-log(U))`` for the next block of steps (``U = 0`` gives
        ``-inf``: that character is not drawn, a probability-2^-24 event)."""
        u = torch.rand(self._noise_steps, self.batch, self.vocab_size,
                       generator=self.generator).numpy()
        with np.errstate(divide="ignore"):
            np.log(u, out=u)
            np.negative(u, out=u)
            np.log(u, out=u)
        np.negative(u, out=u)
        self._noise, self._noise_pos = u, 0
