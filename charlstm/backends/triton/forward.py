"""Fused forward kernel of the LSTM recurrent core (contract: :mod:`charlstm.backends.contract`).

One kernel, :func:`lstm_fwd_kernel`, serves the three schedules of :mod:`.common`:

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
pass: one float32 accumulator ``[BLOCK_B, 4 * BLOCK_H]`` receives ``h[t-1] @ Wcat`` with one
``tl.dot`` per ``BLOCK_K`` chunk of ``h``, where ``Wcat`` is the gate-interleaved slice of
``W_hh^T`` (column ``4 * jj + gate`` is row ``gate * H + j0 + jj`` of ``W_hh``: one dot with
N = ``4 * BLOCK_H`` instead of four with N = ``BLOCK_H``, which also allows 4- and 8-wide hidden
tiles); a reshape to ``[BLOCK_B, BLOCK_H, 2, 2]`` and two ``tl.split`` give ``z_i, z_f, z_g,
z_o``, to which ``xproj[t]`` is added; the activations, ``c = f*c_prev + i*g`` and ``h =
o*tanh(c)`` follow on registers -- the gate pre-activations never go to global memory.

What lives where: with ``W_RESIDENT`` (persistent forward, H <= 512, one hidden tile per
program; chosen by the autotuner where it fits) the program's ``Wcat`` slice is loaded once and
stays in registers for all steps; otherwise nothing stays on chip across steps (``W_hh`` tiles
are re-read every step, from L2 once warm).  ``h`` is exchanged through a double-buffered scratch
``hbuf [2, B, H]`` (input dtype, step parity), ``c_prev`` is read back from ``cs[t-1]``;
the persistent schedule adds one int64 arrival counter per batch tile (``COUNTER_STRIDE``
apart).  Offsets that scale with ``B * H`` or ``H^2`` are 64-bit (see :func:`.common.batch_tile`).
Written per step: ``hs[t]`` (dtype D), ``cs[t]`` (float32), ``gates[t]`` (float32), ``hbuf``;
``hT``/``cT`` at the last step.  Saved for backward (by the contract): ``cs`` and ``gates``, i.e.
4 + 16 = 20 bytes per element of T x B x H (plus ``hs``, 2 or 4 bytes, which the layer keeps).

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

from .common import (
    COUNTER_STRIDE,
    Launch,
    batch_tile,
    choose_launch,
    dot_mode,
    grid_barrier,
    lstm_cell,
    run_schedule,
    tuned_kernels,
)

__all__ = ["forward", "lstm_fwd_kernel"]


@triton.jit
def lstm_fwd_kernel(
        xproj_ptr, w_ptr, h0_ptr, c0_ptr, len_ptr,            # inputs
        hs_ptr, hT_ptr, cT_ptr, cs_ptr, gates_ptr, hbuf_ptr,  # outputs and scratch
        sync_ptr, t_first, t_count, T, B, H,
        HAS_LENGTHS: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
        GRID_SYNC: tl.constexpr, XCACHE: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
        W_RESIDENT: tl.constexpr):
    """Run steps ``t_first .. t_first + t_count - 1`` of the forward recurrence.

    Pointers are to contiguous tensors: ``xproj [T,B,4H]``, ``w [4H,H]``, ``h0, c0 [B,H]``
    (dtype D), ``len [B]`` int32 (ignored unless ``HAS_LENGTHS``), ``hs [T,B,H]`` D,
    ``hT, cT [B,H]`` D, ``cs [T,B,H]`` f32, ``gates [T,B,4H]`` f32, ``hbuf [2,B,H]`` D scratch
    (``hbuf[t % 2]`` holds ``h[t-1]`` for t >= 1; step 0 reads ``h0``).  ``sync`` int64 zeros:
    the arrival counters of :func:`.common.grid_barrier` (batch tile ``p``'s at
    ``p * COUNTER_STRIDE``) when ``GRID_SYNC`` (the persistent schedule), which also loads
    ``hbuf`` with ``XCACHE = ".cg"`` -- a cache hint only (L2, not L1, where the load is not
    pipelined into ``cp.async``, which ignores it); what makes other programs' ``h`` visible
    is the barrier's release/acquire (see there).

    The matmul is one ``tl.dot`` per K chunk on a gate-interleaved ``[BLOCK_K, 4 * BLOCK_H]``
    slice of ``W_hh^T`` (column ``4 * jj + gate`` = row ``gate * H + j0 + jj`` of ``W_hh``), so
    ``BLOCK_H`` may be 4 or 8 (``tl.dot`` needs N >= 16).  ``W_RESIDENT``: the program loads
    its slice once, before the first step, and keeps it in registers for every step; valid
    only when each program owns exactly one hidden tile (``n_h * BLOCK_H >= H``) and one K
    chunk covers H (``BLOCK_K >= H``) -- :func:`.common.run_schedule` checks both.
    """
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    n_h = tl.num_programs(1)
    OUT_T = hs_ptr.dtype.element_ty
    row0, bmask, L, row_g, row_h = batch_tile(len_ptr, T, B, H, HAS_LENGTHS, BLOCK_B)
    G = 4 * H
    BH = tl.cast(B, tl.int64) * H    # the T (or parity) stride of [.., B, H], in 64 bits
    BG = 4 * BH                      # ... of [.., B, 4H]
    # every [.., B, ..] pointer moves to this program's batch tile (64-bit, see batch_tile)
    xproj_ptr += row0 * G
    gates_ptr += row0 * G
    h0_ptr += row0 * H
    c0_ptr += row0 * H
    hs_ptr += row0 * H
    hT_ptr += row0 * H
    cT_ptr += row0 * H
    cs_ptr += row0 * H
    hbuf_ptr += row0 * H
    rj0 = tl.arange(0, BLOCK_H)
    rk0 = tl.arange(0, BLOCK_K)
    rc = tl.arange(0, 4 * BLOCK_H)   # dot column c = 4 * jj + gate
    c_gate = rc % 4
    c_jj = rc // 4
    if W_RESIDENT:                   # this program's only hidden tile, all of K, for all steps
        rjc = pid_h * BLOCK_H + c_jj
        w_res = tl.load(w_ptr + tl.cast(c_gate * H + rjc, tl.int64)[None, :] * H + rk0[:, None],
                        mask=(rk0 < H)[:, None] & (rjc < H)[None, :], other=0.0)
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
            # row offsets of W_hh in 64 bits: 4H * H may exceed 2^31
            w_cols = w_ptr + tl.cast(c_gate * H + rjc, tl.int64)[None, :] * H
            acc = tl.zeros([BLOCK_B, 4 * BLOCK_H], dtype=tl.float32)
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
                    w = tl.load(w_cols + rk[:, None], mask=kmask[:, None] & (rjc < H)[None, :],
                                other=0.0)
                    if DOT_F32:
                        w = w.to(tl.float32)
                if DOT_F32:
                    h = h.to(tl.float32)
                acc = tl.dot(h, w, acc, input_precision=PRECISION)
            # columns 4*jj + gate -> [BLOCK_B, BLOCK_H, 2, 2]: split the gate bit 0, then bit 1
            z_even, z_odd = tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_H, 2, 2)))
            z_i, z_g = tl.split(z_even)
            z_f, z_o = tl.split(z_odd)
            gofs = row_g + rj[None, :]              # gate i of [t, b, j] in [T, B, 4H] at step t
            x_t = xproj_ptr + t64 * BG + gofs
            z_i += tl.load(x_t, mask=m2, other=0.0).to(tl.float32)
            z_f += tl.load(x_t + H, mask=m2, other=0.0).to(tl.float32)
            z_g += tl.load(x_t + 2 * H, mask=m2, other=0.0).to(tl.float32)
            z_o += tl.load(x_t + 3 * H, mask=m2, other=0.0).to(tl.float32)
            off = row_h + rj[None, :]
            c_prev = (tl.load(cs_ptr + (t64 - 1) * BH + off, mask=prev_r & jmask[None, :],
                              other=0.0)
                      + tl.load(c0_ptr + off, mask=first_r & jmask[None, :],
                                other=0.0).to(tl.float32))
            i, f, g, o, c_new, h_new = lstm_cell(z_i, z_f, z_g, z_o, c_prev)
            h_new = h_new.to(OUT_T)
            g_t = gates_ptr + t64 * BG + gofs
            tl.store(g_t, i, mask=m2)
            tl.store(g_t + H, f, mask=m2)
            tl.store(g_t + 2 * H, g, mask=m2)
            tl.store(g_t + 3 * H, o, mask=m2)
            c_keep = tl.where(act, c_new, c_prev)
            tl.store(cs_ptr + t64 * BH + off, c_keep, mask=m2)
            h_old = (tl.load(hbuf_ptr + cur * BH + off, mask=prev_r & jmask[None, :], other=0.0,
                             cache_modifier=XCACHE)
                     + tl.load(h0_ptr + off, mask=first_r & jmask[None, :], other=0.0))
            h_keep = tl.where(act, h_new, h_old)
            tl.store(hbuf_ptr + (1 - cur) * BH + off, h_keep, mask=m2)
            tl.store(hs_ptr + t64 * BH + off, tl.where(act, h_new, tl.zeros_like(h_new)), mask=m2)
            tl.store(hT_ptr + off, h_keep, mask=last_r & jmask[None, :])
            tl.store(cT_ptr + off, c_keep.to(OUT_T), mask=last_r & jmask[None, :])
        if GRID_SYNC:   # the next step reads h written by the other programs of this batch tile
            grid_barrier(sync_ptr + pid_b * COUNTER_STRIDE, n_h, s + 1)
        else:           # ... or by other threads of this program (no-op when interpreting)
            tl.debug_barrier()


#: the same kernel behind Triton's autotuner (GPU only), one wrapper per schedule
_tuned = tuned_kernels(lstm_fwd_kernel, "forward")


def forward(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, lengths: Optional[Tensor], *,
            launch: Optional[Launch] = None):
    """The contract's forward for float32/float16/bfloat16 -> ``(hs, hT, cT, cs, gates)``.

    ``launch`` overrides the schedule and block sizes (tests use it to exercise every schedule);
    by default :func:`.common.choose_launch` decides.
    """
    T, B, G = xproj.shape
    H = G // 4
    dev, D = xproj.device, xproj.dtype
    hs = torch.empty(T, B, H, device=dev, dtype=D)
    hT = torch.empty(B, H, device=dev, dtype=D)
    cT = torch.empty(B, H, device=dev, dtype=D)
    cs = torch.empty(T, B, H, device=dev, dtype=torch.float32)
    gates = torch.empty(T, B, G, device=dev, dtype=torch.float32)
    if T == 0 or B == 0 or H == 0:
        hT.copy_(h0)
        cT.copy_(c0)
        return hs, hT, cT, cs, gates
    hbuf = torch.empty(2, B, H, device=dev, dtype=D)
    dot_f32, precision = dot_mode(D)
    args = (xproj, w_hh, h0, c0, lengths if lengths is not None else xproj,
            hs, hT, cT, cs, gates, hbuf)
    flags = dict(HAS_LENGTHS=lengths is not None, DOT_F32=dot_f32, PRECISION=precision)
    launch = launch or choose_launch(B, H)
    run_schedule(lstm_fwd_kernel, _tuned, launch, T=T, B=B, H=H, args=args, flags=flags,
                 first=0, count=T, direction=1, device=dev,
                 fixed_extra=dict(W_RESIDENT=launch.w_resident))
    return hs, hT, cT, cs, gates
