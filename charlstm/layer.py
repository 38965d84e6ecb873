"""The one layer implementation behind ``charlstm.LSTM``, ``charlstm.GRU`` and ``charlstm.RNN``.

:class:`RecurrentLayer` is built by ``nn.RNNBase`` in the mode of its cell (``"LSTM"``,
``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"``), exactly as torch's own layers are, so it has their
arguments, parameter names, shapes, default initialisation and ``state_dict``; only ``forward``
differs.  The thin subclasses (:mod:`charlstm.lstm`, :mod:`charlstm.rnn`) hold what differs per
cell: the constructor's arguments, the bias folding of the GRU, ``proj_size`` (LSTM only) and
torch's own class, whose ``forward`` runs the ``torch`` backend (cuDNN on a GPU).  A layer is
deliberately not an instance of torch's class: ``torch.compile`` refuses to trace any
``nn.LSTM``/``nn.GRU``/``nn.RNN`` instance, and charlstm's kernel backends are meant to be
compiled without a graph break.

With a kernel backend the layer does, per layer and direction:

1. ``xproj = x @ W_ih^T + b`` -- one GEMM over all steps (torch / cuBLAS), with ``b`` the biases
   the contract folds into the input side (``b_ih + b_hh``; the GRU keeps ``b_hn`` apart, since
   it sits inside the reset gate, and hands it to the core);
2. the reverse direction reverses each sequence within its own length;
3. the backend's recurrent core (:mod:`charlstm.backends.contract`) for the layer's cell
   (the LSTM wraps it for ``proj_size``, see :class:`charlstm.LSTM`);
4. dropout between layers in training mode.

``PackedSequence`` input is unpacked once into a padded, length-sorted batch plus per-row
lengths; the core leaves rows past their length untouched, so the final states come out right.

The state ``hx`` has torch's form: ``(h_0, c_0)`` for the LSTM, the tensor ``h_0`` for cells
without a cell state; the result's final state the same (``(h_n, c_n)`` or ``h_n``).

Per-step states (``forward(..., return_state_sequence=True)``): every step's state of every
layer and direction, in the form of the state -- ``(h_seq, c_seq)`` for the LSTM, ``h_seq`` for
the GRU and RNN.  ``h`` is each layer's output before inter-layer dropout; the LSTM's ``c`` is the
``cs`` the core computes anyway (it saves it for the backward), returned without gradient.
torch's layers (cuDNN) keep neither the lower layers' per-step ``h`` nor any ``c``: under
``auto`` such a call runs on the ``reference`` core instead (correct on every device; ``auto``
picks a kernel backend only where measurements say so, see ``charlstm.backends.resolve``); an
explicitly requested ``torch`` raises a ValueError.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import backends
from .backends.contract import CELLS, Cell

__all__ = ["RecurrentLayer", "STATE_SEQUENCE_FALLBACK", "cell_of_mode"]

#: the core that runs ``return_state_sequence`` calls when ``auto`` resolves to ``torch``
STATE_SEQUENCE_FALLBACK = "reference"
#: ``nn.RNNBase`` mode -> the contract's cell
_CELL_OF_MODE = {c.mode: c for c in CELLS.values()}


def cell_of_mode(mode: str) -> Cell:
    """The contract's cell of an ``nn.RNNBase`` mode (``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``,
    ``"RNN_RELU"``)."""
    return _CELL_OF_MODE[mode]


def _reverse_padded(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Reverse each sequence of a [T, B, ...] tensor within its own length."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)             # [T, 1]
    L = lengths.to(device=x.device, dtype=torch.long).unsqueeze(0)  # [1, B]
    idx = torch.where(t < L, L - 1 - t, t)                        # [T, B]
    idx = idx.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, idx)


class RecurrentLayer(nn.RNNBase):
    """The shared layer (see the module docstring); use :class:`charlstm.LSTM`,
    :class:`charlstm.GRU` or :class:`charlstm.RNN`.

    ``backend`` (keyword-only): ``"auto"``, a kernel path ``"backend:variant"`` or a bare backend
    name (:mod:`charlstm.backends`); the :func:`charlstm.use_backend` context and the
    ``CHARLSTM_BACKEND`` environment variable override it.
    """

    #: torch's own layer class of this cell: its ``forward`` runs the ``torch`` backend
    _torch_layer: type = nn.RNNBase

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None, *,
                 backend: str = "auto") -> None:
        super().__init__(mode, input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         proj_size=proj_size, device=device, dtype=dtype)
        self.backend = backends.validate_name(backend)
        backends.preload(self.backend)

    @property
    def cell(self) -> Cell:
        """The contract's :class:`~charlstm.backends.contract.Cell` of this layer."""
        return _CELL_OF_MODE[self.mode]

    @property
    def _label(self) -> str:
        return f"charlstm.{type(self).__name__}"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"

    @classmethod
    def _arguments_of(cls, old: nn.RNNBase) -> dict:
        """The constructor arguments beyond the common ones that rebuild ``old`` (a torch layer
        of this cell): ``proj_size`` for the LSTM, ``nonlinearity`` for the RNN."""
        return {}

    @classmethod
    def from_torch(cls, old: nn.RNNBase, backend: str = "auto") -> RecurrentLayer:
        """A layer of this class holding ``old``'s very ``Parameter`` objects (so weights,
        device, dtype and an optimizer that holds them stay valid), in ``old``'s train/eval
        mode."""
        new = cls(old.input_size, old.hidden_size, num_layers=old.num_layers, bias=old.bias,
                  batch_first=old.batch_first, dropout=old.dropout,
                  bidirectional=old.bidirectional, **cls._arguments_of(old), device="meta",
                  backend=backend)
        for name in old._flat_weights_names:
            setattr(new, name, getattr(old, name))
        new.train(old.training)
        return new

    # ------------------------------------------------------------------ checks
    def _check_forward_args(self, input, hx) -> tuple[bool, bool]:
        """Validate input and hx; return (is_packed, is_unbatched). Raises with clear messages."""
        name = self._label
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        if not isinstance(data, Tensor):
            raise TypeError(f"{name}: input must be a Tensor or PackedSequence, got "
                            f"{type(input).__name__}")
        if packed:
            if data.dim() != 2:
                raise ValueError(f"{name}: PackedSequence data must be 2-D "
                                 f"(sum of lengths, input_size), got shape {tuple(data.shape)}")
            unbatched = False
        elif data.dim() == 3:
            unbatched = False
        elif data.dim() == 2:
            unbatched = True
        else:
            layout = "(batch, seq, feature)" if self.batch_first else "(seq, batch, feature)"
            raise ValueError(f"{name}: expected input of rank 3 {layout} or rank 2 "
                             f"(seq, feature) for unbatched input, got rank {data.dim()} with "
                             f"shape {tuple(data.shape)}")
        if data.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input feature size must be input_size="
                             f"{self.input_size}, got {data.shape[-1]} (input shape "
                             f"{tuple(data.shape)})")
        w = self.weight_ih_l0
        if not data.is_floating_point():
            raise TypeError(f"{name}: input must be a floating-point tensor, got {data.dtype}")
        if data.device != w.device:
            raise RuntimeError(f"{name}: input is on {data.device} but the weights are on "
                               f"{w.device}; move one of them (e.g. model.to({data.device!s}))")
        if data.dtype != w.dtype and not torch.is_autocast_enabled(data.device.type):
            raise RuntimeError(f"{name}: input dtype {data.dtype} does not match the "
                               f"weights' dtype {w.dtype}; convert one of them (e.g. "
                               f"model.to({data.dtype}))")
        if hx is not None:
            if packed:
                batch = int(input.batch_sizes[0])
            else:
                batch = 1 if unbatched else data.shape[0 if self.batch_first else 1]
            self._check_hx(hx, data, batch, unbatched)
        return packed, unbatched

    def _check_hx(self, hx, data: Tensor, batch: int, unbatched: bool) -> None:
        """``hx`` has the form of this cell's state (``(h_0, c_0)`` or ``h_0``), and each tensor
        the expected shape, device and dtype."""
        name = self._label
        if self.cell.has_c:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2
                    and all(isinstance(t, Tensor) for t in hx)):
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0) of two tensors, got "
                                f"{type(hx).__name__}")
        elif isinstance(hx, (tuple, list)):
            raise TypeError(f"{name}: hx must be one tensor h_0 (the {self.cell.name} cell has "
                            f"no cell state c), got a {type(hx).__name__} of {len(hx)} items; "
                            "an LSTM's (h_0, c_0) does not fit this layer")
        elif not isinstance(hx, Tensor):
            raise TypeError(f"{name}: hx must be a tensor h_0, got {type(hx).__name__}")
        D = 2 if self.bidirectional else 1
        h_out = self.proj_size if self.proj_size > 0 else self.hidden_size
        given = (("h_0", hx[0], h_out), ("c_0", hx[1], self.hidden_size)) if self.cell.has_c \
            else (("h_0", hx, h_out),)
        for what_name, t, size in given:
            if unbatched:
                expected = (self.num_layers * D, size)
                what = "(num_layers * num_directions, hidden)"
            else:
                expected = (self.num_layers * D, batch, size)
                what = "(num_layers * num_directions, batch, hidden)"
            if tuple(t.shape) != expected:
                raise ValueError(f"{name}: {what_name} must have shape {what} = "
                                 f"{expected}, got {tuple(t.shape)}")
            if t.device != data.device:
                raise RuntimeError(f"{name}: {what_name} is on {t.device} but input is on "
                                   f"{data.device}")
            if t.dtype != data.dtype:
                raise RuntimeError(f"{name}: {what_name} dtype {t.dtype} does not match "
                                   f"input dtype {data.dtype}")

    # ------------------------------------------------------------------ forward
    def forward(self, input, hx=None, *, return_state_sequence: bool = False):  # noqa: D401
        packed, unbatched = self._check_forward_args(input, hx)
        data = input.data if packed else input
        if packed:
            batch, seq = int(input.batch_sizes[0]), len(input.batch_sizes)
        elif unbatched:
            batch, seq = 1, data.shape[0]
        else:
            batch = data.shape[0 if self.batch_first else 1]
            seq = data.shape[1 if self.batch_first else 0]
        name = backends.resolve(backends.requested(self.backend), data.device, data.dtype,
                                batch=batch, hidden=self.hidden_size, seq_len=seq,
                                cell=self.cell.name)
        if return_state_sequence and not backends.is_core(name):
            name = self._state_sequence_backend(backends.requested(self.backend), name)
        if not backends.is_core(name):
            return self._torch_layer.forward(self, input, hx)
        return self._forward_core(input, hx, backends.core_for(name), packed, unbatched,
                                  return_state_sequence)

    def _state_sequence_backend(self, requested: str, resolved: str) -> str:
        """The core that runs a ``return_state_sequence`` call that resolved to the whole-layer
        ``resolved`` backend (torch's layers keep no per-step state of the lower layers, nor
        any ``c``)."""
        if requested == "auto":
            return STATE_SEQUENCE_FALLBACK
        what = "every layer's h and c" if self.cell.has_c else "every layer's h"
        torch_name = f"torch.nn.{self._torch_layer.__name__}"
        raise ValueError(f"{self._label}: return_state_sequence=True needs {what} at every "
                         f"step, which the {resolved!r} backend ({torch_name} / cuDNN) does "
                         f"not give; use backend='auto' (runs the "
                         f"{STATE_SEQUENCE_FALLBACK!r} core for such calls) or a kernel backend "
                         "('reference', 'triton', 'cuda')")

    def _biases(self, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """``(b, b_hn)``: the bias folded into ``xproj`` and the core's hidden-side bias (None:
        the contract's ``b_hn`` is only the GRU's)."""
        return b_ih + b_hh, None

    def _layer_params(self, layer: int, reverse: bool) -> tuple:
        """``(w_ih, w_hh, b, b_hn, w_hr)`` of one layer and direction (``b``, ``b_hn``, ``w_hr``
        may be None)."""
        sfx = f"l{layer}" + ("_reverse" if reverse else "")
        w_ih = getattr(self, f"weight_ih_{sfx}")
        w_hh = getattr(self, f"weight_hh_{sfx}")
        b = b_hn = None
        if self.bias:
            b, b_hn = self._biases(getattr(self, f"bias_ih_{sfx}"), getattr(self, f"bias_hh_{sfx}"))
        w_hr = getattr(self, f"weight_hr_{sfx}") if self.proj_size > 0 else None
        return w_ih, w_hh, b, b_hn, w_hr

    def _initial_states(self, hx, x: Tensor, packed_input, unbatched: bool) -> tuple:
        """``(h0, c0)`` as ``[L*D, B, .]`` in the sorted batch order of the padded ``x``
        (``c0`` None for cells without ``c``)."""
        D = 2 if self.bidirectional else 1
        B = x.shape[1]
        h_out = self.proj_size if self.proj_size > 0 else self.hidden_size
        has_c = self.cell.has_c
        if hx is None:
            h0 = x.new_zeros(self.num_layers * D, B, h_out)
            c0 = x.new_zeros(self.num_layers * D, B, self.hidden_size) if has_c else None
            return h0, c0
        h0, c0 = hx if has_c else (hx, None)
        if unbatched:
            h0 = h0.unsqueeze(1)
            c0 = None if c0 is None else c0.unsqueeze(1)
        if packed_input is not None and packed_input.sorted_indices is not None:
            h0 = h0.index_select(1, packed_input.sorted_indices)
            if c0 is not None:
                c0 = c0.index_select(1, packed_input.sorted_indices)
        return h0, c0

    def _forward_core(self, input, hx, core, packed: bool, unbatched: bool,
                      return_state_sequence: bool = False):
        if packed:
            data, batch_sizes = input.data, input.batch_sizes
            T, B = len(batch_sizes), int(batch_sizes[0])
            mask = torch.arange(B).unsqueeze(0) < batch_sizes.unsqueeze(1)   # [T, B], CPU
            lengths_cpu = mask.sum(0)
            mask = mask.to(data.device)
            x = data.new_zeros(T, B, data.shape[-1])
            x[mask] = data
            lengths = lengths_cpu.to(device=data.device, dtype=torch.int32)
        else:
            x = input.unsqueeze(1) if unbatched else input
            if self.batch_first and not unbatched:
                x = x.transpose(0, 1)
            lengths, mask = None, None
        h0, c0 = self._initial_states(hx, x, input if packed else None, unbatched)
        has_c = self.cell.has_c

        D = 2 if self.bidirectional else 1
        dev = x.device.type
        cast = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        if cast is not None:
            x, h0 = x.to(cast), h0.to(cast)
            c0 = None if c0 is None else c0.to(cast)
        with torch.autocast(x.device.type, enabled=False):
            h_n, c_n, h_seq, c_seq = [], [], [], []
            layer_in = x
            for layer in range(self.num_layers):
                outs = []
                for d in range(D):
                    params = [p.to(cast) if (p is not None and cast is not None) else p
                              for p in self._layer_params(layer, reverse=d == 1)]
                    k = layer * D + d
                    out, hT, cT, cs = self._run_direction(
                        core, layer_in, *params, h0[k], None if c0 is None else c0[k], lengths,
                        reverse=d == 1, want_cs=return_state_sequence and has_c)
                    outs.append(out)
                    h_seq.append(out)
                    c_seq.append(cs)
                    h_n.append(hT)
                    c_n.append(cT)
                layer_in = torch.cat(outs, dim=-1) if D == 2 else outs[0]
                if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                    layer_in = F.dropout(layer_in, p=self.dropout, training=True)
            finals = [torch.stack(h_n)] + ([torch.stack(c_n)] if has_c else [])
        # the per-step states appended to the result when asked for, else nothing
        states = ()
        if return_state_sequence:
            seqs = [torch.stack(h_seq)] + ([torch.stack(c_seq)] if has_c else [])
            states = (self._in_caller_form(self._state_sequences(seqs, input, mask,
                                                                 unbatched)),)

        if packed:
            output = PackedSequence(layer_in[mask], input.batch_sizes, input.sorted_indices,
                                    input.unsorted_indices)
            if input.unsorted_indices is not None:
                finals = [s.index_select(1, input.unsorted_indices) for s in finals]
            return (output, self._in_caller_form(finals), *states)
        output = layer_in
        if unbatched:
            return (output.squeeze(1), self._in_caller_form([s.squeeze(1) for s in finals]),
                    *states)
        if self.batch_first:
            output = output.transpose(0, 1)
        return (output, self._in_caller_form(finals), *states)

    def _in_caller_form(self, states: list):
        """``(h, c)`` for a cell with ``c``, the tensor ``h`` otherwise (torch's state form)."""
        return tuple(states) if self.cell.has_c else states[0]

    def _state_sequences(self, seqs: list, input, mask: Optional[Tensor],
                         unbatched: bool) -> list:
        """Per-step states ``[L*D, T, B, .]`` (``h``, then ``c`` for the LSTM), each put in the
        caller's layout and batch order and in ``h``'s dtype (see :class:`RecurrentLayer`)."""
        dtype = seqs[0].dtype
        out = []
        for s in seqs:
            s = s.to(dtype)
            if mask is not None:     # packed: rows past their length are 0, as pad_packed_sequence
                s = s * mask.unsqueeze(-1)
                if input.unsorted_indices is not None:
                    s = s.index_select(2, input.unsorted_indices)
            elif unbatched:
                s = s.squeeze(2)
            elif self.batch_first:
                s = s.transpose(1, 2)
            out.append(s)
        return out

    def _run_direction(self, core, x: Tensor, w_ih: Tensor, w_hh: Tensor, b: Optional[Tensor],
                       b_hn: Optional[Tensor], w_hr: Optional[Tensor], h0: Tensor,
                       c0: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
                       want_cs: bool = False):
        """One layer, one direction: projection GEMM, the recurrence, reversal.  Returns
        ``(hs, hT, cT, cs)``; ``cs`` (every step's ``c``) is None unless ``want_cs``."""
        xproj = F.linear(x, w_ih, b)                         # [T, B, G*H], one GEMM
        if reverse:
            xproj = _reverse_padded(xproj, lengths)
        hs, hT, cT, cs = self._recurrence(core, xproj, w_hh, w_hr, h0, c0, b_hn, lengths,
                                          want_cs)
        if reverse:
            hs = _reverse_padded(hs, lengths)
            cs = None if cs is None else _reverse_padded(cs, lengths)
        return hs, hT, cT, cs

    def _recurrence(self, core, xproj: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], h0: Tensor,
                    c0: Optional[Tensor], b_hn: Optional[Tensor], lengths: Optional[Tensor],
                    want_cs: bool):
        """The backend's core on one direction's ``xproj``: ``(hs, hT, cT, cs)`` (``cs`` None
        unless ``want_cs``).  ``w_hr`` is the LSTM's projection, which :class:`charlstm.LSTM`
        handles around this."""
        args = (xproj.contiguous(), w_hh.contiguous(), h0.contiguous(),
                None if c0 is None else c0.contiguous(), lengths)
        kw = dict(cell=self.cell.name, b_hn=None if b_hn is None else b_hn.contiguous())
        if want_cs:
            return core(*args, return_cs=True, **kw)
        return (*core(*args, **kw), None)
