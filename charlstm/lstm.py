"""``charlstm.LSTM``: a drop-in ``torch.nn.LSTM`` whose recurrence runs on a chosen backend.

The module is built by ``nn.RNNBase`` in ``"LSTM"`` mode, exactly as ``nn.LSTM`` is, so it has
the same arguments, parameter names, shapes, default initialisation and ``state_dict``; only
``forward`` differs.  It is deliberately not an ``nn.LSTM`` instance: ``torch.compile`` refuses
to trace any ``isinstance(m, nn.LSTM)`` module, and charlstm's kernel backends are meant to be
compiled without a graph break.  With the ``torch`` backend it runs ``nn.LSTM.forward``
(cuDNN on a GPU).  With a kernel backend it
does, per layer and direction:

1. ``xproj = x @ W_ih^T + b_ih + b_hh`` -- one GEMM over all steps (torch / cuBLAS);
2. the reverse direction reverses each sequence within its own length;
3. ``proj_size``: the recurrence runs on the unprojected ``m[t] = o * tanh(c[t])`` with
   ``W_eff = W_hh @ W_hr`` (so ``h[t-1] @ W_hh^T == m[t-1] @ W_eff^T``); the user's projected
   ``h0`` enters through step 0's input (``xproj[0] += h0 @ W_hh^T``, with ``m0 = 0``), and
   ``h = m @ W_hr^T`` is one GEMM afterwards;
4. the backend's recurrent core (``charlstm.backends.contract``);
5. dropout between layers in training mode.

``PackedSequence`` input is unpacked once into a padded, length-sorted batch plus per-row
lengths; the core leaves rows past their length untouched, so the final states come out right.

Per-step states (``forward(..., return_state_sequence=True)``): every step's ``h`` and ``c`` of
every layer and direction.  ``h`` is each layer's output before inter-layer dropout; ``c`` is the
``cs`` the core computes anyway (it saves it for the backward), returned without gradient.
cuDNN (the ``torch`` backend) keeps no per-step ``c``: under ``auto`` such a call runs on the
``reference`` core instead (correct on every device, and the kernel backends are not yet
verified on a GPU); an explicitly requested ``torch`` raises a ValueError.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import backends

__all__ = ["LSTM", "convert_lstm"]

#: the core that runs ``return_state_sequence`` calls when ``auto`` resolves to ``torch``
STATE_SEQUENCE_FALLBACK = "reference"


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


class LSTM(nn.RNNBase):
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

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, backend: str = "auto") -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         proj_size=proj_size, device=device, dtype=dtype)
        self.backend = backends.validate_name(backend)
        backends.preload(self.backend)

    # nn.LSTM's own helpers, so that nn.LSTM.forward runs unchanged for the ``torch`` backend.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"

    # ------------------------------------------------------------------ checks
    def _check_forward_args(self, input, hx) -> tuple[bool, bool]:
        """Validate input and hx; return (is_packed, is_unbatched). Raises with clear messages."""
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        if not isinstance(data, Tensor):
            raise TypeError(f"charlstm.LSTM: input must be a Tensor or PackedSequence, got "
                            f"{type(input).__name__}")
        if packed:
            if data.dim() != 2:
                raise ValueError(f"charlstm.LSTM: PackedSequence data must be 2-D "
                                 f"(sum of lengths, input_size), got shape {tuple(data.shape)}")
            unbatched = False
        elif data.dim() == 3:
            unbatched = False
        elif data.dim() == 2:
            unbatched = True
        else:
            layout = "(batch, seq, feature)" if self.batch_first else "(seq, batch, feature)"
            raise ValueError(f"charlstm.LSTM: expected input of rank 3 {layout} or rank 2 "
                             f"(seq, feature) for unbatched input, got rank {data.dim()} with "
                             f"shape {tuple(data.shape)}")
        if data.shape[-1] != self.input_size:
            raise ValueError(f"charlstm.LSTM: input feature size must be input_size="
                             f"{self.input_size}, got {data.shape[-1]} (input shape "
                             f"{tuple(data.shape)})")
        w = self.weight_ih_l0
        if not data.is_floating_point():
            raise TypeError(f"charlstm.LSTM: input must be a floating-point tensor, "
                            f"got {data.dtype}")
        if data.device != w.device:
            raise RuntimeError(f"charlstm.LSTM: input is on {data.device} but the weights are on "
                               f"{w.device}; move one of them (e.g. model.to({data.device!s}))")
        if data.dtype != w.dtype and not torch.is_autocast_enabled(data.device.type):
            raise RuntimeError(f"charlstm.LSTM: input dtype {data.dtype} does not match the "
                               f"weights' dtype {w.dtype}; convert one of them (e.g. "
                               f"model.to({data.dtype}))")
        if hx is not None:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2
                    and all(isinstance(t, Tensor) for t in hx)):
                raise TypeError("charlstm.LSTM: hx must be a tuple (h_0, c_0) of two tensors, got "
                                f"{type(hx).__name__}")
            if packed:
                batch = int(input.batch_sizes[0])
            else:
                batch = 1 if unbatched else data.shape[0 if self.batch_first else 1]
            D = 2 if self.bidirectional else 1
            h_out = self.proj_size if self.proj_size > 0 else self.hidden_size
            for name, t, size in (("h_0", hx[0], h_out), ("c_0", hx[1], self.hidden_size)):
                if unbatched:
                    expected = (self.num_layers * D, size)
                    what = "(num_layers * num_directions, hidden)"
                else:
                    expected = (self.num_layers * D, batch, size)
                    what = "(num_layers * num_directions, batch, hidden)"
                if tuple(t.shape) != expected:
                    raise ValueError(f"charlstm.LSTM: {name} must have shape {what} = "
                                     f"{expected}, got {tuple(t.shape)}")
                if t.device != data.device:
                    raise RuntimeError(f"charlstm.LSTM: {name} is on {t.device} but input is on "
                                       f"{data.device}")
                if t.dtype != data.dtype:
                    raise RuntimeError(f"charlstm.LSTM: {name} dtype {t.dtype} does not match "
                                       f"input dtype {data.dtype}")
        return packed, unbatched

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
                                batch=batch, hidden=self.hidden_size, seq_len=seq)
        if return_state_sequence and not backends.is_core(name):
            name = _state_sequence_backend(backends.requested(self.backend), name)
        if not backends.is_core(name):
            return nn.LSTM.forward(self, input, hx)
        return self._forward_core(input, hx, backends.core_for(name), packed, unbatched,
                                  return_state_sequence)

    def _layer_params(self, layer: int, reverse: bool):
        sfx = f"l{layer}" + ("_reverse" if reverse else "")
        w_ih = getattr(self, f"weight_ih_{sfx}")
        w_hh = getattr(self, f"weight_hh_{sfx}")
        b = None
        if self.bias:
            b = getattr(self, f"bias_ih_{sfx}") + getattr(self, f"bias_hh_{sfx}")
        w_hr = getattr(self, f"weight_hr_{sfx}") if self.proj_size > 0 else None
        return w_ih, w_hh, b, w_hr

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
            T, B = x.shape[0], x.shape[1]
            lengths, mask = None, None

        D = 2 if self.bidirectional else 1
        h_out = self.proj_size if self.proj_size > 0 else self.hidden_size
        if hx is None:
            h0 = x.new_zeros(self.num_layers * D, B, h_out)
            c0 = x.new_zeros(self.num_layers * D, B, self.hidden_size)
        else:
            h0, c0 = hx
            if unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            if packed and input.sorted_indices is not None:
                h0 = h0.index_select(1, input.sorted_indices)
                c0 = c0.index_select(1, input.sorted_indices)

        dev = x.device.type
        cast = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        if cast is not None:
            x, h0, c0 = x.to(cast), h0.to(cast), c0.to(cast)
        with torch.autocast(x.device.type, enabled=False):
            h_n, c_n, h_seq, c_seq = [], [], [], []
            layer_in = x
            for layer in range(self.num_layers):
                outs = []
                for d in range(D):
                    params = [p.to(cast) if (p is not None and cast is not None) else p
                              for p in self._layer_params(layer, reverse=d == 1)]
                    k = layer * D + d
                    out, hT, cT, cs = _run_direction(core, layer_in, *params, h0[k], c0[k],
                                                     lengths, reverse=d == 1,
                                                     want_cs=return_state_sequence)
                    outs.append(out)
                    h_seq.append(out)
                    c_seq.append(cs)
                    h_n.append(hT)
                    c_n.append(cT)
                layer_in = torch.cat(outs, dim=-1) if D == 2 else outs[0]
                if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                    layer_in = F.dropout(layer_in, p=self.dropout, training=True)
            h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        # ``((h_seq, c_seq),)`` appended to the result when asked for, else nothing
        states = ((self._state_sequences(h_seq, c_seq, input, mask, unbatched),)
                  if return_state_sequence else ())

        if packed:
            output = PackedSequence(layer_in[mask], input.batch_sizes, input.sorted_indices,
                                    input.unsorted_indices)
            if input.unsorted_indices is not None:
                h_n = h_n.index_select(1, input.unsorted_indices)
                c_n = c_n.index_select(1, input.unsorted_indices)
            return (output, (h_n, c_n), *states)
        output = layer_in
        if unbatched:
            return (output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1)), *states)
        if self.batch_first:
            output = output.transpose(0, 1)
        return (output, (h_n, c_n), *states)

    def _state_sequences(self, h_seq: list, c_seq: list, input, mask: Optional[Tensor],
                         unbatched: bool) -> tuple[Tensor, Tensor]:
        """Per-step states ``[T, B, .]`` of every layer and direction, stacked and put in the
        caller's layout and batch order (see :class:`LSTM`)."""
        h_seq = torch.stack(h_seq)                                  # [L*D, T, B, H_out]
        c_seq = torch.stack(c_seq).to(h_seq.dtype)                  # [L*D, T, B, H]
        if mask is not None:       # packed: rows past their length are 0, as pad_packed_sequence
            c_seq = c_seq * mask.unsqueeze(-1)
            if input.unsorted_indices is not None:
                h_seq = h_seq.index_select(2, input.unsorted_indices)
                c_seq = c_seq.index_select(2, input.unsorted_indices)
        elif unbatched:
            h_seq, c_seq = h_seq.squeeze(2), c_seq.squeeze(2)
        elif self.batch_first:
            h_seq, c_seq = h_seq.transpose(1, 2), c_seq.transpose(1, 2)
        return h_seq, c_seq


