"""The ``reference`` backend: the recurrent core in plain tensor ops, written to be read.

This is the specification every kernel is checked against (see
:mod:`charlstm.backends.contract` for the contract).  It computes in float32 (float64 for
float64 inputs), rounds ``h`` to the input dtype every step as a kernel storing ``h`` in that
dtype must, carries ``c`` in float32, and has a hand-written backward.  It never calls
torch's native LSTM (``torch.lstm``, ``torch._VF.lstm``, ``lstm_cell``): a test proves it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import record_run as _record_run
from .contract import CoreKernels, acc_dtype, make_core_op

#: the reference has no variants (the registry names it plain ``reference``)
VARIANTS: tuple = ()


def _active(lengths: Optional[Tensor], t: int) -> Optional[Tensor]:
    """[B, 1] bool mask of the rows still running at step t (None: all of them)."""
    return None if lengths is None else (lengths > t).unsqueeze(1)


def forward(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, lengths: Optional[Tensor]):
    T, B, G = xproj.shape
    H = G // 4
    A = acc_dtype(xproj.dtype)
    w = w_hh.to(A)
    h, c = h0.to(A), c0.to(A)
    hs = xproj.new_zeros(T, B, H)
    cs = xproj.new_empty(T, B, H, dtype=A)
    gates = xproj.new_empty(T, B, G, dtype=A)
    for t in range(T):
        z = xproj[t].to(A) + h @ w.t()
        i, f, g, o = z.chunk(4, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c_new = f * c + i * g
        h_new = (o * c_new.tanh()).to(xproj.dtype)       # h lives in the input dtype
        gates[t] = torch.cat([i, f, g, o], dim=1)
        m = _active(lengths, t)
        if m is None:
            c, h = c_new, h_new.to(A)
            hs[t] = h_new
        else:
            c = torch.where(m, c_new, c)
            h = torch.where(m, h_new.to(A), h)
            hs[t] = torch.where(m, h_new, torch.zeros_like(h_new))
        cs[t] = c
    return hs, h.to(xproj.dtype), c.to(xproj.dtype), cs, gates


def backward(dhs: Tensor, dhT: Tensor, dcT: Tensor, w_hh: Tensor, c0: Tensor, cs: Tensor,
             gates: Tensor, lengths: Optional[Tensor]):
    T, B, H = dhs.shape
    A = cs.dtype
    w = w_hh.to(A)
    dh, dc = dhT.to(A), dcT.to(A)
    dgates = torch.zeros(T, B, 4 * H, dtype=w_hh.dtype, device=dhs.device)
    for t in reversed(range(T)):
        i, f, g, o = gates[t].chunk(4, dim=1)
        c_t = cs[t]
        c_prev = cs[t - 1] if t > 0 else c0.to(A)
        tc = c_t.tanh()
        dh_t = dh + dhs[t].to(A)
        dc_t = dc + dh_t * o * (1 - tc * tc)
        dz = torch.cat([dc_t * g * i * (1 - i),
                        dc_t * c_prev * f * (1 - f),
                        dc_t * i * (1 - g * g),
                        dh_t * tc * o * (1 - o)], dim=1)
        dh_prev = dz @ w
        dc_prev = dc_t * f
        m = _active(lengths, t)
        if m is None:
            dh, dc = dh_prev, dc_prev
            dgates[t] = dz
        else:
            dh = torch.where(m, dh_prev, dh)
            dc = torch.where(m, dc_prev, dc)
            dgates[t] = torch.where(m, dz, torch.zeros_like(dz))
    return dgates, dh.to(w_hh.dtype), dc.to(w_hh.dtype)


def variant_reason(variant: str, device=None, dtype=None) -> Optional[str]:
    """The reference runs on every device and dtype the registry lists: always None."""
    if variant:
        raise ValueError(f"the reference backend has no variants, got {variant!r}")
    return None


def _op_forward(xproj, w_hh, h0, c0, lengths, variant: str):
    variant_reason(variant)
    out = forward(xproj, w_hh, h0, c0, lengths)
    _record_run("forward", "reference")
    return out


def _op_backward(dhs, dhT, dcT, w_hh, c0, cs, gates, lengths, variant: str):
    variant_reason(variant)
    out = backward(dhs, dhT, dcT, w_hh, c0, cs, gates, lengths)
    _record_run("backward", "reference")
    return out


kernels = CoreKernels(_op_forward, _op_backward)
core = make_core_op("reference_core", kernels)
