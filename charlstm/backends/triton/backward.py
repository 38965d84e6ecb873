"""Fused backward kernel of the recurrent core of every cell (:mod:`charlstm.backends.contract`).

One kernel, :func:`lstm_bwd_kernel` (named for the LSTM; the ``CELL`` constexpr picks the
pointwise step, as in :mod:`.forward`).  The recurrence runs in reverse, ``t = T-1 .. 0``, plus
one closing pass ``t = -1`` that only produces ``dh0`` (and ``dc0``).  Same three schedules and
ownership as the forward: ``"persistent"`` -- one launch, program ``(p, q)`` owns every
``nh``-th hidden tile of batch tile ``p`` and meets its batch tile's other programs at
:func:`.common.grid_barrier` after every step (``dgates``, and the GRU's ``dn * r``, are what
cross programs); ``"sequence"`` -- one launch, program ``p`` owns batch tile ``p`` and all hidden
units and runs every step itself, ``tl.debug_barrier()`` between steps; ``"step"`` -- one launch
per step, program ``(p, q)`` owns batch tile ``p`` and hidden tile ``q``.

Per step ``t`` and tile of ``BLOCK_H`` hidden units ``j``, in one pass:

1. ``dh[:, j]`` entering step ``t``: for rows that ran step ``t+1``, ``dhid[t+1] @ W_hh[:,
   j]`` with ``tl.dot`` over ``BLOCK_K`` chunks of the ``G*H`` gate axis (the contract's
   ``dhid @ w_hh`` of step t+1, done lazily so that one pass per step suffices and no program
   needs another's result within a launch), plus, for the GRU, ``dh[t+1] * z[t+1]`` (the part
   that bypasses ``W_hh``), which step t+1 left in ``cellbuf``.  ``dhid[t+1]`` is in the input
   dtype D: ``dgates[t+1]`` as the previous step wrote it (LSTM, RNN; the GRU's r and z
   blocks), and for the GRU's n block ``dn * r``, which step t+1 wrote to the scratch
   ``dnbuf`` (the reset gate scales the gradient of ``a_n``).  Other rows carry ``dh``
   unchanged (``dhbuf``; ``dhT`` at ``t = T-1``).
2. the cell's pointwise gradient on registers (:func:`.common.lstm_cell_back`,
   :func:`.common.gru_cell_back`, :func:`.common.rnn_cell_back`): ``dh += dhs[t]``, then from
   the saved ``gates[t]`` -- LSTM: i, f, g, o with ``cs[t]``, ``cs[t-1]`` (``c0`` at t = 0) and
   the carried ``dc``; GRU: r, z, n, hn with ``h[t-1]`` (``hs[t-1]``, ``h0`` at t = 0, as
   rounded to D); RNN: the activated ``h[t]``;
3. writes ``dgates[t]`` (dtype D, 0 on inactive rows) and the carries: ``dhbuf`` (float32),
   ``cellbuf`` (float32: the LSTM's ``dc``, the GRU's ``dh * z``), the GRU's ``dn * r``
   (``dnbuf``, dtype D).

Scratch, all double-buffered by step parity so that a step never overwrites what it reads
(which also makes the kernel idempotent, safe for the GPU autotuner): ``dhbuf [2, B, H]``
float32, ``cellbuf [2, B, H]`` float32 (LSTM, GRU) and ``dnbuf [2, B, H]`` D (GRU).  Nothing stays
in registers or shared memory across steps; ``W_hh`` tiles are re-read every step.  Extra
memory: ``2 * B * H`` elements of each, independent of T.  Only ``dgates`` and ``dnbuf``
cross programs (every program's dot reads all ``G*H`` columns of its batch tile); ``dhbuf`` and
``cellbuf`` are read back only by the program that owns the hidden tile.

Precision: float32 pointwise math and accumulation.  The ``dhid @ W_hh`` dot takes ``dhid``
rounded to the input dtype -- for the LSTM and RNN the ``dgates`` this backward returns, which
is also what a 16-bit cuDNN backward multiplies -- and ``W_hh`` as stored, so 16-bit inputs use
native 16-bit tensor cores and read half the bytes of a float32 ``dhid`` (which per step and
program is the largest read: all ``G*H`` columns of the batch tile).  float32 inputs: IEEE
float32 dot.  Under the interpreter bfloat16 operands are cast to float32 first (exact), as in
the forward.
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
    gru_cell_back,
    lstm_cell_back,
    rnn_cell_back,
    run_schedule,
    tile_strides,
    tuned_kernels,
)

__all__ = ["backward", "lstm_bwd_kernel"]


@triton.jit
def lstm_bwd_kernel(
        dhs_ptr, dhT_ptr, dcT_ptr, w_ptr, h0_ptr, c0_ptr, hs_ptr, cs_ptr, gates_ptr,  # inputs
        len_ptr,
        dgates_ptr, dh0_ptr, dc0_ptr, dhbuf_ptr, cellbuf_ptr, dnbuf_ptr,  # outputs, scratch
        sync_ptr, t_first, t_count, T, B, H,
        CELL: tl.constexpr, HAS_LENGTHS: tl.constexpr, DOT_F32: tl.constexpr,
        PRECISION: tl.constexpr, GRID_SYNC: tl.constexpr, XCACHE: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """Run backward steps ``t_first, t_first - 1, .., t_first - t_count + 1`` (down to -1) of
    ``CELL``.

    ``G`` gate blocks (LSTM 4, GRU 3, RNN 1), ``S`` saved blocks (4, 4, 1).  ``dhs [T,B,H]``,
    ``dhT [B,H]``, ``w [G*H,H]`` dtype D; ``gates [T,B,S*H]`` float32 (from the forward);
    ``len [B]`` int32 unless not ``HAS_LENGTHS``.  Outputs ``dgates [T,B,G*H]``, ``dh0 [B,H]``
    in D; ``dgates[t+1]`` is also step t's ``dhid`` input.  Scratch, indexed by the parity
    ``p`` of the step that stores it: ``dhbuf[p]`` (float32) ``dh`` entering step ``t``, stored
    by step ``t``; ``cellbuf[p]`` (float32; LSTM, GRU) the LSTM's ``dc`` entering step ``t-1``
    or the GRU's ``dh * z`` of step ``t``.  LSTM only (any pointer otherwise, never read):
    ``dcT, c0 [B,H]`` D, ``cs [T,B,H]`` f32, ``dc0 [B,H]`` D.  GRU only: ``h0 [B,H]``, ``hs
    [T,B,H]`` D (``h[t-1]``), ``dnbuf[p]`` (D) the n block of ``dhid`` of step ``t``.
    ``DOT_F32``/``PRECISION``: as the forward's (:func:`.common.dot_mode`).  ``sync``,
    ``GRID_SYNC``, ``XCACHE``: the persistent schedule's arrival counters and barrier, as in
    :func:`.forward.lstm_fwd_kernel` (``dgates`` and ``dnbuf`` are what cross programs).
    """
    NG: tl.constexpr = 4 if CELL == "lstm" else (3 if CELL == "gru" else 1)  # gate blocks
    NS: tl.constexpr = 1 if NG == 1 else 4             # saved blocks in gates
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    n_h = tl.num_programs(1)
    OUT_T = dgates_ptr.dtype.element_ty
    row0, bmask, L, rows = batch_tile(len_ptr, T, B, HAS_LENGTHS, BLOCK_B)
    G = NG * H
    row_g, row_s, row_h, BH, BG, BS = tile_strides(rows, B, H, NG, NS)
    # every [.., B, ..] pointer moves to this program's batch tile (64-bit, see batch_tile)
    gates_ptr += row0 * (NS * H)
    dgates_ptr += row0 * G
    dhs_ptr += row0 * H
    dhT_ptr += row0 * H
    dh0_ptr += row0 * H
    dhbuf_ptr += row0 * H
    if CELL == "lstm":
        dcT_ptr += row0 * H
        c0_ptr += row0 * H
        cs_ptr += row0 * H
        dc0_ptr += row0 * H
    if CELL == "gru":
        h0_ptr += row0 * H
        hs_ptr += row0 * H
        dnbuf_ptr += row0 * H
    if NG > 1:
        cellbuf_ptr += row0 * H
    rj0 = tl.arange(0, BLOCK_H)
    rk0 = tl.arange(0, BLOCK_K)
    for s in range(0, t_count):
        t = t_first - s
        t64 = t.to(tl.int64)
        p_in = (t + 3) % 2           # parity of step t+1 (what this step reads)
        p_out = (t + 2) % 2          # parity of step t (what this step writes)
        # per-row predicates from a vector (the interpreter mishandles scalar-bool masks)
        tv = tl.zeros([BLOCK_B], dtype=tl.int32) + t
        act = (L > tv) & bmask                       # row runs step t (false at t = -1)
        act_next = (L > tv + 1) & bmask              # row ran step t+1 (false at t = T-1)
        top = (bmask & (tv == T - 1))[:, None]       # carries come from dhT/dcT
        inner = (bmask & (tv < T - 1))[:, None]      # carries come from the scratch
        real = (bmask & (tv >= 0))[:, None]          # a real step (not the closing pass)
        prev_r = (bmask & (tv > 0))[:, None]         # h[t-1], c[t-1] from hs, cs
        first_r = (bmask & (tv == 0))[:, None]       # h[t-1], c[t-1] from h0, c0
        close = (bmask & (tv == -1))[:, None]        # write dh0, dc0
        for j0 in range(pid_h * BLOCK_H, H, n_h * BLOCK_H):
            rj = j0 + rj0
            jm = rj[None, :] < H
            m2 = bmask[:, None] & jm
            off = row_h + rj[None, :]
            # 1. dh entering step t: dhid[t+1] @ W_hh[:, j] for rows that ran t+1, else carried
            rec = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
            for k0 in range(0, G, BLOCK_K):
                rk = k0 + rk0
                km = rk < G
                # dhid[t+1]: the gate gradients step t+1 returned (dtype D), masked at t = T-1
                d_next = dgates_ptr + (t64 + 1) * BG + row_g + rk[None, :]
                if CELL == "gru":    # ... except the n block: dn * r, from dnbuf
                    dz = (tl.load(d_next, mask=act_next[:, None] & (rk < 2 * H)[None, :],
                                  other=0.0, cache_modifier=XCACHE)
                          + tl.load(dnbuf_ptr + p_in * BH + row_h + (rk - 2 * H)[None, :],
                                    mask=act_next[:, None] & (km & (rk >= 2 * H))[None, :],
                                    other=0.0, cache_modifier=XCACHE))
                else:
                    dz = tl.load(d_next, mask=act_next[:, None] & km[None, :], other=0.0,
                                 cache_modifier=XCACHE)
                # W_hh[k, j], k < G*H: G*H^2 may exceed 2^31, so the row offset is 64-bit
                w = tl.load(w_ptr + tl.cast(rk, tl.int64)[:, None] * H + rj[None, :],
                            mask=km[:, None] & jm, other=0.0)
                if DOT_F32:
                    dz = dz.to(tl.float32)
                    w = w.to(tl.float32)
                rec = tl.dot(dz, w, rec, input_precision=PRECISION)
            carry = (tl.load(dhbuf_ptr + p_in * BH + off, mask=inner & jm, other=0.0)
                     + tl.load(dhT_ptr + off, mask=top & jm, other=0.0).to(tl.float32))
            if CELL == "lstm":
                dc_carry = (tl.load(cellbuf_ptr + p_in * BH + off, mask=inner & jm, other=0.0)
                            + tl.load(dcT_ptr + off, mask=top & jm, other=0.0).to(tl.float32))
            if CELL == "gru":    # + the part of dh[t+1] that bypassed W_hh (dh * z)
                rec += tl.load(cellbuf_ptr + p_in * BH + off, mask=act_next[:, None] & jm,
                               other=0.0)
            dh_carry = tl.where(act_next[:, None], rec, carry)
            tl.store(dhbuf_ptr + p_out * BH + off, dh_carry, mask=m2)
            # 2. the pointwise gradient of step t (all loads masked off in the closing pass)
            rm = real & jm
            a2 = act[:, None]
            # int32 tile offsets first, then one pointer add: adding rows and columns to
            # the pointer one after the other spilled the LSTM's registers (ptxas, sm_90)
            g_t = gates_ptr + t64 * BS + (row_s + rj[None, :])   # saved block 0 of [t, b, j]
            d_t = dgates_ptr + t64 * BG + (row_g + rj[None, :])  # gate 0 of [t, b, j]
            if CELL == "lstm":   # its loads before dhs's: so ordered, ptxas (Triton 3.6) kept
                # the 16 x 32 x 32 bfloat16 tile free of spills
                i = tl.load(g_t, mask=rm, other=0.0)
                f = tl.load(g_t + H, mask=rm, other=0.0)
                g = tl.load(g_t + 2 * H, mask=rm, other=0.0)
                o = tl.load(g_t + 3 * H, mask=rm, other=0.0)
                c_t = tl.load(cs_ptr + t64 * BH + off, mask=rm, other=0.0)
                c_prev = (tl.load(cs_ptr + (t64 - 1) * BH + off, mask=prev_r & jm, other=0.0)
                          + tl.load(c0_ptr + off, mask=first_r & jm, other=0.0).to(tl.float32))
            dh = dh_carry + tl.load(dhs_ptr + t64 * BH + off, mask=rm, other=0.0).to(tl.float32)
            if CELL == "lstm":
                dz_i, dz_f, dz_g, dz_o, dc = lstm_cell_back(dh, dc_carry, i, f, g, o, c_t, c_prev)
                tl.store(d_t, tl.where(a2, dz_i, 0.0).to(OUT_T), mask=rm)
                tl.store(d_t + H, tl.where(a2, dz_f, 0.0).to(OUT_T), mask=rm)
                tl.store(d_t + 2 * H, tl.where(a2, dz_g, 0.0).to(OUT_T), mask=rm)
                tl.store(d_t + 3 * H, tl.where(a2, dz_o, 0.0).to(OUT_T), mask=rm)
                # 3. dc entering step t-1
                tl.store(cellbuf_ptr + p_out * BH + off, tl.where(a2, dc * f, dc_carry), mask=rm)
            if CELL == "gru":
                h_prev = (tl.load(hs_ptr + (t64 - 1) * BH + off, mask=prev_r & jm, other=0.0)
                          + tl.load(h0_ptr + off, mask=first_r & jm, other=0.0)).to(tl.float32)
                r = tl.load(g_t, mask=rm, other=0.0)
                dz_r, dz_z, dz_n, dn_r, dh_direct = gru_cell_back(
                    dh, r, tl.load(g_t + H, mask=rm, other=0.0),
                    tl.load(g_t + 2 * H, mask=rm, other=0.0),
                    tl.load(g_t + 3 * H, mask=rm, other=0.0), h_prev)
                tl.store(d_t, tl.where(a2, dz_r, 0.0).to(OUT_T), mask=rm)
                tl.store(d_t + H, tl.where(a2, dz_z, 0.0).to(OUT_T), mask=rm)
                tl.store(d_t + 2 * H, tl.where(a2, dz_n, 0.0).to(OUT_T), mask=rm)
                # 3. what step t-1 needs of step t: dn * r (every program's dot reads it) and
                # dh * z (this tile's own)
                tl.store(dnbuf_ptr + p_out * BH + off, dn_r.to(OUT_T), mask=rm)
                tl.store(cellbuf_ptr + p_out * BH + off, dh_direct, mask=rm)
            if NG == 1:
                dz_h = rnn_cell_back(dh, tl.load(g_t, mask=rm, other=0.0), CELL == "rnn_relu")
                tl.store(d_t, tl.where(a2, dz_h, 0.0).to(OUT_T), mask=rm)
            # the closing pass: dh0 (and dc0; stored last: earlier, ptxas spilled the LSTM's
            # registers at 16 x 32 x 32, float32)
            tl.store(dh0_ptr + off, dh_carry.to(OUT_T), mask=close & jm)
            if CELL == "lstm":
                tl.store(dc0_ptr + off, dc_carry.to(OUT_T), mask=close & jm)
        if GRID_SYNC:   # the next step reads dgates written by the other programs of its batch tile
            grid_barrier(sync_ptr + pid_b * COUNTER_STRIDE, n_h, s + 1)
        else:           # ... or by other threads of this program
            tl.debug_barrier()


_tuned = tuned_kernels(lstm_bwd_kernel, "backward")


def backward(dhs: Tensor, dhT: Tensor, dcT: Optional[Tensor], w_hh: Tensor, h0: Tensor,
             c0: Optional[Tensor], hs: Tensor, cs: Tensor, gates: Tensor,
             lengths: Optional[Tensor], cell: str = "lstm", *, launch: Optional[Launch] = None):
    """The contract's backward of ``cell`` for float32/float16/bfloat16 -> ``(dgates, dh0,
    dc0)`` (``dc0`` empty for cells without ``c``).

    ``launch`` overrides the schedule and block sizes (as in :func:`.forward.forward`).
    """
    spec = cell_of(cell)
    T, B, H = dhs.shape
    dev, D = dhs.device, w_hh.dtype
    dgates = torch.empty(T, B, spec.gates * H, device=dev, dtype=D)
    dh0 = torch.empty(B, H, device=dev, dtype=D)
    dc0 = torch.empty(B, H, device=dev, dtype=D) if spec.has_c else torch.empty(0, device=dev,
                                                                               dtype=D)
    if T == 0 or B == 0 or H == 0:
        dh0.copy_(dhT)
        if spec.has_c:
            dc0.copy_(dcT)
        return dgates, dh0, dc0
    dhbuf = torch.empty(2, B, H, device=dev, dtype=torch.float32)
    # the cell's own carry (the LSTM's dc, the GRU's dh * z) and the GRU's dn * r (dtype D);
    # placeholders where the cell has none
    cellbuf = torch.empty(2, B, H, device=dev, dtype=torch.float32) if spec.gates > 1 else dhbuf
    dnbuf = torch.empty(2, B, H, device=dev, dtype=D) if spec.name == "gru" else dhbuf
    # tensors a cell does not have: any pointer of the right kind, never read (constexpr CELL)
    args = (dhs, dhT, dcT if spec.has_c else dhT, w_hh, h0, c0 if spec.has_c else h0, hs,
            cs if spec.has_c else gates, gates, lengths if lengths is not None else gates,
            dgates, dh0, dc0 if spec.has_c else dh0, dhbuf, cellbuf, dnbuf)
    dot_f32, precision = dot_mode(D)
    flags = dict(CELL=spec.name, HAS_LENGTHS=lengths is not None, DOT_F32=dot_f32,
                 PRECISION=precision)
    launch = cell_launch(launch or choose_launch(B, H), spec.name, "backward")
    # steps T-1 .. 0, then the closing pass t = -1 that writes dh0 (and dc0)
    run_schedule(lstm_bwd_kernel, _tuned, launch, T=T, B=B, H=H,
                 args=args, flags=flags, first=T - 1, count=T + 1, direction=-1, device=dev)
    return dgates, dh0, dc0
