"""``CpuStep``: one character of ``CharRNN`` sampling on a CPU in a few large numpy calls.

Why not the model itself: one step of a 2x128 model at batch 1 is ~0.5 MFLOP (~10 us of
arithmetic on one core), but a ``CharRNN`` forward costs ~30 torch calls of 2-5 us each plus
torch's CPU LSTM (oneDNN), whose per-call overhead alone is larger than the arithmetic.  numpy
calls on small arrays cost ~0.5 us, so the step is written as ~9 numpy calls per layer over
weights prepared once (``docs/charrnn.md``, "The CPU sampling step", has the measurements and
the alternatives that lost).  Pure numpy: nothing is compiled, at install or at run time.  Every
``--model`` has its step: the LSTM (:class:`_LstmLayer`), the GRU (:class:`_GruLayer`) and the
tanh RNN (:class:`_RnnLayer`); what they share -- the state buffer, the first layer's table,
the decoder, the draws -- is written once in :class:`CpuStep`.

Prepared weights (float32, from the model's own float32 parameters; only exact operations --
row permutation, concatenation, scaling by 1/2 -- except the first layer's table and the
temperature):

* layer 0: the embedding followed by the input projection is a per-character function, so it
  is a table ``[V, G*H] = embed.weight @ W_ih0^T + b`` (one row read per step; ``b`` the biases
  that sit on the input side);
* layer ``l > 0``: one matrix multiplied by the contiguous slice ``[h_{l-1}, 1, h_l]`` of the
  state buffer ``X`` below: input, bias and recurrence in one matrix product, no copies;
* decoder: ``[W_dec; b_dec]^T / temperature``, ``[H + 1, V]``, times ``[h_{L-1}, 1]``.

State buffer: ``X [B, L*(H+1)] = [h_0, 1, h_1, 1, ..., h_{L-1}, 1]`` (each layer's new ``h`` is
written in place, where the next layer and the next step read it).

* LSTM: gate rows reordered from torch's ``(i, f, g, o)`` to ``(g, f, i, o)`` and the sigmoid
  rows (f, i, o) halved, so that ONE ``tanh`` over all ``4H`` pre-activations gives ``tanh(g)``
  and ``tanh(x/2)``, and ``sigmoid(x) = 0.5 * tanh(x/2) + 0.5`` is two calls on ``3H`` columns.
  Layer 0 multiplies ``h_0`` by ``W_hh^T`` (its biases are in the table); layer ``l`` by
  ``[W_ih; b; W_hh]^T``, ``[2H + 1, 4H]``.  Per layer ``R [B, 5H] = [c | g, f, i, o]`` (``c``
  next to ``g`` and ``f, i`` in order, so that ``[c, g] * [f, i]`` is one call and
  ``c' = c*f + g*i`` one more).
* GRU (torch's convention, ``n = tanh(x_n + r * (W_hn h + b_hn))``): one product gives ``Z [B,
  4H] = [r, z pre-activations (halved) | x_n | a_n]`` with ``a_n = W_hn h + b_hn`` kept apart,
  since ``r`` multiplies it: layer 0 multiplies ``[h_0, 1]`` by ``[W_hh; b_hh]^T`` spread over
  those columns (``x_n`` zero there: the table, ``embed @ W_ih^T + b_ih``, is added to the first
  ``3H``); layer ``l`` multiplies ``[h_{l-1}, 1, h_l]`` by a ``[2H + 1, 4H]`` matrix with the
  input weights in the first ``3H`` columns and the recurrent ones in the ``r, z`` and ``a_n``
  columns.  Then ``h' = n + z * (h - n)``.
* RNN (tanh): ``h' = tanh(x W_ih^T + b + h W_hh^T)``: layer 0 ``h_0 @ W_hh^T`` plus the table
  row, layer ``l`` ``[h_{l-1}, 1, h_l] @ [W_ih; b; W_hh]^T``; one ``tanh``.

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


def _p(rnn, name: str, k: int) -> Tensor:
    """Parameter ``name`` of layer ``k`` (``weight_ih``, ``bias_hh``, ...)."""
    return getattr(rnn, f"{name}_l{k}")


def _stacked(rnn, k: int, bias: Tensor) -> Tensor:
    """``[W_ih | bias | W_hh]`` of layer ``k`` (rows: gate rows), the matrix that multiplies the
    state slice ``[h_{k-1}, 1, h_k]``."""
    return torch.cat([_p(rnn, "weight_ih", k), bias[:, None], _p(rnn, "weight_hh", k)], dim=1)


def _embedded(rnn, embed: Tensor, bias: Tensor) -> Tensor:
    """Layer 0's input side for every character: ``[G*H, V] = W_ih0 @ embed^T + bias``."""
    return torch.addmm(bias[:, None], rnn.weight_ih_l0, embed.t())


