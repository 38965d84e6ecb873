"""``charlstm.LSTM``: a drop-in ``torch.nn.LSTM`` whose recurrence runs on a chosen backend.

The layer itself -- checks, packing, the layer/direction loop, dropout, autocast, per-step
states -- is :class:`charlstm.layer.RecurrentLayer`, shared with ``charlstm.GRU`` and
``charlstm.RNN``; this class holds what is the LSTM's own: the ``(h, c)`` state, ``proj_size``
and ``nn.LSTM``'s helpers for the ``torch`` backend.

``proj_size``: the recurrence runs on the unprojected ``m[t] = o * tanh(c[t])`` with ``W_eff =
W_hh @ W_hr`` (so ``h[t-1] @ W_hh^T == m[t-1] @ W_eff^T``); the user's projected ``h0`` enters
through step 0's input (``xproj[0] += h0 @ W_hh^T``, with ``m0 = 0``), and ``h = m @ W_hr^T`` is
one GEMM afterwards.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layer import STATE_SEQUENCE_FALLBACK, RecurrentLayer

__all__ = ["LSTM", "convert_lstm", "STATE_SEQUENCE_FALLBACK"]


class LSTM(RecurrentLayer):
    """Drop-in replacement for :class:`torch.nn.LSTM` with a selectable backend.

    Arguments are those of ``torch.nn.LSTM`` plus the keyword-only ``backend``: ``"auto"``, a
    kernel path ``"backend:variant"`` or a bare backend name (:mod:`charlstm.backends`).  The
    :func:`charlstm.use_backend` context and the ``CHARLSTM_BACKEND`` environment variable
    override it.  ``forward(input, hx=None) -> (output, (h_n, c_n))`` as in ``nn.LSTM``.

    ``forward(input, hx=None, return_state_sequence=True) -> (output, (h_n, c_n), (h_seq,
    c_seq))`` also returns every step's state of every layer and direction (index
    ``layer * num_directions + direction``, as ``h_n``): ``h_seq`` is ``[num_layers *
    num_directions, *output.shape[:-1], H_out]`` and ``c_seq`` the same with ``hidden_size``
    (``[L*D, T, B, .]``, or ``[L*D, B, T, .]`` with ``batch_first``, ``[L*D, T, .]`` unbatched,
    ``[L*D, T, B, .]`` padded with zeros in the caller's batch order for a ``PackedSequence``).
    Entry ``t`` is the state after reading ``input[t]`` (for the reverse direction too, as in
    ``output``).  ``h_seq`` has gradients; ``c_seq`` is detached.  cuDNN cannot give per-step
    ``c``: ``auto`` then runs the ``reference`` core, an explicit ``torch`` raises ValueError.
    """

    _torch_layer = nn.LSTM

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, backend: str = "auto") -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         proj_size=proj_size, device=device, dtype=dtype, backend=backend)

    # nn.LSTM's own helpers, so that nn.LSTM.forward runs unchanged for the ``torch`` backend.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    @classmethod
    def _arguments_of(cls, old: nn.LSTM) -> dict:
        return {"proj_size": old.proj_size}

    def _recurrence(self, core, xproj: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], h0: Tensor,
                    c0: Optional[Tensor], b_hn: Optional[Tensor], lengths: Optional[Tensor],
                    want_cs: bool):
        if w_hr is None:
            return super()._recurrence(core, xproj, w_hh, None, h0, c0, b_hn, lengths, want_cs)
        # h[t-1] @ W_hh^T == m[t-1] @ (W_hh W_hr)^T; h0 enters through step 0's input.
        first = xproj[0] + h0 @ w_hh.t()
        xproj = torch.cat([first.unsqueeze(0), xproj[1:]], 0)
        m0 = h0.new_zeros(h0.shape[0], w_hr.shape[1])
        hs, hT, cT, cs = super()._recurrence(core, xproj, w_hh @ w_hr, None, m0, c0, b_hn,
                                             lengths, want_cs)
        return F.linear(hs, w_hr), F.linear(hT, w_hr), cT, cs


def convert_lstm(module: nn.Module, backend: str = "auto") -> nn.Module:
    """Replace every ``torch.nn.LSTM`` inside ``module`` by a :class:`charlstm.LSTM`, in place.

    The new layers reuse the very same ``Parameter`` objects (so weights, device, dtype and
    any optimizer that already holds them stay valid) and keep train/eval mode.  Returns the
    model; if ``module`` is itself an ``nn.LSTM``, returns its replacement.  The charlstm LSTMs
    already in it get ``backend``.  :func:`charlstm.convert` does the same for GRUs and RNNs too.
    """
    from .family import swap_layers
    return swap_layers(module, backend, cells=("lstm",))
