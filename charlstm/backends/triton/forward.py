"""Fused forward kernel of the recurrent core of every cell (:mod:`charlstm.backends.contract`).

One kernel, :func:`lstm_fwd_kernel` (named for the cell it was written for; the ``CELL``
constexpr -- ``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"`` -- picks the pointwise step
at compile time, everything else is shared), serves the three schedules of :mod:`.common`:

* ``"persistent"`` (GPU default; grid ``(nb, nh)``, one launch): program ``(p, q)`` owns batch
  tile ``p`` and every ``nh``-th hidden tile from ``q``, runs every step, and after each step
  meets the other ``nh - 1`` programs of its batch tile at :func:`.common.grid_barrier` (an
  arrival counter, release/acquire at GPU scope; the grid is launched cooperatively); ``h``
  crosses programs through ``hbuf``.  Under the interpreter it runs one launch per step when
  ``nh > 1``.
* ``"sequence"`` (grid ``(ceil(B/BLOCK_B), 1)``, one launch): program ``p`` owns batch rows
  ``[p*BLOCK_B, (p+1)*BLOCK_B)`` and *all* hidden units, and runs every time step itself, so
  no program ever waits for another (this is why it also runs under the interpreter, which
  executes programs one after another).  ``tl.debug_barrier()`` ends each step: the next step
  reads, through global memory (L1/L2), the ``h`` written by other threads of the same program.
* ``"step"`` (grid ``(ceil(B/BLOCK_B), ceil(H/BLOCK_H))``, one launch per step): program
  ``(p, q)`` owns batch tile ``p`` and hidden tile ``q``; the kernel boundary is the step barrier.

Per step and per tile of ``BLOCK_H`` hidden units ``j`` (of the program's batch tile), in one
pass: one float32 accumulator ``[BLOCK_B, SLOTS * BLOCK_H]`` receives ``h[t-1] @ Wcat`` with
one ``tl.dot`` per ``BLOCK_K`` chunk of ``h``, where ``Wcat`` is the gate-interleaved slice of
``W_hh^T`` (column ``SLOTS * jj + gate`` is row ``gate * H + j0 + jj`` of ``W_hh``).  ``SLOTS``
(:func:`.common.dot_slots`) is 4 for the LSTM (i, f, g, o: one dot with N = ``4 * BLOCK_H``
instead of four with N = ``BLOCK_H``, which also allows 4- and 8-wide hidden tiles) and for
the GRU (r, z, n, and a fourth slot whose ``W`` columns are masked to zero: N stays a power of
two and the same reshape serves both), 1 for the RNN (N = ``BLOCK_H``, so its tiles are >= 16
wide).  With 4 slots a reshape to ``[BLOCK_B, BLOCK_H, 2, 2]`` and two ``tl.split`` give the
gate blocks ``a_0 .. a_3``; ``xproj[t]`` is added and the cell's step (:func:`.common.lstm_cell`,
:func:`.common.gru_cell`, :func:`.common.rnn_cell`) runs on those registers -- the gate
pre-activations never go to global memory.  The GRU adds ``b_hn`` to ``a_n`` inside the step
(the reset gate scales it) and reads its own tile of ``h[t-1]`` for ``z * h[t-1]``.

What lives where: with ``W_RESIDENT`` (persistent forward, H <= 512, one hidden tile per
program; chosen by the autotuner where it fits) the program's ``Wcat`` slice is loaded once and
stays in registers for all steps; otherwise nothing stays on chip across steps (``W_hh`` tiles
are re-read every step, from L2 once warm).  ``h`` is exchanged through a double-buffered scratch
``hbuf [2, B, H]`` (input dtype, step parity); the LSTM's ``c_prev`` is read back from
``cs[t-1]``; the persistent schedule adds one int64 arrival counter per batch tile
(``COUNTER_STRIDE`` apart).  Offsets that scale with ``B * H`` or ``H^2`` are 64-bit (see
:func:`.common.batch_tile`).  Written per step: ``hs[t]`` (dtype D), ``gates[t]`` (float32),
``hbuf``, the LSTM's ``cs[t]`` (float32); ``hT`` (and ``cT``) at the last step.  Saved for
backward (by the contract), per element of T x B x H: LSTM ``cs`` + ``gates`` (i, f, g, o), 4 +
16 = 20 bytes; GRU ``gates`` (r, z, n, hn), 16 bytes; RNN ``gates`` (the activated ``h`` in
float32), 4 bytes -- plus ``hs``, 2 or 4 bytes, which the layer keeps.

Numerics: float32 accumulation, ``c`` in float32, ``h`` rounded to the input dtype every step
and read back rounded, rows with ``t >= lengths[b]`` keep ``h``/``c`` and write ``hs = 0``.
The kernel is idempotent (a pure function of its inputs), so the GPU autotuner may re-run it.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..contract import cell_of
from .common import (
    COUNTER_STRIDE,
    Launch,
    batch_tile,
    cell_launch,
    choose_launch,
    dot_mode,
    grid_barrier,
    gru_cell,
    lstm_cell,
    rnn_cell,
    run_schedule,
    tile_strides,
    tuned_kernels,
)

__all__ = ["forward", "lstm_fwd_kernel"]


@triton.jit
def lstm_fwd_kernel(
        xproj_ptr, w_ptr, h0_ptr, c0_ptr, bhn_ptr, len_ptr,   # inputs
        hs_ptr, hT_ptr, cT_ptr, cs_ptr, gates_ptr, hbuf_ptr,  # outputs and scratch
        sync_ptr, t_first, t_count, T, B, H,
        CELL: tl.constexpr, HAS_LENGTHS: tl.constexpr, DOT_F32: tl.constexpr,
        PRECISION: tl.constexpr, GRID_SYNC: tl.constexpr, XCACHE: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
        W_RESIDENT: tl.constexpr):
    """Run steps ``t_first .. t_first + t_count - 1`` of the forward recurrence of ``CELL``.

    ``G`` gate blocks (LSTM 4, GRU 3, RNN 1), ``S`` saved blocks (4, 4, 1).  Pointers are to
    contiguous tensors: ``xproj [T,B,G*H]``, ``w [G*H,H]``, ``h0 [B,H]`` (dtype D), ``len [B]``
    int32 (ignored unless ``HAS_LENGTHS``), ``hs [T,B,H]`` D, ``hT [B,H]`` D, ``gates
    [T,B,S*H]`` f32, ``hbuf [2,B,H]`` D scratch (``hbuf[t % 2]`` holds ``h[t-1]`` for t >= 1;
    step 0 reads ``h0``).  LSTM only (any pointer otherwise, never read): ``c0 [B,H]`` D,
    ``cT [B,H]`` D, ``cs [T,B,H]`` f32.  GRU only: ``bhn [H]`` D (``b_hn``).  ``sync`` int64
    zeros: the arrival counters of :func:`.common.grid_barrier` (batch tile ``p``'s at ``p *
    COUNTER_STRIDE``) when ``GRID_SYNC`` (the persistent schedule), which also loads ``hbuf``
    with ``XCACHE = ".cg"`` -- a cache hint only (L2, not L1, where the load is not pipelined
    into ``cp.async``, which ignores it); what makes other programs' ``h`` visible is the
    barrier's release/acquire (see there).

    The matmul is one ``tl.dot`` per K chunk on a gate-interleaved ``[BLOCK_K, SLOTS *
    BLOCK_H]`` slice of ``W_hh^T`` (column ``SLOTS * jj + gate`` = row ``gate * H + j0 + jj``
    of ``W_hh``; the GRU's fourth slot is masked to zero), so ``BLOCK_H`` may be 4 or 8 for
    the LSTM and GRU and must be >= 16 for the RNN (``tl.dot`` needs N >= 16).
    ``W_RESIDENT``: the program loads its slice once, before the first step, and keeps it in
    registers for every step; valid only when each program owns exactly one hidden tile
    (``n_h * BLOCK_H >= H``) and one K chunk covers H (``BLOCK_K >= H``) --
    :func:`.common.run_schedule` checks both.
    """
    # the cell's shape (the same numbers as contract.CELLS and common.dot_slots)
    NG: tl.constexpr = 4 if CELL == "lstm" else (3 if CELL == "gru" else 1)  # gate blocks
    SLOTS: tl.constexpr = 1 if NG == 1 else 4          # dot columns per hidden unit
    NS: tl.constexpr = 1 if NG == 1 else 4             # saved blocks in gates
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    n_h = tl.num_programs(1)
    OUT_T = hs_ptr.dtype.element_ty
    row0, bmask, L, rows = batch_tile(len_ptr, T, B, HAS_LENGTHS, BLOCK_B)
    G = NG * H
    row_g, row_s, row_h, BH, BG, BS = tile_strides(rows, B, H, NG, NS)
    # every [.., B, ..] pointer moves to this program's batch tile (64-bit, see batch_tile)
    xproj_ptr += row0 * G
    gates_ptr += row0 * (NS * H)
    h0_ptr += row0 * H
    hs_ptr += row0 * H
    hT_ptr += row0 * H
    hbuf_ptr += row0 * H
    if CELL == "lstm":
        c0_ptr += row0 * H
        cT_ptr += row0 * H
        cs_ptr += row0 * H
    rj0 = tl.arange(0, BLOCK_H)
    rk0 = tl.arange(0, BLOCK_K)
    rc = tl.arange(0, SLOTS * BLOCK_H)   # dot column c = SLOTS * jj + gate
    c_gate = rc % SLOTS
    c_jj = rc // SLOTS
    if W_RESIDENT:                   # this program's only hidden tile, all of K, for all steps
        rjc = pid_h * BLOCK_H + c_jj
        wmask = (rk0 < H)[:, None] & (rjc < H)[None, :]
        if NG < SLOTS:               # the GRU's fourth slot: zero
            wmask = wmask & (c_gate < NG)[None, :]
        w_res = tl.load(w_ptr + tl.cast(c_gate * H + rjc, tl.int64)[None, :] * H + rk0[:, None],
                        mask=wmask, other=0.0)
        if DOT_F32:
            w_res = w_res.to(tl.float32)
    for s in range(0, t_count):
        t = t_first + s
        t64 = t.to(tl.int64)
        cur = t % 2
        # per-row step predicates, built from a vector (the interpreter mishandles a scalar
        # bool broadcast into a mask)
        tv = tl.zeros([BLOCK_B], dtype=tl.int32) + t
        act = ((L > tv) & bmask)[:, None]
        prev_r = (bmask & (tv > 0))[:, None]        # read h[t-1], c[t-1] from the scratch/cs
        first_r = (bmask & (tv == 0))[:, None]      # read h0, c0
        last_r = (bmask & (tv == T - 1))[:, None]   # write hT, cT
        for j0 in range(pid_h * BLOCK_H, H, n_h * BLOCK_H):
            rj = j0 + rj0
            jmask = rj < H
            m2 = bmask[:, None] & jmask[None, :]
            rjc = j0 + c_jj
            # row offsets of W_hh in 64 bits: G*H * H may exceed 2^31
            w_cols = w_ptr + tl.cast(c_gate * H + rjc, tl.int64)[None, :] * H
            w_cmask = (rjc < H)[None, :]
            if NG < SLOTS:           # the GRU's fourth slot: zero
                w_cmask = w_cmask & (c_gate < NG)[None, :]
            acc = tl.zeros([BLOCK_B, SLOTS * BLOCK_H], dtype=tl.float32)
            for k0 in range(0, H, BLOCK_K):
                rk = k0 + rk0
                kmask = rk < H
                hoff = row_h + rk[None, :]
                # h[t-1]: from h0 at step 0, else from the scratch of this step's parity
                h = (tl.load(hbuf_ptr + cur * BH + hoff, mask=prev_r & kmask[None, :], other=0.0,
                             cache_modifier=XCACHE)
                     + tl.load(h0_ptr + hoff, mask=first_r & kmask[None, :], other=0.0))
                if W_RESIDENT:
                    w = w_res
                else:
                    w = tl.load(w_cols + rk[:, None], mask=kmask[:, None] & w_cmask, other=0.0)
                    if DOT_F32:
                        w = w.to(tl.float32)
                if DOT_F32:
                    h = h.to(tl.float32)
                acc = tl.dot(h, w, acc, input_precision=PRECISION)
            # int32 tile offsets first, then one pointer add: adding rows and columns to
            # the pointer one after the other spilled the LSTM's registers (ptxas, sm_90)
            x_t = xproj_ptr + t64 * BG + (row_g + rj[None, :])   # gate 0 of [t, b, j]
            g_t = gates_ptr + t64 * BS + (row_s + rj[None, :])   # saved block 0 of [t, b, j]
            off = row_h + rj[None, :]
            if SLOTS == 4:
                # columns 4*jj + gate -> [BLOCK_B, BLOCK_H, 2, 2]: split gate bit 0, then bit 1
                a_even, a_odd = tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_H, 2, 2)))
                a_0, a_2 = tl.split(a_even)
                a_1, a_3 = tl.split(a_odd)
            if CELL == "lstm":
                z_i = a_0 + tl.load(x_t, mask=m2, other=0.0).to(tl.float32)
                z_f = a_1 + tl.load(x_t + H, mask=m2, other=0.0).to(tl.float32)
                z_g = a_2 + tl.load(x_t + 2 * H, mask=m2, other=0.0).to(tl.float32)
                z_o = a_3 + tl.load(x_t + 3 * H, mask=m2, other=0.0).to(tl.float32)
                c_prev = (tl.load(cs_ptr + (t64 - 1) * BH + off, mask=prev_r & jmask[None, :],
                                  other=0.0)
                          + tl.load(c0_ptr + off, mask=first_r & jmask[None, :],
                                    other=0.0).to(tl.float32))
                i, f, g, o, c_new, h_new = lstm_cell(z_i, z_f, z_g, z_o, c_prev)
                tl.store(g_t, i, mask=m2)
                tl.store(g_t + H, f, mask=m2)
                tl.store(g_t + 2 * H, g, mask=m2)
                tl.store(g_t + 3 * H, o, mask=m2)
                c_keep = tl.where(act, c_new, c_prev)
                tl.store(cs_ptr + t64 * BH + off, c_keep, mask=m2)
                tl.store(cT_ptr + off, c_keep.to(OUT_T), mask=last_r & jmask[None, :])
            # h[t-1] of this tile: kept by inactive rows (and the GRU's z * h[t-1])
            h_old = (tl.load(hbuf_ptr + cur * BH + off, mask=prev_r & jmask[None, :], other=0.0,
                             cache_modifier=XCACHE)
                     + tl.load(h0_ptr + off, mask=first_r & jmask[None, :], other=0.0))
            if CELL == "gru":
                b_hn = tl.load(bhn_ptr + rj, mask=jmask, other=0.0).to(tl.float32)[None, :]
                r, z, n, hn, h_new = gru_cell(
                    a_0 + tl.load(x_t, mask=m2, other=0.0).to(tl.float32),
                    a_1 + tl.load(x_t + H, mask=m2, other=0.0).to(tl.float32),
                    tl.load(x_t + 2 * H, mask=m2, other=0.0).to(tl.float32), a_2, b_hn,
                    h_old.to(tl.float32))
                tl.store(g_t, r, mask=m2)
                tl.store(g_t + H, z, mask=m2)
                tl.store(g_t + 2 * H, n, mask=m2)
                tl.store(g_t + 3 * H, hn, mask=m2)
            if NG == 1:              # rnn_tanh, rnn_relu: saves its activated h
                h_new = rnn_cell(acc + tl.load(x_t, mask=m2, other=0.0).to(tl.float32),
                                 CELL == "rnn_relu")
                tl.store(g_t, h_new, mask=m2)
            h_new = h_new.to(OUT_T)
            h_keep = tl.where(act, h_new, h_old)
            tl.store(hbuf_ptr + (1 - cur) * BH + off, h_keep, mask=m2)
            tl.store(hs_ptr + t64 * BH + off, tl.where(act, h_new, tl.zeros_like(h_new)), mask=m2)
            tl.store(hT_ptr + off, h_keep, mask=last_r & jmask[None, :])
        if GRID_SYNC:   # the next step reads h written by the other programs of this batch tile
            grid_barrier(sync_ptr + pid_b * COUNTER_STRIDE, n_h, s + 1)
        else:           # ... or by other threads of this program (no-op when interpreting)
            tl.debug_barrier()


#: the same kernel behind Triton's autotuner (GPU only), one wrapper per schedule
_tuned = tuned_kernels(lstm_fwd_kernel, "forward")


def forward(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Optional[Tensor],
            lengths: Optional[Tensor], b_hn: Optional[Tensor] = None, cell: str = "lstm", *,
            launch: Optional[Launch] = None):
    """The contract's forward of ``cell`` for float32/float16/bfloat16 -> ``(hs, hT, cT, cs,
    gates)`` (``cT``/``cs`` empty for cells without ``c``).

    ``launch`` overrides the schedule and block sizes (tests use it to exercise every schedule);
    by default :func:`.common.choose_launch` decides.
    """
    spec = cell_of(cell)
    T, B, GH = xproj.shape
    H = GH // spec.gates
    dev, D = xproj.device, xproj.dtype
    hs = torch.empty(T, B, H, device=dev, dtype=D)
    hT = torch.empty(B, H, device=dev, dtype=D)
    gates = torch.empty(T, B, spec.saved * H, device=dev, dtype=torch.float32)
    if spec.has_c:
        cT = torch.empty(B, H, device=dev, dtype=D)
        cs = torch.empty(T, B, H, device=dev, dtype=torch.float32)
    else:
        cT = torch.empty(0, device=dev, dtype=D)
        cs = torch.empty(0, device=dev, dtype=torch.float32)
    if T == 0 or B == 0 or H == 0:
        hT.copy_(h0)
        if spec.has_c:
            cT.copy_(c0)
        return hs, hT, cT, cs, gates
    if spec.hidden_bias and b_hn is None:   # the contract's None: zero
        b_hn = torch.zeros(H, device=dev, dtype=D)
    hbuf = torch.empty(2, B, H, device=dev, dtype=D)
    dot_f32, precision = dot_mode(D)
    # tensors a cell does not have: any pointer of the right kind, never read (constexpr CELL)
    args = (xproj, w_hh, h0, c0 if spec.has_c else h0, b_hn if b_hn is not None else h0,
            lengths if lengths is not None else xproj, hs, hT, cT if spec.has_c else hT,
            cs if spec.has_c else gates, gates, hbuf)
    flags = dict(CELL=spec.name, HAS_LENGTHS=lengths is not None, DOT_F32=dot_f32,
                 PRECISION=precision)
    launch = cell_launch(launch or choose_launch(B, H), spec.name, "forward")
    run_schedule(lstm_fwd_kernel, _tuned, launch, T=T, B=B, H=H, args=args, flags=flags,
                 first=0, count=T, direction=1, device=dev,
                 fixed_extra=dict(W_RESIDENT=launch.w_resident))
    return hs, hT, cT, cs, gates