def _run_direction(core, x: Tensor, w_ih: Tensor, w_hh: Tensor, b: Optional[Tensor],
                   w_hr: Optional[Tensor], h0: Tensor, c0: Tensor, lengths: Optional[Tensor],
                   reverse: bool, want_cs: bool = False):
    """One layer, one direction: projection GEMM, the backend's core, output projection.
    Returns ``(hs, hT, cT, cs)``; ``cs`` (every step's ``c``) is None unless ``want_cs``."""
    xproj = F.linear(x, w_ih, b)                         # [T, B, 4H], one GEMM
    if reverse:
        xproj = _reverse_padded(xproj, lengths)
    if w_hr is not None:
        # h[t-1] @ W_hh^T == m[t-1] @ (W_hh W_hr)^T; h0 enters through step 0's input.
        first = xproj[0] + h0 @ w_hh.t()
        xproj = torch.cat([first.unsqueeze(0), xproj[1:]], 0)
        w_core = w_hh @ w_hr
        h0_core = h0.new_zeros(h0.shape[0], w_hr.shape[1])
    else:
        w_core, h0_core = w_hh, h0
    args = (xproj.contiguous(), w_core.contiguous(), h0_core.contiguous(), c0.contiguous(),
            lengths)
    hs, hT, cT, cs = core(*args, return_cs=True) if want_cs else (*core(*args), None)
    if w_hr is not None:
        hs, hT = F.linear(hs, w_hr), F.linear(hT, w_hr)
    if reverse:
        hs = _reverse_padded(hs, lengths)
        cs = None if cs is None else _reverse_padded(cs, lengths)
    return hs, hT, cT, cs