class _LstmLayer:
    """One LSTM layer of the step: ``R [B, 5H] = [c | g, f, i, o]`` (module docstring)."""

    #: state slots of layer 0's input beyond ``h_0`` (its biases are in the table)
    first_extra = 0

    @staticmethod
    def _cols(w: Tensor, H: int) -> np.ndarray:
        """``[4H, K]`` gate rows in torch's (i, f, g, o) -> ``[K, 4H]`` columns (g, f, i, o),
        the sigmoid ones halved."""
        i, f, g, o = w.split(H)
        return torch.cat([g, f * 0.5, i * 0.5, o * 0.5]).t().contiguous().numpy()

    @classmethod
    def table(cls, rnn, embed: Tensor, H: int) -> np.ndarray:
        return cls._cols(_embedded(rnn, embed, _p(rnn, "bias_ih", 0) + _p(rnn, "bias_hh", 0)), H)

    @classmethod
    def weights(cls, rnn, k: int, H: int) -> np.ndarray:
        if k == 0:
            return cls._cols(rnn.weight_hh_l0, H)
        return cls._cols(_stacked(rnn, k, _p(rnn, "bias_ih", k) + _p(rnn, "bias_hh", k)), H)

    def __init__(self, inp: np.ndarray, w: np.ndarray, h: np.ndarray, batch: int, H: int):
        R, P = np.zeros((batch, 5 * H), np.float32), np.empty((batch, 2 * H), np.float32)
        self.state = (h, R[:, :H])                  # (h, c)
        self._views = (inp, w, R[:, H:], R[:, 2 * H:], R[:, :2 * H], R[:, 2 * H:4 * H], P,
                       P[:, :H], P[:, H:], R[:, :H], h, R[:, 4 * H:])

    def __call__(self, row: Optional[np.ndarray]) -> None:
        inp, w, z, sig, cg, fi, p, p0, p1, c, h, o = self._views
        np.matmul(inp, w, out=z)
        if row is not None:
            z += row
        np.tanh(z, out=z)                           # tanh(g), tanh(f/2), tanh(i/2), tanh(o/2)
        sig *= 0.5
        sig += 0.5                                  # sigmoid(f), sigmoid(i), sigmoid(o)
        np.multiply(cg, fi, out=p)                  # [c * f, g * i]
        np.add(p0, p1, out=c)                       # c' = c * f + g * i
        np.tanh(c, out=h)
        h *= o                                      # h' = o * tanh(c')


