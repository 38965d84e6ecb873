"""The ``reference`` backend: the recurrent core in plain tensor ops, written to be read.

This is the specification every kernel is checked against (see
:mod:`charlstm.backends.contract` for the contract), for every cell: one loop over the steps
(:func:`forward`, :func:`backward`) and, per cell, its pointwise step forward and backward
(``_<cell>_step``, ``_<cell>_step_back``).  It computes in float32 (float64 for float64 inputs),
rounds ``h`` to the input dtype every step as a kernel storing ``h`` in that dtype must, carries
``c`` in float32, and has a hand-written backward.  It never calls torch's native recurrent ops
(``torch.lstm``, ``torch.gru``, ``torch._VF.*``, ``*_cell``): a test proves it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import record_run as _record_run
from .contract import CoreKernels, acc_dtype, cell_of, make_core_op

#: the reference has no variants (the registry names it plain ``reference``)
VARIANTS: tuple = ()


def _active(lengths: Optional[Tensor], t: int) -> Optional[Tensor]:
    """[B, 1] bool mask of the rows still running at step t (None: all of them)."""
    return None if lengths is None else (lengths > t).unsqueeze(1)


def _keep(m: Optional[Tensor], new: Tensor, old: Tensor) -> Tensor:
    """``new`` for the active rows of mask ``m``, ``old`` for the others."""
    return new if m is None else torch.where(m, new, old)


# ----------------------------------------------------------------------------- pointwise steps
# Forward: (x = xproj[t] in A, a = h[t-1] @ w_hh^T in A, h = h[t-1] in A, c = c[t-1] or None,
# b_hn or None) -> (h_new before rounding, c_new or None, saved gates [B, S*H]).
def _lstm_step(x, a, h, c, b_hn):
    i, f, g, o = (x + a).chunk(4, dim=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c_new = f * c + i * g
    return o * c_new.tanh(), c_new, torch.cat([i, f, g, o], dim=1)


def _gru_step(x, a, h, c, b_hn):
    x_r, x_z, x_n = x.chunk(3, dim=1)
    a_r, a_z, a_n = a.chunk(3, dim=1)
    r, z = (x_r + a_r).sigmoid(), (x_z + a_z).sigmoid()
    hn = a_n if b_hn is None else a_n + b_hn
    n = (x_n + r * hn).tanh()
    return (1 - z) * n + z * h, None, torch.cat([r, z, n, hn], dim=1)


def _rnn_tanh_step(x, a, h, c, b_hn):
    h_new = (x + a).tanh()
    return h_new, None, h_new


def _rnn_relu_step(x, a, h, c, b_hn):
    h_new = (x + a).relu()
    return h_new, None, h_new


# Backward: (dh = dh_next + dhs[t], dc = dc_next or None, saved gates [B, S*H], c[t] or None,
# c[t-1] or None, h[t-1] in A) -> (dgates = d xproj[t], dhid = d a, the part of dh[t-1] that
# does not go through w_hh, dc[t-1] or None).
def _lstm_step_back(dh, dc, gates, c_t, c_prev, h_prev):
    i, f, g, o = gates.chunk(4, dim=1)
    tc = c_t.tanh()
    dc = dc + dh * o * (1 - tc * tc)
    dz = torch.cat([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                    dh * tc * o * (1 - o)], dim=1)
    return dz, dz, 0.0, dc * f


def _gru_step_back(dh, dc, gates, c_t, c_prev, h_prev):
    r, z, n, hn = gates.chunk(4, dim=1)
    dn = dh * (1 - z) * (1 - n * n)
    dz = dh * (h_prev - n) * z * (1 - z)
    dr = dn * hn * r * (1 - r)
    return torch.cat([dr, dz, dn], dim=1), torch.cat([dr, dz, dn * r], dim=1), dh * z, None


def _rnn_tanh_step_back(dh, dc, gates, c_t, c_prev, h_prev):
    dz = dh * (1 - gates * gates)
    return dz, dz, 0.0, None


def _rnn_relu_step_back(dh, dc, gates, c_t, c_prev, h_prev):
    dz = dh * (gates > 0).to(dh.dtype)
    return dz, dz, 0.0, None


_STEPS = {"lstm": (_lstm_step, _lstm_step_back), "gru": (_gru_step, _gru_step_back),
          "rnn_tanh": (_rnn_tanh_step, _rnn_tanh_step_back),
          "rnn_relu": (_rnn_relu_step, _rnn_relu_step_back)}


# ----------------------------------------------------------------------------- the recurrence
def forward(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Optional[Tensor],
            lengths: Optional[Tensor], b_hn: Optional[Tensor] = None, cell="lstm"):
    """The contract's forward -> ``(hs, hT, cT, cs, gates)`` for ``cell``."""
    spec = cell_of(cell)
    step = _STEPS[spec.name][0]
    T, B, GH = xproj.shape
    H = GH // spec.gates
    D, A = xproj.dtype, acc_dtype(xproj.dtype)
    w = w_hh.to(A)
    bias = None if b_hn is None else b_hn.to(A)
    h = h0.to(A)
    c = c0.to(A) if spec.has_c else None
    hs = xproj.new_zeros(T, B, H)
    cs = xproj.new_empty(T, B, H, dtype=A) if spec.has_c else xproj.new_empty(0, dtype=A)
    gates = xproj.new_zeros(T, B, spec.saved * H, dtype=A)
    for t in range(T):
        h_new, c_new, gates[t] = step(xproj[t].to(A), h @ w.t(), h, c, bias)
        h_new = h_new.to(D)                               # h lives in the input dtype
        m = _active(lengths, t)
        hs[t] = _keep(m, h_new, torch.zeros_like(h_new))
        h = _keep(m, h_new.to(A), h)
        if spec.has_c:
            c = _keep(m, c_new, c)
            cs[t] = c
    cT = c.to(D) if spec.has_c else xproj.new_empty(0)
    return hs, h.to(D), cT, cs, gates


