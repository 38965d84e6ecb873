"""The recurrent-core contract that every kernel backend implements.

One call covers one layer and one direction of an LSTM, for the whole sequence.
Everything else -- input projections, multi-layer stacking, bidirectionality,
``proj_size``, ``PackedSequence`` handling, dropout, the weight gradients --
is done once, above the backends, by :mod:`charlstm.lstm` and by
:func:`make_core_op` below with plain torch GEMMs.

Forward
-------
``forward(xproj, w_hh, h0, c0, lengths) -> (hs, hT, cT, cs, gates)``

================  =============  ==========================================================
name              shape          meaning
================  =============  ==========================================================
``xproj``         ``[T, B, 4H]`` ``x @ W_ih^T + b_ih + b_hh`` for every step; gate order
                                 ``i, f, g, o`` (torch's); contiguous; dtype ``D``
``w_hh``          ``[4H, H]``    recurrent weight, dtype ``D``, contiguous
``h0``, ``c0``    ``[B, H]``     initial state, dtype ``D``, contiguous
``lengths``       ``[B]`` or     ``None``: every row runs all ``T`` steps.  Otherwise int32 on
                  ``None``       ``xproj``'s device: row ``b`` is *active* at step ``t`` iff
                                 ``t < lengths[b]`` (``1 <= lengths[b] <= T``).
``hs``            ``[T, B, H]``  ``h[t]`` of active rows, exactly ``0`` for inactive rows; dtype D
``hT``, ``cT``    ``[B, H]``     the state after each row's *last active* step; dtype ``D``
``cs``            ``[T, B, H]``  saved for backward: ``c[t]`` in the accumulation dtype ``A``
                                 (float64 when ``D`` is float64, else float32); inactive rows
                                 carry their last ``c``
``gates``         ``[T, B, 4H]`` saved for backward: activated gates ``sigmoid(i), sigmoid(f),
                                 tanh(g), sigmoid(o)`` in dtype ``A``
================  =============  ==========================================================

Per step and active row::

    z      = xproj[t] + h[t-1] @ w_hh^T          (accumulated in A)
    i,f,g,o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
    c[t]   = f * c[t-1] + i * g                  (carried in A)
    h[t]   = round_to_D(o * tanh(c[t]))          (h is stored in D and the next step reads
                                                  the rounded value, as cuDNN does)

Inactive rows keep ``h`` and ``c`` unchanged (so ``hT``/``cT`` are the packed-sequence final
states for free) and write zeros to ``hs``.

Backward
--------
``backward(dhs, dhT, dcT, w_hh, c0, cs, gates, lengths) -> (dgates, dh0, dc0)``

``dgates`` ``[T, B, 4H]`` (dtype ``D``) is the gradient with respect to the gate
pre-activations ``z``, which equals ``d xproj``; it is exactly 0 for inactive rows, and
``dhs`` of inactive rows is ignored (``hs`` is a constant 0 there).  ``dh0``/``dc0`` are
``[B, H]`` in dtype ``D``.  The recurrence, per step from ``T-1`` down to 0 (active rows)::

    dh      = dh_next + dhs[t]
    dc      = dc_next + dh * o * (1 - tanh(c[t])^2)
    dz_i    = dc * g * i(1-i);   dz_f = dc * c[t-1] * f(1-f)
    dz_g    = dc * i * (1-g^2);  dz_o = dh * tanh(c[t]) * o(1-o)
    dh_next = dz @ w_hh;          dc_next = dc * f

Then, outside the backend (one GEMM each, in :func:`make_core_op`):
``dW_hh = dgates^T @ [h0, hs[:-1]]`` and ``d xproj = dgates``.  ``dW_ih``, ``db`` and
``dx`` follow from ``d xproj`` through torch's autograd of the input projection.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["CoreKernels", "acc_dtype", "make_core_op", "check_core_inputs"]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation / cell-state dtype ``A`` for input dtype ``D``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class CoreKernels(NamedTuple):
    """A backend's two entry points (see the module docstring for the contract).

    ``forward(xproj, w_hh, h0, c0, lengths) -> (hs, hT, cT, cs, gates)``
    ``backward(dhs, dhT, dcT, w_hh, c0, cs, gates, lengths) -> (dgates, dh0, dc0)``
    """

    forward: Callable[..., tuple]
    backward: Callable[..., tuple]


def check_core_inputs(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor,
                      lengths: Optional[Tensor]) -> None:
    """Assert the contract's preconditions (cheap: shapes, dtypes, devices only)."""
    if xproj.dim() != 3 or xproj.shape[2] % 4:
        raise ValueError(f"core: xproj must be [T, B, 4H], got {tuple(xproj.shape)}")
    T, B, G = xproj.shape
    H = G // 4
    if tuple(w_hh.shape) != (G, H):
        raise ValueError(f"core: w_hh must be [{G}, {H}], got {tuple(w_hh.shape)}")
    for name, t in (("h0", h0), ("c0", c0)):
        if tuple(t.shape) != (B, H):
            raise ValueError(f"core: {name} must be [{B}, {H}], got {tuple(t.shape)}")
    for name, t in (("w_hh", w_hh), ("h0", h0), ("c0", c0)):
        if t.dtype != xproj.dtype or t.device != xproj.device:
            raise ValueError(f"core: {name} is {t.dtype} on {t.device}, expected "
                             f"{xproj.dtype} on {xproj.device} like xproj")
    if lengths is not None and (tuple(lengths.shape) != (B,) or lengths.dtype != torch.int32):
        raise ValueError(f"core: lengths must be int32 [{B}], got {lengths.dtype} "
                         f"{tuple(lengths.shape)}")


