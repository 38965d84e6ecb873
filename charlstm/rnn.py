"""``charlstm.GRU`` and ``charlstm.RNN``: drop-ins for ``torch.nn.GRU`` and ``torch.nn.RNN``.

Both are :class:`charlstm.layer.RecurrentLayer` (the layer shared with ``charlstm.LSTM``) on the
contract's ``gru`` / ``rnn_tanh`` / ``rnn_relu`` cell; what is theirs is the constructor, the
state form (one tensor ``h``, no cell state) and, for the GRU, torch's bias convention::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   h' = (1 - z) * n + z * h

``b_hr`` and ``b_hz`` are folded into the input projection with ``b_ih``; ``b_hn`` sits inside the
reset gate, so it goes to the core on its own (the contract's ``b_hn``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .layer import RecurrentLayer

__all__ = ["GRU", "RNN", "NONLINEARITIES"]

#: ``charlstm.RNN``'s nonlinearity -> the ``nn.RNNBase`` mode
NONLINEARITIES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}

_STATE_DOC = """
    ``forward(input, hx=None) -> (output, h_n)`` as in torch: ``hx`` is one tensor ``h_0``
    (``[num_layers * num_directions, batch, hidden_size]``, or without the batch dimension for
    unbatched input); an LSTM-style ``(h_0, c_0)`` is a TypeError saying so.

    ``forward(input, hx=None, return_state_sequence=True) -> (output, h_n, h_seq)`` also returns
    every step's ``h`` of every layer and direction, ``[num_layers * num_directions,
    *output.shape[:-1], hidden_size]`` (index ``layer * num_directions + direction``, as
    ``h_n``; padded with zeros in the caller's batch order for a ``PackedSequence``), with
    gradients: the state's own form, as ``(h_seq, c_seq)`` is the LSTM's.  torch's layer (cuDNN)
    gives only the last layer's steps: ``auto`` then runs the ``reference`` core, an explicit
    ``torch`` raises ValueError.
"""


class GRU(RecurrentLayer):
    __doc__ = """Drop-in replacement for :class:`torch.nn.GRU` with a selectable backend.

    Arguments are those of ``torch.nn.GRU`` plus the keyword-only ``backend`` (as for
    :class:`charlstm.LSTM`).""" + _STATE_DOC

    _torch_layer = nn.GRU

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, backend: str = "auto") -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         device=device, dtype=dtype, backend=backend)

    def _biases(self, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        # b_hr, b_hz join the input side; b_hn is multiplied by r, so the core adds it
        H = self.hidden_size
        return b_ih + torch.cat([b_hh[:2 * H], b_hh.new_zeros(H)]), b_hh[2 * H:]


class RNN(RecurrentLayer):
    __doc__ = """Drop-in replacement for :class:`torch.nn.RNN` (``h' = act(W_ih x + b_ih + W_hh h
    + b_hh)``, ``nonlinearity`` ``"tanh"`` or ``"relu"``) with a selectable backend.

    Arguments are those of ``torch.nn.RNN`` (``nonlinearity`` is the fourth) plus the
    keyword-only ``backend`` (as for :class:`charlstm.LSTM`).""" + _STATE_DOC

    _torch_layer = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None, *,
                 backend: str = "auto") -> None:
        mode = NONLINEARITIES.get(nonlinearity) if isinstance(nonlinearity, str) else None
        if mode is None:
            raise ValueError(f"charlstm.RNN: unknown nonlinearity {nonlinearity!r}: expected "
                             f"one of {', '.join(map(repr, NONLINEARITIES))}")
        self.nonlinearity = nonlinearity
        super().__init__(mode, input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         device=device, dtype=dtype, backend=backend)

    @classmethod
    def _arguments_of(cls, old: nn.RNN) -> dict:
        return {"nonlinearity": old.nonlinearity}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"