def _state_sequence_backend(requested: str, resolved: str) -> str:
    """The core that runs a ``return_state_sequence`` call that resolved to the whole-layer
    ``resolved`` backend (cuDNN keeps no per-step ``c``)."""
    if requested == "auto":
        return STATE_SEQUENCE_FALLBACK
    raise ValueError(f"charlstm.LSTM: return_state_sequence=True needs every step's c, which the "
                     f"{resolved!r} backend (torch.nn.LSTM / cuDNN) does not give; use "
                     f"backend='auto' (runs the {STATE_SEQUENCE_FALLBACK!r} core for such calls) "
                     "or a kernel backend ('reference', 'triton', 'cuda')")


def convert_lstm(module: nn.Module, backend: str = "auto") -> nn.Module:
    """Replace every ``torch.nn.LSTM`` inside ``module`` by a :class:`charlstm.LSTM`, in place.

    The new layers reuse the very same ``Parameter`` objects (so weights, device, dtype and
    any optimizer that already holds them stay valid) and keep train/eval mode.  Returns the
    model; if ``module`` is itself an ``nn.LSTM``, returns its replacement.
    """
    backends.validate_name(backend)

    def convert_one(old: nn.LSTM) -> LSTM:
        new = LSTM(old.input_size, old.hidden_size, old.num_layers, old.bias, old.batch_first,
                   old.dropout, old.bidirectional, old.proj_size, device="meta", backend=backend)
        for name in old._flat_weights_names:
            setattr(new, name, getattr(old, name))
        new.train(old.training)
        return new

    if isinstance(module, nn.LSTM):
        return convert_one(module)
    if isinstance(module, LSTM):
        module.backend = backends.validate_name(backend)
        backends.preload(module.backend)
        return module
    for parent in module.modules():
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.LSTM):
                setattr(parent, child_name, convert_one(child))
            elif isinstance(child, LSTM):
                child.backend = backends.validate_name(backend)
                backends.preload(child.backend)
    return module