def make_core_op(name: str, kernels: CoreKernels, device_types=None):
    """Register a backend's kernels as ``charlstm::<name>`` custom ops with autograd.

    Returns ``core(xproj, w_hh, h0, c0, lengths) -> (hs, hT, cT)``, differentiable with
    respect to ``xproj``, ``w_hh``, ``h0`` and ``c0``; ``core(..., return_cs=True)`` adds the
    forward's ``cs`` (every step's ``c``, dtype ``A``), detached: the backward takes no gradient
    for it (``charlstm.LSTM``'s ``return_state_sequence`` uses it).  The forward and backward are
    ``torch.library.custom_op``s with fake (meta) implementations, so they work in eager
    mode, under ``torch.compile(fullgraph=True)`` and pass ``torch.library.opcheck``.
    """
    fwd_name = f"charlstm::{name}_fwd"
    bwd_name = f"charlstm::{name}_bwd"

    @torch.library.custom_op(fwd_name, mutates_args=(), device_types=device_types)
    def fwd(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor,
            lengths: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return tuple(kernels.forward(xproj, w_hh, h0, c0, lengths))

    @fwd.register_fake
    def _(xproj, w_hh, h0, c0, lengths):
        T, B, G = xproj.shape
        H = G // 4
        a = acc_dtype(xproj.dtype)
        return (xproj.new_empty(T, B, H), h0.new_empty(B, H), c0.new_empty(B, H),
                xproj.new_empty(T, B, H, dtype=a), xproj.new_empty(T, B, G, dtype=a))

    @torch.library.custom_op(bwd_name, mutates_args=(), device_types=device_types)
    def bwd(dhs: Tensor, dhT: Tensor, dcT: Tensor, w_hh: Tensor, c0: Tensor, cs: Tensor,
            gates: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(kernels.backward(dhs, dhT, dcT, w_hh, c0, cs, gates, lengths))

    @bwd.register_fake
    def _(dhs, dhT, dcT, w_hh, c0, cs, gates, lengths):
        T, B, H = dhs.shape
        return (dhs.new_empty(T, B, 4 * H, dtype=w_hh.dtype), c0.new_empty(B, H, dtype=w_hh.dtype),
                c0.new_empty(B, H, dtype=w_hh.dtype))

    def setup_context(ctx, inputs, output):
        xproj, w_hh, h0, c0, lengths = inputs
        hs, hT, cT, cs, gates = output
        ctx.save_for_backward(w_hh, h0, c0, hs, cs, gates, lengths)

    def backward(ctx, dhs, dhT, dcT, _dcs, _dgates):
        w_hh, h0, c0, hs, cs, gates, lengths = ctx.saved_tensors
        dhs = torch.zeros_like(hs) if dhs is None else dhs.contiguous()
        dhT = torch.zeros_like(h0) if dhT is None else dhT.contiguous()
        dcT = torch.zeros_like(c0) if dcT is None else dcT.contiguous()
        dgates, dh0, dc0 = bwd(dhs, dhT, dcT, w_hh, c0, cs, gates, lengths)
        # dW_hh = sum_t dgates[t]^T h[t-1]: one GEMM over all steps (inactive rows have
        # dgates == 0, so whatever h holds there does not matter).
        T, B, H = hs.shape
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]], 0) if T > 1 else h0.unsqueeze(0)
        dw_hh = dgates.reshape(T * B, 4 * H).t().mm(h_prev.reshape(T * B, H))
        return dgates, dw_hh, dh0, dc0, None

    fwd.register_autograd(backward, setup_context=setup_context)

    def core(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor,
             lengths: Optional[Tensor] = None, *, return_cs: bool = False):
        hs, hT, cT, cs, _gates = fwd(xproj, w_hh, h0, c0, lengths)
        if return_cs:
            return hs, hT, cT, cs.detach()
        return hs, hT, cT

    core.fwd_op = fwd
    core.bwd_op = bwd
    return core