class _GruLayer:
    """One GRU layer of the step: ``Z [B, 4H] = [r, z (halved) | x_n | a_n]`` (module
    docstring)."""

    #: layer 0 reads ``[h_0, 1]``: ``b_hn`` must reach ``a_n``, inside the reset gate
    first_extra = 1

    @staticmethod
    def _cols(w_x: Tensor, w_h: Tensor, H: int) -> np.ndarray:
        """Input-side and hidden-side rows ``[3H, K]`` (torch's r, z, n; over the same K
        inputs) -> ``[K, 4H]`` columns: r and z take both sides, halved; n's sides apart."""
        rz = (w_x[:2 * H] + w_h[:2 * H]) * 0.5
        return torch.cat([rz, w_x[2 * H:], w_h[2 * H:]]).t().contiguous().numpy()

    @staticmethod
    def table(rnn, embed: Tensor, H: int) -> np.ndarray:
        x = _embedded(rnn, embed, _p(rnn, "bias_ih", 0))
        return torch.cat([x[:2 * H] * 0.5, x[2 * H:]]).t().contiguous().numpy()

    @classmethod
    def weights(cls, rnn, k: int, H: int) -> np.ndarray:
        b_ih, b_hh, w_hh = _p(rnn, "bias_ih", k), _p(rnn, "bias_hh", k), _p(rnn, "weight_hh", k)
        if k == 0:                                  # [h_0, 1]: the input side is the table
            w_h = torch.cat([w_hh, b_hh[:, None]], dim=1)
            return cls._cols(torch.zeros_like(w_h), w_h, H)
        w_ih = _p(rnn, "weight_ih", k)
        zeros = torch.zeros_like
        return cls._cols(torch.cat([w_ih, b_ih[:, None], zeros(w_hh)], dim=1),
                         torch.cat([zeros(w_ih), b_hh[:, None], w_hh], dim=1), H)

    def __init__(self, inp: np.ndarray, w: np.ndarray, h: np.ndarray, batch: int, H: int):
        Z, tmp = np.empty((batch, 4 * H), np.float32), np.empty((batch, H), np.float32)
        self.state = (h,)
        self._views = (inp, w, Z, Z[:, :3 * H], Z[:, :2 * H], Z[:, :H], Z[:, H:2 * H],
                       Z[:, 2 * H:3 * H], Z[:, 3 * H:], tmp, h)

    def __call__(self, row: Optional[np.ndarray]) -> None:
        inp, w, Z, z3, rz, r, z, xn, an, tmp, h = self._views
        np.matmul(inp, w, out=Z)
        if row is not None:
            z3 += row                               # layer 0's input side: r, z, x_n
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5                                   # r, z
        np.multiply(r, an, out=an)                  # r * (W_hn h + b_hn)
        np.add(xn, an, out=xn)
        np.tanh(xn, out=xn)                         # n
        np.subtract(h, xn, out=tmp)
        tmp *= z
        np.add(xn, tmp, out=h)                      # h' = n + z * (h - n)


class _RnnLayer:
    """One tanh RNN layer of the step: ``h' = tanh(x W_ih^T + b + h W_hh^T)``."""

    first_extra = 0

    @staticmethod
    def table(rnn, embed: Tensor, H: int) -> np.ndarray:
        bias = _p(rnn, "bias_ih", 0) + _p(rnn, "bias_hh", 0)
        return _embedded(rnn, embed, bias).t().contiguous().numpy()

    @staticmethod
    def weights(rnn, k: int, H: int) -> np.ndarray:
        if k == 0:
            return rnn.weight_hh_l0.t().contiguous().numpy()
        bias = _p(rnn, "bias_ih", k) + _p(rnn, "bias_hh", k)
        return _stacked(rnn, k, bias).t().contiguous().numpy()

    def __init__(self, inp: np.ndarray, w: np.ndarray, h: np.ndarray, batch: int, H: int):
        self.state = (h,)
        self._views = (inp, w, np.empty((batch, H), np.float32), h)

    def __call__(self, row: Optional[np.ndarray]) -> None:
        inp, w, z, h = self._views
        np.matmul(inp, w, out=z)
        if row is not None:
            z += row
        np.tanh(z, out=h)


#: the contract's cell -> its layer of the step
_LAYERS = {"lstm": _LstmLayer, "gru": _GruLayer, "rnn_tanh": _RnnLayer}


