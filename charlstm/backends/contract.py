"""The recurrent-core contract that every kernel backend implements, for every cell.

One call covers one layer and one direction of a recurrent layer, for the whole sequence.
Everything else -- input projections, multi-layer stacking, bidirectionality, ``proj_size``,
``PackedSequence`` handling, dropout, the weight gradients -- is done once, above the backends,
by the layers (:mod:`charlstm.layer`) and by :func:`make_core_op` below with plain torch GEMMs.

The cell (:class:`Cell`, :data:`CELLS`) is a parameter of the contract: ``"lstm"``, ``"gru"``,
``"rnn_tanh"``, ``"rnn_relu"``.  It fixes the gate count ``G`` (4, 3, 1, 1), whether a cell
state ``c`` exists (LSTM only), what is saved for backward, and the pointwise step.  A backend
may have several kernel paths (variants, named ``backend:variant`` in :mod:`charlstm.backends`);
each implements this same contract, and the cell and the variant reach the kernels as ``str``
arguments (variant ``""``: the backend's own choice).

Forward
-------
``forward(xproj, w_hh, h0, c0, lengths, b_hn, cell, variant) -> (hs, hT, cT, cs, gates)``

================  ===============  ========================================================
name              shape            meaning
================  ===============  ========================================================
``xproj``         ``[T, B, G*H]``  the input side of every gate for every step, dtype ``D``,
                                   contiguous, gate blocks in torch's order: LSTM ``i, f, g,
                                   o`` (``x W_ih^T + b_ih + b_hh``); GRU ``r, z, n`` (``x
                                   W_ih^T + b_ih + [b_hr, b_hz, 0]``); RNN one block (``x
                                   W_ih^T + b_ih + b_hh``)
``w_hh``          ``[G*H, H]``     recurrent weight, dtype ``D``, contiguous
``h0``            ``[B, H]``       initial hidden state, dtype ``D``
``c0``            ``[B, H]``       LSTM: initial cell state, dtype ``D``; other cells: None
``lengths``       ``[B]`` or None  None: every row runs all ``T`` steps.  Otherwise int32 on
                                   ``xproj``'s device: row ``b`` is *active* at step ``t`` iff
                                   ``t < lengths[b]`` (``1 <= lengths[b] <= T``)
``b_hn``          ``[H]`` or None  GRU: the hidden-side bias of ``n`` (it sits inside the reset
                                   gate, so it cannot be folded into ``xproj``); None means 0
                                   (and always for the other cells)
``hs``            ``[T, B, H]``    ``h[t]`` of active rows, exactly ``0`` for inactive rows; D
``hT``            ``[B, H]``       ``h`` after each row's *last active* step; dtype ``D``
``cT``            ``[B, H]``       LSTM: ``c`` after each row's last active step, dtype ``D``;
                                   other cells: an empty tensor (``[0]``)
``cs``            ``[T, B, H]``    LSTM, saved for backward: ``c[t]`` in the accumulation dtype
                                   ``A`` (float64 when ``D`` is float64, else float32);
                                   inactive rows carry their last ``c``; other cells: ``[0]``
``gates``         ``[T, B, S*H]``  saved for backward, dtype ``A``, blocks of ``H`` (``S`` =
                                   ``Cell.saved``): LSTM ``sigmoid(i), sigmoid(f), tanh(g),
                                   sigmoid(o)``; GRU ``r, z, n, hn`` with ``hn = h[t-1]
                                   W_hn^T + b_hn``; RNN the activated ``h[t]`` before rounding.
                                   Unspecified for inactive rows
================  ===============  ========================================================

Per step and active row, with ``a = h[t-1] @ w_hh^T`` accumulated in ``A`` and split into gate
blocks like ``xproj[t]``, and ``round_D`` the rounding of ``h`` to ``D`` (``h`` is stored in
``D`` and the next step reads the rounded value, as cuDNN does)::

    LSTM:  i, f, g, o = sigmoid(x_i + a_i), sigmoid(x_f + a_f), tanh(x_g + a_g), sigmoid(x_o + a_o)
           c[t] = f * c[t-1] + i * g                       (carried in A)
           h[t] = round_D(o * tanh(c[t]))
    GRU:   r, z = sigmoid(x_r + a_r), sigmoid(x_z + a_z);  hn = a_n + b_hn
           n = tanh(x_n + r * hn)
           h[t] = round_D((1 - z) * n + z * h[t-1])
    RNN:   h[t] = round_D(act(x + a)),  act = tanh or relu

Inactive rows keep ``h`` (and ``c``) unchanged, so ``hT``/``cT`` are the packed-sequence final
states for free, and write zeros to ``hs``.

Backward
--------
``backward(dhs, dhT, dcT, w_hh, h0, c0, hs, cs, gates, lengths, cell, variant)
-> (dgates, dh0, dc0)``

``dcT``/``c0``/``cs``: as in the forward (None/empty for cells without ``c``); ``h0``/``hs``:
the forward's (the GRU reads ``h[t-1]``).  ``dgates`` ``[T, B, G*H]`` (dtype ``D``) is
``d xproj``, exactly 0 for inactive rows; ``dhs`` of inactive rows is ignored (``hs`` is a
constant 0 there).  ``dh0`` is ``[B, H]`` in ``D``; ``dc0`` too for the LSTM, ``[0]``
otherwise.  The recurrence, per step from ``T-1`` down to 0 (active rows), ``dh = dh_next +
dhs[t]``, then::

    LSTM:  dc   = dc_next + dh * o * (1 - tanh(c[t])^2)
           dz_i = dc * g * i(1-i);   dz_f = dc * c[t-1] * f(1-f)
           dz_g = dc * i * (1-g^2);  dz_o = dh * tanh(c[t]) * o(1-o)
           dgates = dz;  dh_next = dz @ w_hh;  dc_next = dc * f
    GRU:   dn_pre = dh * (1-z) * (1-n^2);  dz_pre = dh * (h[t-1] - n) * z(1-z)
           dr_pre = dn_pre * hn * r(1-r)
           dgates = [dr_pre, dz_pre, dn_pre];  dhid = [dr_pre, dz_pre, dn_pre * r]
           dh_next = dh * z + dhid @ w_hh
    RNN:   dgates = dh * act'(h[t]) (tanh: 1 - h^2, relu: h > 0, from the saved h);
           dh_next = dgates @ w_hh

Then, outside the backend (one GEMM each, in :func:`make_core_op`): ``dW_hh = dhid^T @ [h0,
hs[:-1]]`` where ``dhid = dgates`` except the GRU's ``n`` block, ``dgates_n * r`` (the gradient
of ``a``, not of ``xproj``); GRU ``d b_hn = sum dhid_n``; ``d xproj = dgates``.  ``dW_ih``,
``db`` and ``dx`` follow from ``d xproj`` through torch's autograd of the input projection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["CELLS", "Cell", "CoreKernels", "acc_dtype", "cell_of", "check_core_inputs",
           "hidden_gradient", "make_core_op"]


@dataclass(frozen=True)
class Cell:
    """What the contract needs to know about a recurrent cell (see the module docstring)."""

    #: ``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"``
    name: str
    #: the ``nn.RNNBase`` mode of the layer built on it
    mode: str
    #: gate blocks of ``H`` in ``xproj`` and in the rows of ``w_hh``
    gates: int
    #: blocks of ``H`` in the saved ``gates``
    saved: int
    #: True when the cell carries a cell state ``c`` (``c0``, ``cT``, ``cs``, ``dcT``, ``dc0``)
    has_c: bool
    #: True when a hidden-side bias (the GRU's ``b_hn``) enters the core
    hidden_bias: bool


#: every cell of the contract, by name
CELLS = {c.name: c for c in (
    Cell("lstm", "LSTM", 4, 4, True, False),
    Cell("gru", "GRU", 3, 4, False, True),
    Cell("rnn_tanh", "RNN_TANH", 1, 1, False, False),
    Cell("rnn_relu", "RNN_RELU", 1, 1, False, False),
)}


def cell_of(name) -> Cell:
    """The :class:`Cell` named ``name`` (a Cell passes through); ``ValueError`` naming the
    choices otherwise."""
    if isinstance(name, Cell):
        return name
    cell = CELLS.get(name) if isinstance(name, str) else None
    if cell is None:
        raise ValueError(f"unknown cell {name!r}: expected one of {', '.join(CELLS)}")
    return cell


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation / cell-state dtype ``A`` for input dtype ``D``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class CoreKernels(NamedTuple):
    """A backend's two entry points (see the module docstring for the contract), each taking
    the cell name and the kernel variant (``str``; ``""``: the backend's own choice) as their
    last arguments and reporting the concrete path that ran with
    :func:`charlstm.backends.record_run`.

    ``forward(xproj, w_hh, h0, c0, lengths, b_hn, cell, variant) -> (hs, hT, cT, cs, gates)``
    ``backward(dhs, dhT, dcT, w_hh, h0, c0, hs, cs, gates, lengths, cell, variant)
    -> (dgates, dh0, dc0)``
    """

    forward: Callable[..., tuple]
    backward: Callable[..., tuple]


def check_core_inputs(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Optional[Tensor],
                      lengths: Optional[Tensor], b_hn: Optional[Tensor] = None,
                      cell="lstm") -> Cell:
    """Assert the contract's preconditions (cheap: shapes, dtypes, devices only); returns the
    :class:`Cell`."""
    cell = cell_of(cell)
    G = cell.gates
    if xproj.dim() != 3 or xproj.shape[2] % G:
        raise ValueError(f"core ({cell.name}): xproj must be [T, B, {G}*H], got "
                         f"{tuple(xproj.shape)}")
    T, B, GH = xproj.shape
    H = GH // G
    if tuple(w_hh.shape) != (GH, H):
        raise ValueError(f"core ({cell.name}): w_hh must be [{GH}, {H}], got "
                         f"{tuple(w_hh.shape)}")
    if cell.has_c and c0 is None:
        raise ValueError(f"core ({cell.name}): c0 is required")
    if not cell.has_c and c0 is not None:
        raise ValueError(f"core ({cell.name}): this cell has no cell state, c0 must be None")
    if b_hn is not None and not cell.hidden_bias:
        raise ValueError(f"core ({cell.name}): b_hn is only for the gru cell, must be None")
    shapes = [("h0", h0, (B, H)), ("c0", c0, (B, H)), ("b_hn", b_hn, (H,))]
    for name, t, shape in shapes:
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"core ({cell.name}): {name} must be {list(shape)}, got "
                             f"{tuple(t.shape)}")
    for name, t in (("w_hh", w_hh), ("h0", h0), ("c0", c0), ("b_hn", b_hn)):
        if t is not None and (t.dtype != xproj.dtype or t.device != xproj.device):
            raise ValueError(f"core ({cell.name}): {name} is {t.dtype} on {t.device}, expected "
                             f"{xproj.dtype} on {xproj.device} like xproj")
    if lengths is not None and (tuple(lengths.shape) != (B,) or lengths.dtype != torch.int32):
        raise ValueError(f"core: lengths must be int32 [{B}], got {lengths.dtype} "
                         f"{tuple(lengths.shape)}")
    return cell


def hidden_gradient(dgates: Tensor, gates: Tensor, cell) -> Tensor:
    """The gradient of ``a = h[t-1] @ w_hh^T`` (``dhid`` of the module docstring) from the
    backward's ``dgates`` (the gradient of ``xproj``): the same tensor, except the GRU's ``n``
    block, which the reset gate ``r`` (saved in ``gates``) scales."""
    cell = cell_of(cell)
    if cell.name != "gru":
        return dgates
    H = dgates.shape[-1] // 3
    r = gates[..., :H]
    return torch.cat([dgates[..., :2 * H], (dgates[..., 2 * H:] * r).to(dgates.dtype)], -1)


def make_core_op(name: str, kernels: CoreKernels, device_types=None):
    """Register a backend's kernels as ``charlstm::<name>_fwd``/``_bwd`` custom ops with autograd.

    Returns ``core(xproj, w_hh, h0, c0=None, lengths=None, variant="", *, cell="lstm",
    b_hn=None, return_cs=False) -> (hs, hT, cT)``, differentiable with respect to ``xproj``,
    ``w_hh``, ``h0``, ``c0`` and ``b_hn`` (``cT`` is empty for cells without ``c``).  ``cell`` and
    ``variant`` (``str`` arguments of both ops; variant ``""``: the backend's own choice) select
    the cell and the kernel path; the backward runs with the forward's.  ``return_cs=True`` adds
    the forward's ``cs`` (every step's ``c``, dtype ``A``; empty for cells without ``c``),
    detached: the backward takes no gradient for it (``charlstm.LSTM``'s
    ``return_state_sequence`` uses it).  The ops have fake (meta) implementations, so they work
    in eager mode, under ``torch.compile(fullgraph=True)`` and pass ``torch.library.opcheck``;
    ``core.fwd_op``/``core.bwd_op`` are the ops themselves.
    """
    fwd_name = f"charlstm::{name}_fwd"
    bwd_name = f"charlstm::{name}_bwd"

    @torch.library.custom_op(fwd_name, mutates_args=(), device_types=device_types)
    def fwd(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Optional[Tensor],
            lengths: Optional[Tensor], b_hn: Optional[Tensor], cell: str, variant: str
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return tuple(kernels.forward(xproj, w_hh, h0, c0, lengths, b_hn, cell, variant))

    @fwd.register_fake
    def _(xproj, w_hh, h0, c0, lengths, b_hn, cell, variant):
        spec = cell_of(cell)
        T, B, GH = xproj.shape
        H = GH // spec.gates
        a = acc_dtype(xproj.dtype)
        if spec.has_c:
            cT, cs = xproj.new_empty(B, H), xproj.new_empty(T, B, H, dtype=a)
        else:
            cT, cs = xproj.new_empty(0), xproj.new_empty(0, dtype=a)
        return (xproj.new_empty(T, B, H), xproj.new_empty(B, H), cT, cs,
                xproj.new_empty(T, B, spec.saved * H, dtype=a))

    @torch.library.custom_op(bwd_name, mutates_args=(), device_types=device_types)
    def bwd(dhs: Tensor, dhT: Tensor, dcT: Optional[Tensor], w_hh: Tensor, h0: Tensor,
            c0: Optional[Tensor], hs: Tensor, cs: Tensor, gates: Tensor,
            lengths: Optional[Tensor], cell: str, variant: str
            ) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(kernels.backward(dhs, dhT, dcT, w_hh, h0, c0, hs, cs, gates, lengths,
                                      cell, variant))

    @bwd.register_fake
    def _(dhs, dhT, dcT, w_hh, h0, c0, hs, cs, gates, lengths, cell, variant):
        spec = cell_of(cell)
        T, B, H = dhs.shape
        dc0 = w_hh.new_empty(B, H) if spec.has_c else w_hh.new_empty(0)
        return w_hh.new_empty(T, B, spec.gates * H), w_hh.new_empty(B, H), dc0

    def setup_context(ctx, inputs, output):
        xproj, w_hh, h0, c0, lengths, b_hn, cell, variant = inputs
        hs, hT, cT, cs, gates = output
        ctx.save_for_backward(w_hh, h0, c0, hs, cs, gates, lengths)
        ctx.cell, ctx.variant, ctx.has_b_hn = cell, variant, b_hn is not None

    def backward(ctx, dhs, dhT, dcT, _dcs, _dgates):
        w_hh, h0, c0, hs, cs, gates, lengths = ctx.saved_tensors
        spec = cell_of(ctx.cell)
        dhs = torch.zeros_like(hs) if dhs is None else dhs.contiguous()
        dhT = torch.zeros_like(h0) if dhT is None else dhT.contiguous()
        if spec.has_c:
            dcT = torch.zeros_like(c0) if dcT is None else dcT.contiguous()
        else:
            dcT = None
        dgates, dh0, dc0 = bwd(dhs, dhT, dcT, w_hh, h0, c0, hs, cs, gates, lengths, ctx.cell,
                               ctx.variant)
        # dW_hh = sum_t dhid[t]^T h[t-1]: one GEMM over all steps (inactive rows have
        # dgates == 0, so whatever h holds there does not matter).
        T, B, H = hs.shape
        dhid = hidden_gradient(dgates, gates, spec)
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]], 0) if T > 1 else h0.unsqueeze(0)
        dw_hh = dhid.reshape(T * B, -1).t().mm(h_prev.reshape(T * B, H))
        db_hn = dhid[..., 2 * H:].sum((0, 1)) if ctx.has_b_hn else None
        return (dgates, dw_hh, dh0, dc0 if spec.has_c else None, None, db_hn, None, None)

    fwd.register_autograd(backward, setup_context=setup_context)

    def core(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Optional[Tensor] = None,
             lengths: Optional[Tensor] = None, variant: str = "", *, cell: str = "lstm",
             b_hn: Optional[Tensor] = None, return_cs: bool = False):
        hs, hT, cT, cs, _gates = fwd(xproj, w_hh, h0, c0, lengths, b_hn, cell, variant)
        if return_cs:
            return hs, hT, cT, cs.detach()
        return hs, hT, cT

    core.fwd_op = fwd
    core.bwd_op = bwd
    return core