def backward(dhs: Tensor, dhT: Tensor, dcT: Optional[Tensor], w_hh: Tensor, h0: Tensor,
             c0: Optional[Tensor], hs: Tensor, cs: Tensor, gates: Tensor,
             lengths: Optional[Tensor], cell="lstm"):
    """The contract's backward -> ``(dgates, dh0, dc0)`` for ``cell``."""
    spec = cell_of(cell)
    step_back = _STEPS[spec.name][1]
    T, B, H = dhs.shape
    A = gates.dtype
    w = w_hh.to(A)
    dh = dhT.to(A)
    dc = dcT.to(A) if spec.has_c else None
    dgates = torch.zeros(T, B, spec.gates * H, dtype=w_hh.dtype, device=dhs.device)
    for t in reversed(range(T)):
        c_t = cs[t] if spec.has_c else None
        c_prev = (cs[t - 1] if t > 0 else c0.to(A)) if spec.has_c else None
        h_prev = (hs[t - 1] if t > 0 else h0).to(A)
        dz, dhid, dh_direct, dc_prev = step_back(dh + dhs[t].to(A), dc, gates[t], c_t, c_prev,
                                                 h_prev)
        m = _active(lengths, t)
        dgates[t] = _keep(m, dz, torch.zeros_like(dz))
        dh = _keep(m, dhid @ w + dh_direct, dh)
        if spec.has_c:
            dc = _keep(m, dc_prev, dc)
    dc0 = dc.to(w_hh.dtype) if spec.has_c else w_hh.new_empty(0)
    return dgates, dh.to(w_hh.dtype), dc0


def variant_reason(variant: str, device=None, dtype=None) -> Optional[str]:
    """The reference runs on every device and dtype the registry lists: always None."""
    if variant:
        raise ValueError(f"the reference backend has no variants, got {variant!r}")
    return None


def _op_forward(xproj, w_hh, h0, c0, lengths, b_hn, cell, variant: str):
    """The registered forward: the contract's arguments, the cell and variant last."""
    variant_reason(variant)
    out = forward(xproj, w_hh, h0, c0, lengths, b_hn, cell)
    _record_run("forward", "reference")
    return out


def _op_backward(dhs, dhT, dcT, w_hh, h0, c0, hs, cs, gates, lengths, cell, variant: str):
    variant_reason(variant)
    out = backward(dhs, dhT, dcT, w_hh, h0, c0, hs, cs, gates, lengths, cell)
    _record_run("backward", "reference")
    return out


kernels = CoreKernels(_op_forward, _op_backward)
core = make_core_op("reference_core", kernels)
