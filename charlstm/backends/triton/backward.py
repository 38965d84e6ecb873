"""Fused backward kernel of the LSTM recurrent core (contract: :mod:`charlstm.backends.contract`).

The recurrence runs in reverse, ``t = T-1 .. 0``, plus one closing pass ``t = -1`` that only
produces ``dh0``/``dc0``.  Same three schedules and ownership as the forward (:mod:`.forward`):
``"persistent"`` -- one launch, program ``(p, q)`` owns every ``nh``-th hidden tile of batch
tile ``p`` and meets its batch tile's other programs at :func:`.common.grid_barrier` after every
step (``dgates`` is what crosses programs); ``"sequence"`` -- one launch, program ``p`` owns batch
tile ``p`` and all hidden units and runs every step itself, ``tl.debug_barrier()`` between
steps; ``"step"`` -- one launch per step, program ``(p, q)`` owns batch tile ``p`` and hidden
tile ``q``.

Per step ``t`` and tile of ``BLOCK_H`` hidden units ``j``, in one pass:

1. ``dh_next[:, j] = dz[t+1] @ W_hh[:, j]`` with ``tl.dot`` over ``BLOCK_K`` chunks of the
   ``4H`` gate axis, ``dz[t+1]`` being ``dgates[t+1]`` as the previous step wrote it, in the
   input dtype D (the contract's ``dh_prev = dz @ w_hh`` of step t+1, done lazily so that one
   pass per step suffices and no program needs another's result within a launch).  Rows inactive at
   ``t+1`` keep the carried ``dh``; at ``t = T-1`` the carry is ``dhT``.
2. the pointwise gradient on registers: ``dh = dh_next + dhs[t]``, ``dc``, the four ``dz``
   from the saved ``gates[t]``, ``cs[t]`` and ``cs[t-1]`` (``c0`` at t = 0);
3. writes ``dgates[t]`` (dtype D, 0 on inactive rows) and the carries ``dh``/``dc`` (float32
   scratch).

Scratch, all double-buffered by step parity so that a step never overwrites what it reads
(which also makes the kernel idempotent, safe for the GPU autotuner): ``dhbuf [2, B, H]``,
``dcbuf [2, B, H]``, float32.  Nothing stays in registers or shared memory across steps;
``W_hh`` tiles are re-read every step.  Extra memory: ``(4 + 4) * 2 * B * H`` bytes,
independent of T.

Precision: float32 pointwise math and accumulation.  The ``dz @ W_hh`` dot takes ``dz``
rounded to the input dtype -- the ``dgates`` this backward returns, which is also what a 16-bit
cuDNN backward multiplies -- and ``W_hh`` as stored, so 16-bit inputs use native 16-bit tensor
cores and read half the bytes of a float32 ``dz`` (which per step and program is the largest
read: all ``4H`` columns of the batch tile).  float32 inputs: IEEE float32 dot.  Under the
interpreter bfloat16 operands are cast to float32 first (exact), as in the forward.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    COUNTER_STRIDE,
    Launch,
    batch_tile,
    choose_launch,
    dot_mode,
    grid_barrier,
    run_schedule,
    tanh,
    tuned_kernels,
)

__all__ = ["backward", "lstm_bwd_kernel"]


@triton.jit
def lstm_bwd_kernel(
        dhs_ptr, dhT_ptr, dcT_ptr, w_ptr, c0_ptr, cs_ptr, gates_ptr, len_ptr,  # inputs
        dgates_ptr, dh0_ptr, dc0_ptr, dhbuf_ptr, dcbuf_ptr,                   # outputs, scratch
        sync_ptr, t_first, t_count, T, B, H,
        HAS_LENGTHS: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
        GRID_SYNC: tl.constexpr, XCACHE: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """Run backward steps ``t_first, t_first - 1, .., t_first - t_count + 1`` (down to -1).

    ``dhs [T,B,H]``, ``dhT, dcT, c0 [B,H]``, ``w [4H,H]`` dtype D; ``cs [T,B,H]`` and
    ``gates [T,B,4H]`` float32 (from the forward); ``len [B]`` int32 unless not
    ``HAS_LENGTHS``.  Outputs ``dgates [T,B,4H]``, ``dh0, dc0 [B,H]`` in D; ``dgates[t+1]``
    is also step t's ``dz`` input.  Scratch (float32): ``dhbuf[p]``/``dcbuf[p]`` the carried
    ``dh``/``dc`` entering step ``t`` stored by step ``t`` (dh) / ``t+1`` (dc).
    ``DOT_F32``/``PRECISION``: as the forward's (:func:`.common.dot_mode`).  ``sync``,
    ``GRID_SYNC``, ``XCACHE``: the persistent schedule's arrival counters and barrier,
    as in :func:`.forward.lstm_fwd_kernel` (``dgates`` is what crosses programs).
    """
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    n_h = tl.num_programs(1)
    OUT_T = dgates_ptr.dtype.element_ty
    row0, bmask, L, row_g, row_h = batch_tile(len_ptr, T, B, H, HAS_LENGTHS, BLOCK_B)
    G = 4 * H
    BH = tl.cast(B, tl.int64) * H    # the T (or parity) stride of [.., B, H], in 64 bits
    BG = 4 * BH                      # ... of [.., B, 4H]
    # every [.., B, ..] pointer moves to this program's batch tile (64-bit, see batch_tile)
    gates_ptr += row0 * G
    dgates_ptr += row0 * G
    dhs_ptr += row0 * H
    dhT_ptr += row0 * H
    dcT_ptr += row0 * H
    c0_ptr += row0 * H
    cs_ptr += row0 * H
    dh0_ptr += row0 * H
    dc0_ptr += row0 * H
    dhbuf_ptr += row0 * H
    dcbuf_ptr += row0 * H
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
        prev_r = (bmask & (tv > 0))[:, None]         # c[t-1] from cs
        first_r = (bmask & (tv == 0))[:, None]       # c[t-1] from c0
        close = (bmask & (tv == -1))[:, None]        # write dh0, dc0
        for j0 in range(pid_h * BLOCK_H, H, n_h * BLOCK_H):
            rj = j0 + rj0
            jm = rj[None, :] < H
            m2 = bmask[:, None] & jm
            off = row_h + rj[None, :]
            # 1. dh entering step t: dz[t+1] @ W_hh[:, j] for rows that ran t+1, else carried
            rec = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
            for k0 in range(0, G, BLOCK_K):
                rk = k0 + rk0
                km = rk < G
                # dz[t+1] as the gate gradients step t+1 returned (dtype D), masked at t = T-1
                dz = tl.load(dgates_ptr + (t64 + 1) * BG + row_g + rk[None, :],
                             mask=act_next[:, None] & km[None, :], other=0.0,
                             cache_modifier=XCACHE)
                # W_hh[k, j], k < 4H: 4H^2 may exceed 2^31, so the row offset is 64-bit
                w = tl.load(w_ptr + tl.cast(rk, tl.int64)[:, None] * H + rj[None, :],
                            mask=km[:, None] & jm, other=0.0)
                if DOT_F32:
                    dz = dz.to(tl.float32)
                    w = w.to(tl.float32)
                rec = tl.dot(dz, w, rec, input_precision=PRECISION)
            dh_carry = (tl.load(dhbuf_ptr + p_in * BH + off, mask=inner & jm, other=0.0)
                        + tl.load(dhT_ptr + off, mask=top & jm, other=0.0).to(tl.float32))
            dh_carry = tl.where(act_next[:, None], rec, dh_carry)
            dc_carry = (tl.load(dcbuf_ptr + p_in * BH + off, mask=inner & jm, other=0.0)
                        + tl.load(dcT_ptr + off, mask=top & jm, other=0.0).to(tl.float32))
            tl.store(dhbuf_ptr + p_out * BH + off, dh_carry, mask=m2)
            # 2. the pointwise gradient of step t (all loads masked off in the closing pass)
            rm = real & jm
            gofs = row_g + rj[None, :]              # gate i of [t, b, j] in [T, B, 4H] at step t
            g_t = gates_ptr + t64 * BG + gofs
            i = tl.load(g_t, mask=rm, other=0.0)
            f = tl.load(g_t + H, mask=rm, other=0.0)
            g = tl.load(g_t + 2 * H, mask=rm, other=0.0)
            o = tl.load(g_t + 3 * H, mask=rm, other=0.0)
            c_t = tl.load(cs_ptr + t64 * BH + off, mask=rm, other=0.0)
            c_prev = (tl.load(cs_ptr + (t64 - 1) * BH + off, mask=prev_r & jm, other=0.0)
                      + tl.load(c0_ptr + off, mask=first_r & jm, other=0.0).to(tl.float32))
            tc = tanh(c_t)
            dh = dh_carry + tl.load(dhs_ptr + t64 * BH + off, mask=rm, other=0.0).to(tl.float32)
            dc = dc_carry + dh * o * (1.0 - tc * tc)
            a2 = act[:, None]
            dz_i = tl.where(a2, dc * g * i * (1.0 - i), 0.0)
            dz_f = tl.where(a2, dc * c_prev * f * (1.0 - f), 0.0)
            dz_g = tl.where(a2, dc * i * (1.0 - g * g), 0.0)
            dz_o = tl.where(a2, dh * tc * o * (1.0 - o), 0.0)
            # 3. write dgates[t] (also step t-1's dz), dc entering step t-1
            d_t = dgates_ptr + t64 * BG + gofs
            tl.store(d_t, dz_i.to(OUT_T), mask=rm)
            tl.store(d_t + H, dz_f.to(OUT_T), mask=rm)
            tl.store(d_t + 2 * H, dz_g.to(OUT_T), mask=rm)
            tl.store(d_t + 3 * H, dz_o.to(OUT_T), mask=rm)
            tl.store(dcbuf_ptr + p_out * BH + off, tl.where(a2, dc * f, dc_carry), mask=rm)
            tl.store(dh0_ptr + off, dh_carry.to(OUT_T), mask=close & jm)
            tl.store(dc0_ptr + off, dc_carry.to(OUT_T), mask=close & jm)
        if GRID_SYNC:   # the next step reads dgates written by the other programs of its batch tile
            grid_barrier(sync_ptr + pid_b * COUNTER_STRIDE, n_h, s + 1)
        else:           # ... or by other threads of this program
            tl.debug_barrier()


_tuned = tuned_kernels(lstm_bwd_kernel, "backward")


def backward(dhs: Tensor, dhT: Tensor, dcT: Tensor, w_hh: Tensor, c0: Tensor, cs: Tensor,
             gates: Tensor, lengths: Optional[Tensor], *, launch: Optional[Launch] = None):
    """The contract's backward for float32/float16/bfloat16 -> ``(dgates, dh0, dc0)``.

    ``launch`` overrides the schedule and block sizes (as in :func:`.forward.forward`).
    """
    T, B, H = dhs.shape
    G = 4 * H
    dev, D = dhs.device, w_hh.dtype
    dgates = torch.empty(T, B, G, device=dev, dtype=D)
    dh0 = torch.empty(B, H, device=dev, dtype=D)
    dc0 = torch.empty(B, H, device=dev, dtype=D)
    if T == 0 or B == 0 or H == 0:
        dh0.copy_(dhT)
        dc0.copy_(dcT)
        return dgates, dh0, dc0
    dhbuf = torch.empty(2, B, H, device=dev, dtype=torch.float32)
    dcbuf = torch.empty(2, B, H, device=dev, dtype=torch.float32)
    args = (dhs, dhT, dcT, w_hh, c0, cs, gates, lengths if lengths is not None else cs,
            dgates, dh0, dc0, dhbuf, dcbuf)
    dot_f32, precision = dot_mode(D)
    flags = dict(HAS_LENGTHS=lengths is not None, DOT_F32=dot_f32, PRECISION=precision)
    launch = launch or choose_launch(B, H)
    if launch.fixed and launch.block_h < 16:   # this kernel's dot has the hidden tile as N
        launch = launch._replace(block_h=16)
    # steps T-1 .. 0, then the closing pass t = -1 that writes dh0/dc0
    run_schedule(lstm_bwd_kernel, _tuned, launch, T=T, B=B, H=H,
                 args=args, flags=flags, first=T - 1, count=T + 1, direction=-1, device=dev)
    return dgates, dh0, dc0