def cpu_step_reason(model) -> Optional[str]:
    """None when :class:`CpuStep` can run ``model``, else why not (one sentence)."""
    w = model.decoder.weight
    if w.device.type != "cpu":
        return f"the model is on {w.device}, the CPU step runs on the CPU"
    if w.dtype != torch.float32:
        return f"the model is {w.dtype}, the CPU step runs float32"
    rnn = model.rnn
    if rnn.cell.name not in _LAYERS:
        return (f"the CPU step has no {rnn.cell.name} layer (it has {', '.join(_LAYERS)}); the "
                "model runs each step")
    if rnn.bidirectional or rnn.proj_size or not rnn.bias:
        return "the CPU step runs a unidirectional layer with biases and no projection"
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
    tensors ``[num_layers, batch, rnn_size]`` in the model's state form (``(h, c)`` for the
    LSTM, ``(h,)`` for the GRU and RNN; ``[num_layers, 1, rnn_size]`` loads into every row).
    Results match the model's (the ``reference`` backend) to float32 rounding: the products are
    summed in another order and ``sigmoid`` is ``0.5 * tanh(x / 2) + 0.5``.
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
        kind = _LAYERS[model.rnn.cell.name]
        self.table, weights, self.w_dec = self._prepare(model, kind, self.inv_temperature)

        S = H + 1                                   # one layer's slot in X: [h_l, 1]
        self.X = np.zeros((batch, L * S), np.float32)
        self.X[:, H::S] = 1.0
        self.logits = np.empty((batch, V), np.float32)
        self._layers = []
        for k in range(L):
            inp = self.X[:, :H + kind.first_extra] if k == 0 else self.X[:, (k - 1) * S:k * S + H]
            self._layers.append(kind(inp, weights[k], self.X[:, k * S:k * S + H], batch, H))
        self._dec_in = self.X[:, (L - 1) * S:L * S]
        self._noise_steps = max(1, min(length, NOISE_BLOCK // (batch * V)))
        self._noise, self._noise_pos = None, 0

    @staticmethod
    @torch.inference_mode()
    def _prepare(model, kind, inv_temperature: float):
        """``(table [V, G*H], [W_0, W_l ...], w_dec [H+1, V])`` as numpy, for layers of
        ``kind``."""
        H, rnn = model.rnn_size, model.rnn
        table = kind.table(rnn, model.embed.weight, H)
        weights = [kind.weights(rnn, k, H) for k in range(model.num_layers)]
        w_dec = torch.cat([model.decoder.weight, model.decoder.bias[:, None]], dim=1)
        return table, weights, np.ascontiguousarray((w_dec * inv_temperature).t().numpy())

    # ------------------------------------------------------------------ state
    def load_state(self, *state: Tensor) -> None:
        """Set the state from tensors ``[num_layers, batch or 1, rnn_size]``: ``h, c`` for the
        LSTM, ``h`` for the GRU and RNN."""
        if len(state) != len(self._layers[0].state):
            raise ValueError(f"CpuStep.load_state: this model's state has "
                             f"{len(self._layers[0].state)} tensors, got {len(state)}")
        for k, layer in enumerate(self._layers):
            for buf, t in zip(layer.state, state):
                buf[...] = t[k].detach().float().numpy()

    def state(self) -> tuple[Tensor, ...]:
        """A copy of the state (``(h, c)`` or ``(h,)``), each ``[num_layers, batch, rnn_size]``
        float32."""
        return tuple(torch.from_numpy(np.stack([layer.state[i] for layer in self._layers]))
                     for i in range(len(self._layers[0].state)))

    # ------------------------------------------------------------------ step
    def forward(self, ids: np.ndarray) -> np.ndarray:
        """Feed ``ids [batch]``: advance the state one step and return ``logits / T``
        ``[batch, V]`` (a view of a buffer the next call overwrites)."""
        row = self.table[ids[0]] if self.batch == 1 else self.table[ids]   # layer 0's input
        for layer in self._layers:
            layer(row)
            row = None                              # only layer 0 adds a table row
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
