"""The ``triton`` backend beyond the core contract: launch configurations (tiles, grids, the
persistent schedule's barrier, register-resident weights), availability, and the layer against
``torch.nn.LSTM``.

Every schedule (``triton:persistent|sequence|step``) in every dtype against the reference and a
float64 run is ``tests/test_core_contract.py``'s job; here the same check
(:func:`charlstm.testing.check_core`, the 2x rule) runs under explicit :class:`Launch` objects,
the kernels' internal test hook for tile sizes.  Without a GPU every kernel runs under the Triton
interpreter on CPU tensors (``conftest`` sets ``TRITON_INTERPRET=1``); on a GPU machine the same
tests run the compiled kernels on CUDA tensors, and the ``cuda``-marked tests at the end compare
with cuDNN.  The interpreter costs milliseconds per Triton operation, so shapes are small.

On a GPU the compiled kernels' float32 ``exp`` and ``/`` are approximate (``ex2.approx.f32``,
``div.full.f32``: a few float32 ulp) and Triton fuses multiply-adds into FMAs, so their results
differ from the interpreter's and the reference's in the last float32 bits, far below 1e-5 and
16-bit rounding (untested on GPU).  Both tolerances leave room for that, and no test expects bit
equality between a Triton kernel and anything else: exact comparisons are kept for the float64
fallback (which is the reference itself) and for integers (barrier counters).
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import triton
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import charlstm
from charlstm import testing
from charlstm.backends import triton as tb
from charlstm.backends.contract import CELLS
from charlstm.backends.triton import backward as tbwd
from charlstm.backends.triton import forward as tfwd
from charlstm.backends.triton.common import INTERPRET, SCHEDULES, Launch
from charlstm.testing import core_inputs, reference_runs, run_kernels

DEV = torch.device("cpu" if INTERPRET else "cuda")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _kernel_forward(launch):
    """:func:`.forward.forward` under ``launch`` behind the contract's arguments."""
    def forward(*args):
        return tfwd.forward(*args, launch=launch)
    return forward


def _kernel_backward(launch):
    """:func:`.backward.backward` under ``launch`` behind the contract's arguments."""
    def backward(*args):
        return tbwd.backward(*args, launch=launch)
    return backward


def check_core(T, B, H, dtype, *, lengths=None, zero_state=False, launch=None, cell="lstm"):
    """Forward and backward of the kernels under ``launch`` against the reference and a float64
    run (:func:`charlstm.testing.check_core`); the backward is fed the reference forward's saved
    ``hs``/``cs``/``gates``.  Inactive rows: exact zeros in ``hs`` and ``dgates``."""
    inputs, grads = core_inputs(T, B, H, dtype, DEV, cell=cell, lengths=lengths,
                                zero_state=zero_state)
    ref, exact = reference_runs(inputs, grads, cell=cell)
    got = run_kernels(_kernel_forward(launch), _kernel_backward(launch), inputs, grads, ref, cell)
    bad = testing.check_core(got, ref, exact, dtype, inputs[4])
    assert not bad, f"{cell} {launch} ({dtype}) outside the 2x rule: {bad}"
    if inputs[4] is not None:   # the contract's exact zeros on inactive rows
        inactive = torch.arange(T, device=DEV).unsqueeze(1) >= inputs[4].long()
        assert (got["hs"][inactive] == 0).all() and (got["dgates"][inactive] == 0).all()


# ----------------------------------------------------------------------------- the core
@pytest.mark.parametrize("schedule,max_programs", [
    ("sequence", None), ("step", None),
    ("persistent", 2),      # nh = 1: one program per batch tile runs the real grid barrier
    ("persistent", 4),      # nh = 2 < 3 hidden tiles: a program strides over two of them
    ("persistent", None)])  # nh = 3: one program per hidden tile
def test_core_tiled(schedule, max_programs):
    """Tiles smaller than H and B: H = 33 over three 16-wide hidden and K tiles, B = 17 over two
    batch tiles; every schedule (one launch for all steps / one launch per step / persistent
    grid capped at ``max_programs``; under the interpreter nh > 1 runs one launch per step)."""
    check_core(4, 17, 33, torch.float32, lengths=[4, 1, 3] + [4] * 13 + [2],
               launch=Launch(schedule, 16, 16, 16, 1, max_programs))


@pytest.mark.parametrize("launch", [
    Launch("step", 16, 4, 16, 1),                                   # 4-wide tiles (dot N = 16)
    Launch("persistent", 16, 8, 32, 1, max_programs=2),             # 8-wide, grid barrier, nh=1
    Launch("step", 16, 8, 64, 1, w_resident=True),                  # W_hh slice in registers
    Launch("persistent", 16, 4, 64, 1, w_resident=True),            # ... one launch per step
    Launch("persistent", 32, 16, 64, 1, max_programs=4, w_resident=True)],  # ... nh = 3 tiles
    ids=["step-bh4", "persistent-bh8-barrier", "step-resident", "persistent-resident",
         "persistent-resident-wide"])
def test_core_narrow_tiles_and_resident_weights(launch):
    """The forward's gate-interleaved dot with hidden tiles narrower than 16 (the backward runs
    16-wide ones), and W_RESIDENT (each program loads its W_hh slice once for all steps);
    H = 33 (ragged tiles), B = 17, packed."""
    check_core(4, 17, 33, torch.float32, lengths=[4, 1, 3] + [4] * 13 + [2], launch=launch)


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh"])     # rnn_relu: only its pointwise differs
@pytest.mark.parametrize("launch", [
    Launch("persistent", 16, 16, 16, 1, max_programs=4),            # nh = 2 over 3 tiles
    Launch("persistent", 16, 8, 16, 1, max_programs=2),             # grid barrier, nh = 1
    Launch("persistent", 16, 4, 64, 1, w_resident=True)],           # W_hh slice in registers
    ids=["persistent-strided", "persistent-barrier", "persistent-resident"])
def test_cells_tiled(cell, launch):
    """The GRU and the RNN in the kernels' multi-tile paths, which the contract test (one tile
    under the interpreter) does not reach: H = 33 over 16-, 8- or 4-wide hidden tiles (the RNN's
    forward raises them to 16: its dot has N = BLOCK_H) and 16-wide K chunks (the GRU's
    backward chunks straddle the boundary between dgates' r/z blocks and its dn * r scratch),
    B = 17 over two batch tiles, packed; a program striding over two hidden tiles, the real
    grid barrier, and a register-resident W_hh slice (the GRU's fourth dot slot masked)."""
    check_core(4, 17, 33, torch.float32, lengths=[4, 1, 3] + [4] * 13 + [2], launch=launch,
               cell=cell)


def test_cell_sets_the_narrowest_tile():
    """tl.dot needs N >= 16: the forward's N is dot_slots(cell) * BLOCK_H (4 slots for the LSTM
    and the GRU, whose fourth is padding; 1 for the RNN), the backward's BLOCK_H; fixed launches
    are raised to that, wider ones are left alone."""
    from charlstm.backends.triton.common import cell_launch, dot_slots
    assert [dot_slots(c) for c in CELLS] == [4, 4, 1, 1]
    narrow, wide = Launch("step", 16, 4, 16, 1), Launch("step", 16, 32, 16, 1)
    for cell in CELLS:
        fwd = cell_launch(narrow, cell, "forward").block_h
        assert fwd == (4 if dot_slots(cell) == 4 else 16)
        assert cell_launch(narrow, cell, "backward").block_h == 16
        assert cell_launch(wide, cell, "forward") == wide == cell_launch(wide, cell, "backward")
    assert cell_launch(Launch("step"), "rnn_tanh", "forward") == Launch("step")   # autotuned


@pytest.mark.parametrize("launch,msg", [
    (Launch("sequence", 16, 16, 64, 1, w_resident=True), "one hidden tile per program"),
    (Launch("step", 16, 16, 32, 1, w_resident=True), "block_k >= H"),
    (Launch("persistent", 16, 16, 64, 1, max_programs=4, w_resident=True), "2 program")])
def test_resident_launch_that_cannot_hold_its_slice_is_refused(launch, msg):
    (xproj, w_hh, h0, c0, L, b_hn), _ = core_inputs(2, 17, 33, torch.float32, DEV)
    with pytest.raises(ValueError, match=msg):
        tfwd.forward(xproj, w_hh, h0, c0, L, b_hn, launch=launch)


@pytest.mark.parametrize("batch,hidden,dtype,cap,cell,want", [
    (16, 512, torch.bfloat16, None, "lstm", [(4, 4), (8, 4), (16, 8)]),
    (16, 768, torch.bfloat16, None, "lstm", []),           # K chunk 1024: spills, never resident
    (16, 512, torch.float32, None, "lstm", [(4, 4)]),      # 4-byte slices: only the narrowest fits
    (16, 512, torch.bfloat16, 132, "lstm", [(4, 4), (8, 4), (16, 8)]),
    (32, 512, torch.bfloat16, 132, "lstm", [(8, 4), (16, 8)]),   # 2 batch tiles: 66 programs each
    (64, 512, torch.bfloat16, 132, "lstm", [(16, 8)]),
    (16, 512, torch.float32, None, "gru", [(4, 4)]),       # 4 dot slots (one padding): as the LSTM
    (16, 512, torch.float32, None, "rnn_tanh", [(16, 8)]),  # N = BLOCK_H >= 16, a quarter slice
    (16, 768, torch.bfloat16, None, "rnn_relu", [])])
def test_resident_configs_pruned_per_shape(monkeypatch, batch, hidden, dtype, cap, cell, want):
    """The persistent forward autotuner keeps every ordinary configuration its cell's dot allows
    (the RNN's N = BLOCK_H must be >= 16), and W_RESIDENT ones only where each program owns one
    hidden tile within the co-residency cap and the slice (dot_slots(cell) * BLOCK_H columns)
    fits the register budget -- with BLOCK_K set to next_pow2(H)."""
    from charlstm.backends.triton import common
    monkeypatch.setattr(common, "_device_programs", lambda device: cap)
    configs = common.tune_configs("persistent", "forward")
    kept = common._prune_persistent(configs, {"B": batch, "H": hidden,
                                            "w_ptr": torch.empty(0, dtype=dtype)}, CELL=cell)
    ordinary = [c for c in configs if not c.kwargs["W_RESIDENT"]
                and common.dot_slots(cell) * c.kwargs["BLOCK_H"] >= 16]
    assert (min(c.kwargs["BLOCK_H"] for c in ordinary) == 16) == cell.startswith("rnn")
    assert kept[:len(ordinary)] == ordinary
    resident = kept[len(ordinary):]
    assert [(c.kwargs["BLOCK_H"], c.num_warps) for c in resident] == want
    assert all(c.kwargs["BLOCK_K"] == triton.next_power_of_2(hidden) for c in resident)
    assert all("W_RESIDENT" not in c.kwargs for c in common.tune_configs("persistent", "backward"))
    assert all(c.kwargs["BLOCK_H"] >= 16 for c in common.tune_configs("persistent", "backward"))


@pytest.mark.parametrize("batch", [1, 16, 17, 40, 4096])
def test_barrier_counters_cover_every_batch_tile(batch):
    """The grid barrier's arrival counters: one per batch tile that any configuration (or fixed
    launch, BLOCK_B >= MIN_BLOCK_B) can have, each on its own 128-byte line, int64, zeroed."""
    from charlstm.backends.triton import common
    counters = common.barrier_counters(batch, DEV)
    stride = common.COUNTER_STRIDE.value
    assert counters.dtype == torch.int64 and stride * 8 >= 128 and not counters.any()
    configs = common.tune_configs("persistent", "forward") + common.tune_configs("persistent",
                                                                                 "backward")
    assert min(c.kwargs["BLOCK_B"] for c in configs) >= common.MIN_BLOCK_B
    assert min(c.kwargs["BLOCK_H"] for c in configs) >= common.MIN_BLOCK_H
    nb = triton.cdiv(batch, common.MIN_BLOCK_B)
    assert (nb - 1) * stride < counters.numel() <= nb * stride


@pytest.mark.parametrize("batch,cap,kept_block_b", [
    (4096, 132, {32, 64}),      # 16-row tiles: 256 of them > 132 SMs, each with nh = 1
    (2048, 132, {16, 32, 64}),  # every grid fits
    (16384, 132, {16, 32, 64}),  # none fits: all nh = 1, nobody waits, all kept (ordinary launch)
    (4096, None, {16, 32, 64})])
def test_persistent_configs_pruned_to_coresident_grids(monkeypatch, batch, cap, kept_block_b):
    """Where some configuration's persistent grid fits the device, the autotuner keeps only
    those, so every grid it times and launches can go cooperatively; run_schedule launches
    cooperatively exactly then."""
    from charlstm.backends.triton import common
    monkeypatch.setattr(common, "_device_programs", lambda device: cap)
    for direction in ("forward", "backward"):
        configs = common.tune_configs("persistent", direction)
        kept = common._prune_persistent(configs, {"B": batch, "H": 768,
                                                  "w_ptr": torch.empty(0, dtype=torch.float16)})
        assert {c.kwargs["BLOCK_B"] for c in kept} == kept_block_b
        grids = [common.persistent_grid(batch, 768, c.kwargs["BLOCK_B"], c.kwargs["BLOCK_H"], cap)
                 for c in kept]
        fits = cap is None or all(nb * nh <= cap for nb, nh in grids)
        assert fits == common._grid_fits(batch, cap, configs)
        assert fits or all(nh == 1 for _, nh in grids)   # a grid that may not fit never waits


@pytest.mark.parametrize("batch,hidden,cap,want", [
    (17, 33, 2, (2, 1)), (17, 33, 4, (2, 2)), (17, 33, None, (2, 3)), (17, 33, 132, (2, 3)),
    (16, 768, 132, (1, 48)), (64, 1024, 132, (4, 33)), (4096, 64, 132, (256, 1))])
def test_persistent_grid_keeps_every_waiting_program_resident(batch, hidden, cap, want):
    """nb * nh never exceeds the cap where programs wait for each other (nh > 1)."""
    from charlstm.backends.triton.common import persistent_grid
    nb, nh = persistent_grid(batch, hidden, 16, 16, cap)
    assert (nb, nh) == want
    assert nh == 1 or cap is None or nb * nh <= cap


# ----------------------------------------------------------------------------- launches
_REFUSAL = "Triton Error [CUDA]: too many blocks in cooperative launch"


class _Kernel:
    """Stands in for a ``@triton.jit`` kernel in :func:`run_schedule`: records every launch
    (grid, ``t_first``, ``t_count``, cooperative or not, the device guard then entered) and,
    like the driver when a grid cannot be resident at once, raises ``refuse`` for a
    cooperative launch; ``real`` (an interpreted kernel) runs the launches it accepts."""

    def __init__(self, refuse=None, real=None, guard=None):
        self.refuse, self.real, self.guard, self.launches = refuse, real, guard, []
        self.__name__ = getattr(real, "__name__", "lstm_fake_kernel")

    def __getitem__(self, grid):
        def launch(*args, **kw):
            coop = kw.pop("launch_cooperative_grid", False)
            self.launches.append(dict(grid=grid(kw), t_first=args[-5], t_count=args[-4],
                                      cooperative=coop, device=(self.guard or {}).get("in")))
            if coop and self.refuse:
                raise RuntimeError(self.refuse)
            if self.real is not None:
                self.real[grid](*args, **kw)
        return launch


def _run(kernel, launch, T=3, B=17, H=33, device=DEV):
    from charlstm.backends.triton.common import run_schedule
    return run_schedule(kernel, {}, launch, T=T, B=B, H=H, args=(), flags={}, first=0, count=T,
                        direction=1, device=device)


@pytest.fixture
def gpu_launch_rules(monkeypatch):
    """run_schedule deciding as on a GPU (the kernels themselves stay interpreted), with no
    cooperative refusal remembered from another test."""
    from charlstm.backends.triton import common
    monkeypatch.setattr(common, "INTERPRET", False)
    monkeypatch.setattr(common, "_REFUSED", set())
    return common


def test_waiting_persistent_grid_is_launched_cooperatively(gpu_launch_rules):
    """A persistent grid whose programs wait for each other (nh > 1) goes out as one
    cooperative launch; one whose programs never wait (nh == 1: it may exceed the SMs) and the
    other schedules go out as ordinary launches."""
    k = _Kernel()
    assert _run(k, Launch("persistent", 16, 16, 16, 1, max_programs=4)) == "persistent"
    assert k.launches == [dict(grid=(2, 2), t_first=0, t_count=3, cooperative=True, device=None)]
    assert gpu_launch_rules.last_schedules()["forward"] == "persistent"
    for launch in (Launch("persistent", 16, 16, 16, 1, max_programs=2),
                   Launch("sequence", 16, 16, 16, 1), Launch("step", 16, 16, 16, 1)):
        k = _Kernel()
        assert _run(k, launch) == launch.schedule
        assert k.launches and not any(rec["cooperative"] for rec in k.launches)


def test_refused_cooperative_launch_falls_back_to_step_schedule(gpu_launch_rules):
    """When the driver refuses the cooperative grid, run_schedule warns once and runs the
    "step" schedule (one launch per step over every hidden tile) instead of a grid that could
    hang; the refusal is remembered (no second try, no second warning).  Other launch errors
    are not swallowed."""
    k = _Kernel(refuse=_REFUSAL)
    launch = Launch("persistent", 16, 16, 16, 1, max_programs=4)
    with pytest.warns(RuntimeWarning, match="refused the cooperative launch.*'step' schedule"):
        assert _run(k, launch) == "step"
    step = [dict(grid=(2, 3), t_first=t, t_count=1, cooperative=False, device=None)
            for t in range(3)]
    assert k.launches[0]["cooperative"] and k.launches[1:] == step
    k.launches.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _run(k, launch) == "step"
    assert k.launches == step
    with pytest.raises(RuntimeError, match="illegal memory access"):
        _run(_Kernel(refuse="Triton Error [CUDA]: an illegal memory access was encountered"),
             Launch("persistent", 16, 16, 16, 1, max_programs=6))


def test_refused_cooperative_launch_still_computes_the_core(gpu_launch_rules, monkeypatch):
    """The fallback end to end: both kernels (interpreted) refuse their cooperative persistent
    grid (nh = 2), run the "step" schedule instead, and match the reference."""
    kernels = {}
    for mod, name in ((tfwd, "lstm_fwd_kernel"), (tbwd, "lstm_bwd_kernel")):
        kernels[name] = _Kernel(refuse=_REFUSAL, real=getattr(mod, name))
        monkeypatch.setattr(mod, name, kernels[name])
    with pytest.warns(RuntimeWarning, match="refused the cooperative launch"):
        check_core(4, 17, 33, torch.float32, lengths=[4, 1, 3] + [4] * 13 + [2],
                   launch=Launch("persistent", 16, 16, 16, 1, max_programs=4))
    assert gpu_launch_rules.last_schedules() == {"forward": "step", "backward": "step"}
    for k in kernels.values():
        assert k.launches[0]["cooperative"] and k.launches[0]["grid"] == (2, 2)
        assert all(rec["grid"] == (2, 3) and rec["t_count"] == 1 for rec in k.launches[1:])


def test_launches_run_on_the_tensors_device(monkeypatch):
    """Triton launches on the current device's current stream: run_schedule enters
    ``torch.cuda.device(tensor device)`` around every launch (tensors on cuda:1 while the
    current device is 0 must not launch on device 0), and nothing for CPU tensors (a stand-in
    guard records what was entered; no GPU here)."""
    from charlstm.backends.triton import common
    state = {"in": None}

    class Guard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            state["in"] = torch.device(self.device)

        def __exit__(self, *exc):
            state["in"] = None

    monkeypatch.setattr(torch.cuda, "device", Guard)
    monkeypatch.setattr(common, "barrier_counters",
                        lambda batch, device: torch.zeros(16, dtype=torch.int64))
    monkeypatch.setattr(common, "_device_programs", lambda device: None)  # cuda:1 need not exist
    cuda1 = torch.device("cuda", 1)
    for launch in (Launch("step", 16, 16, 16, 1), Launch("persistent", 16, 16, 16, 1)):
        k = _Kernel(guard=state)
        _run(k, launch, device=cuda1)
        assert k.launches and all(rec["device"] == cuda1 for rec in k.launches)
        assert state["in"] is None
    k = _Kernel(guard=state)
    _run(k, Launch("sequence", 16, 16, 16, 1), device=torch.device("cpu"))
    assert k.launches and all(rec["device"] is None for rec in k.launches)


def test_barrier_counts_every_arrival_under_the_interpreter(monkeypatch):
    """With one program per batch tile (nh = 1) the persistent schedule runs the real barrier
    code under the interpreter: each batch tile's counter ends at the number of steps (one
    arrival per step, never reset), on its own line; nothing else is touched."""
    from charlstm.backends.triton import common
    made = []

    def counters(batch, device):
        made.append(common.barrier_counters.__wrapped__(batch, device))
        return made[-1]

    counters.__wrapped__ = common.barrier_counters
    monkeypatch.setattr(common, "barrier_counters", counters)
    check_core(3, 17, 20, torch.float32, launch=Launch("persistent", 16, 16, 16, 1,
                                                       max_programs=2))
    stride = common.COUNTER_STRIDE.value
    for got, steps in zip(made, (3, 4)):   # forward: T steps; backward: T + the closing pass
        want = torch.zeros_like(got)
        want[0] = want[stride] = steps
        assert torch.equal(got, want), got


def test_autotuned_persistent_kernels_zero_counters_and_prune(monkeypatch):
    """The persistent autotuners (built here as on a GPU, around the interpreted kernels) zero
    the arrival counters before every timing run and prune per shape; the others do neither."""
    from charlstm.backends.triton import common
    monkeypatch.setattr(common, "INTERPRET", False)
    for kernel, direction in ((tfwd.lstm_fwd_kernel, "forward"),
                              (tbwd.lstm_bwd_kernel, "backward")):
        tuned = common.tuned_kernels(kernel, direction)
        assert set(tuned) == set(common.SCHEDULES)
        sync = torch.arange(32, dtype=torch.int64)
        tuned["persistent"].pre_hook({"sync_ptr": sync})
        assert not sync.any()
        assert tuned["persistent"].early_config_prune is common._prune_persistent
        assert tuned["step"].reset_to_zero == [] and tuned["step"].early_config_prune is None
        # one cache entry per cell: a configuration tuned for the LSTM may not fit the RNN
        assert all(t.keys == ["B", "H", "CELL"] for t in tuned.values())


# ----------------------------------------------------------------------------- 64-bit offsets
def _run_on_fake_memory(monkeypatch, kernel, shapes, scalars, consts, program, programs):
    """Run one program of ``kernel`` under the interpreter on tensors too large to exist.

    ``shapes`` maps each pointer argument to its (full) shape; each gets a one-element
    float32 (int32 for ``len_ptr``, int64 for ``sync_ptr``) stand-in whose address is replaced
    by a fake base, 2^44 apart.  Loads return zeros and stores do nothing, but first every
    masked-in address must fall inside its own argument's full extent; and every int32
    add, subtract and multiply is redone in int64 and must fit.  ``program``/``programs``:
    the ``(pid_b, pid_h)`` the single launched program reports, and the grid it believes in.
    """
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter as ti

    builder = ti.interpreter_builder
    fake_base, extent, args = {}, {}, {}
    for name, shape in shapes.items():
        dtype = {"len_ptr": torch.int32, "sync_ptr": torch.int64}.get(name, torch.float32)
        t = torch.zeros(1, dtype=dtype)
        base = (len(args) + 1) << 44
        fake_base[t.data_ptr()] = base
        extent[base] = (name, math.prod(shape) * t.element_size())
        args[name] = t
    real_cvt = ti._implicit_cvt

    def implicit_cvt(arg):
        out = real_cvt(arg)
        if hasattr(arg, "data_ptr") and arg.data_ptr() in fake_base:
            out.handle.data[:] = fake_base[arg.data_ptr()]
        return out

    def check(ptrs, mask, what):
        addr = np.broadcast_to(ptrs.data, np.broadcast_shapes(ptrs.data.shape, mask.data.shape))
        addr = addr[np.broadcast_to(mask.data, addr.shape)].astype(np.uint64)
        if addr.size == 0:
            return
        lo, hi = int(addr.min()), int(addr.max())
        base = lo >> 44 << 44
        name, nbytes = extent.get(base, ("no argument", 0))
        size = ptrs.get_element_ty().primitive_bitwidth // 8
        assert hi + size <= base + nbytes, \
            f"{what} outside {name}: byte offsets {lo - base}..{hi - base} of {nbytes}"

    def load(ptrs, mask, other, *_):
        check(ptrs, mask, "load")
        ty = ptrs.get_element_ty()
        return ti.TensorHandle(np.zeros(ptrs.data.shape, dtype=ti._get_np_dtype(ty)), ty)

    def store(ptrs, value, mask, *_):
        check(ptrs, mask, "store")

    def int32_checked(name, op):
        real = getattr(builder, name)

        def checked(lhs, rhs):
            if lhs.dtype.scalar == tl.int32 and rhs.dtype.scalar == tl.int32:
                wide = op(lhs.data.astype(np.int64), rhs.data.astype(np.int64))
                assert ((wide >= -2**31) & (wide < 2**31)).all(), f"int32 {name} overflows"
            return real(lhs, rhs)
        monkeypatch.setattr(builder, name, checked)

    for name, op in (("create_add", np.add), ("create_sub", np.subtract),
                     ("create_mul", np.multiply)):
        int32_checked(name, op)
    monkeypatch.setattr(ti, "_implicit_cvt", implicit_cvt)
    monkeypatch.setattr(builder, "create_masked_load", load)
    monkeypatch.setattr(builder, "create_masked_store", store)
    monkeypatch.setattr(builder, "create_get_program_id", lambda axis: ti.TensorHandle(
        np.array([program[axis] if axis < 2 else 0], dtype=np.int32), tl.int32))
    monkeypatch.setattr(builder, "create_get_num_programs", lambda axis: ti.TensorHandle(
        np.array([programs[axis] if axis < 2 else 1], dtype=np.int32), tl.int32))
    kernel[(1, 1)](**args, **scalars, **consts)


@pytest.mark.skipif(not INTERPRET, reason="runs the kernels' address arithmetic in the interpreter")
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("B,H,block_h,block_k", [
    (2 ** 25, 64, 64, 64),     # B * H = 2^31: the batch and time offsets of every [.., B, ..]
    (16, 23232, 16, 8192)],    # G H^2 > 2^31 (4 H^2 for the LSTM, 3 H^2 for the GRU): W_hh
    ids=["BH=2^31", "GHH>2^31"])
def test_offsets_do_not_overflow_on_huge_shapes(monkeypatch, cell, B, H, block_h, block_k):
    """Offsets that can exceed 2^31 are 64-bit: both kernels' last program (last batch tile,
    last hidden tile), every step of T = 2 (and the backward's closing pass), run their real
    address arithmetic on shapes no CPU test could allocate, for each cell's layout (G gate
    blocks, S saved ones, the GRU's b_hn, h[t-1], dn * r and dh * z scratch); every access
    lands inside its tensor (a tensor a cell does not have is empty: never touched) and no
    32-bit integer operation overflows (see _run_on_fake_memory).  (For the RNN, G H^2 stays
    below 2^31 at this H; rnn_relu shares rnn_tanh's addressing.)"""
    spec = CELLS[cell]
    T, G, S = 2, spec.gates * H, spec.saved * H
    program = (triton.cdiv(B, 16) - 1, triton.cdiv(H, block_h) - 1)
    programs = (program[0] + 1, program[1] + 1)
    sync = [triton.cdiv(B, 16) * 16]
    consts = dict(CELL=cell, HAS_LENGTHS=True, DOT_F32=False, PRECISION="ieee", GRID_SYNC=False,
                  XCACHE="", BLOCK_B=16, BLOCK_H=block_h, BLOCK_K=block_k)
    c_shape = [B, H] if spec.has_c else [0]   # never touched by cells without c
    fwd = dict(xproj_ptr=[T, B, G], w_ptr=[G, H], h0_ptr=[B, H], c0_ptr=c_shape,
               bhn_ptr=[H] if cell == "gru" else [0], len_ptr=[B], hs_ptr=[T, B, H],
               hT_ptr=[B, H], cT_ptr=c_shape, cs_ptr=[T] + c_shape, gates_ptr=[T, B, S],
               hbuf_ptr=[2, B, H], sync_ptr=sync)
    for resident in (False, True):
        _run_on_fake_memory(monkeypatch, tfwd.lstm_fwd_kernel, fwd,
                            dict(t_first=0, t_count=T, T=T, B=B, H=H),
                            dict(consts, W_RESIDENT=resident), program, programs)
    bwd = dict(dhs_ptr=[T, B, H], dhT_ptr=[B, H], dcT_ptr=c_shape, w_ptr=[G, H], h0_ptr=[B, H],
               c0_ptr=c_shape, hs_ptr=[T, B, H], cs_ptr=[T] + c_shape, gates_ptr=[T, B, S],
               len_ptr=[B], dgates_ptr=[T, B, G], dh0_ptr=[B, H], dc0_ptr=c_shape,
               dhbuf_ptr=[2, B, H], cellbuf_ptr=[2, B, H] if spec.gates > 1 else [0],
               dnbuf_ptr=[2, B, H] if cell == "gru" else [0], sync_ptr=sync)
    _run_on_fake_memory(monkeypatch, tbwd.lstm_bwd_kernel, bwd,
                        dict(t_first=T - 1, t_count=T + 1, T=T, B=B, H=H), consts,
                        program, programs)


def test_core_rejects_bad_inputs():
    (xproj, w_hh, h0, c0, L, _b_hn), _ = core_inputs(2, 2, 16, torch.float32, DEV)
    with pytest.raises(ValueError, match="w_hh must be"):
        tb.ops.forward(xproj, w_hh[:, :8], h0, c0, L)
    with pytest.raises(TypeError, match="dtype must be"):
        tb.ops.forward(*(t.to(torch.int32) for t in (xproj, w_hh, h0, c0)), L)


def test_availability():
    for v in tb.VARIANTS:
        assert tb.variant_reason(v, DEV, torch.float32) is None
        assert tb.variant_reason(v, DEV, torch.float64) is None
    assert "not supported" in tb.variant_reason("", DEV, torch.int64)
    with pytest.raises(ValueError, match="unknown variant 'warp'"):
        tb.variant_reason("warp", DEV, torch.float32)
    assert set(tb.VARIANTS) == set(SCHEDULES)      # the registry's names are the kernels' schedules
    assert charlstm.backends.unavailable_reason("triton", DEV, torch.bfloat16) is None


_NO_INTERPRETER_SCRIPT = textwrap.dedent("""
    import torch, charlstm
    from charlstm.backends import triton as tb
    why = tb.variant_reason("", torch.device("cpu"), torch.float32)
    assert why is not None and "TRITON_INTERPRET=1" in why, why
    try:
        charlstm.LSTM(3, 8, backend="triton")(torch.randn(2, 1, 3))
    except charlstm.BackendUnavailable as e:
        assert "TRITON_INTERPRET=1" in str(e), e
    else:
        raise AssertionError("CPU tensors ran without the interpreter")
    print("ok")
""")


def _subprocess_env() -> dict:
    """This environment without TRITON_INTERPRET, with the repository on the path."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cpu_without_interpreter_is_unavailable_with_reason():
    """Without TRITON_INTERPRET=1, CPU tensors are refused with a sentence naming the fix."""
    r = subprocess.run([sys.executable, "-c", _NO_INTERPRETER_SCRIPT], env=_subprocess_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-4000:]


# ----------------------------------------------------------------------------- the layer
def _layer_pair(dtype=torch.float32, **kw):
    """(charlstm.LSTM with the triton backend on DEV, torch.nn.LSTM on CPU) with equal weights."""
    ref = torch.nn.LSTM(**kw).to(dtype)
    ours = charlstm.LSTM(**kw, backend="triton").to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ours.to(DEV), ref


def _compare_grads(ours, ref, extra, atol=1e-5, rtol=1e-5):
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad.cpu(), q.grad, atol=atol, rtol=rtol,
                                   msg=lambda m, name=name: f"grad of {name}: {m}")
    for name, a, b in extra:
        torch.testing.assert_close(a.grad.cpu(), b.grad, atol=atol, rtol=rtol,
                                   msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.mark.parametrize("proj_size", [0, 7])
def test_layer_matches_torch_multilayer_bidirectional(proj_size):
    """2 layers, bidirectional, batch_first, given (h0, c0); outputs, h_n, c_n, every gradient."""
    kw = dict(input_size=5, hidden_size=20, num_layers=2, bidirectional=True, batch_first=True,
              proj_size=proj_size)
    ours, ref = _layer_pair(**kw)
    h_out = proj_size or 20
    x = torch.randn(3, 6, 5, requires_grad=True)
    h0 = torch.randn(4, 3, h_out, requires_grad=True)
    c0 = torch.randn(4, 3, 20, requires_grad=True)
    xd, h0d, c0d = (t.detach().to(DEV).requires_grad_() for t in (x, h0, c0))
    y, (h, c) = ours(xd, (h0d, c0d))
    y2, (h2, c2) = ref(x, (h0, c0))
    for a, b in ((y, y2), (h, h2), (c, c2)):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)
    g = [torch.randn_like(t) for t in (y2, h2, c2)]
    torch.autograd.backward([y, h, c], [t.to(DEV) for t in g])
    torch.autograd.backward([y2, h2, c2], g)
    _compare_grads(ours, ref, [("x", xd, x), ("h0", h0d, h0), ("c0", c0d, c0)])


@pytest.mark.parametrize("with_hx", [False, True], ids=["zero_state", "hx"])
def test_layer_matches_torch_packed(with_hx):
    """PackedSequence input (unsorted lengths), bidirectional, 2 layers, zero or given initial
    state.  Lengths [3, 7, 1, 5] sort by the 4-cycle [1, 3, 0, 2], which is not its own inverse:
    h0/c0 or h_n/c_n reordered with the wrong index set fails here."""
    kw = dict(input_size=4, hidden_size=18, num_layers=2, bidirectional=True)
    ours, ref = _layer_pair(**kw)
    lengths = torch.tensor([3, 7, 1, 5])
    x = torch.randn(7, 4, 4, requires_grad=True)
    xd = x.detach().to(DEV).requires_grad_()
    hx = tuple(torch.randn(4, 4, 18, requires_grad=True) for _ in range(2)) if with_hx else None
    hxd = tuple(t.detach().to(DEV).requires_grad_() for t in hx) if with_hx else None
    p = pack_padded_sequence(x, lengths, enforce_sorted=False)
    pd = pack_padded_sequence(xd, lengths, enforce_sorted=False)
    y, (h, c) = ours(pd, hxd)
    y2, (h2, c2) = ref(p, hx)
    y, _ = pad_packed_sequence(y)
    y2, _ = pad_packed_sequence(y2)
    for a, b in ((y, y2), (h, h2), (c, c2)):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)
    (y.pow(2).sum() + h.sum() + (c * 0.5).sum()).backward()
    (y2.pow(2).sum() + h2.sum() + (c2 * 0.5).sum()).backward()
    extra = [("h0", hxd[0], hx[0]), ("c0", hxd[1], hx[1])] if with_hx else []
    _compare_grads(ours, ref, [("x", xd, x)] + extra)


def test_layer_never_calls_native_lstm(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the triton backend called torch's native LSTM")

    for mod, name in ((torch._VF, "lstm"), (torch, "lstm"), (torch, "lstm_cell"),
                      (torch._VF, "lstm_cell")):
        monkeypatch.setattr(mod, name, boom, raising=False)
    m = charlstm.LSTM(3, 16, num_layers=2, bidirectional=True, backend="triton").to(DEV)
    x = torch.randn(4, 2, 3, device=DEV, requires_grad=True)
    y, (h, c) = m(x)
    (y.sum() + c.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- torch.compile
def test_torch_compile_fullgraph():
    m = charlstm.LSTM(5, 16, backend="triton").to(DEV)

    def f(x):
        y, (h, c) = m(x)
        return y.sum() + c.sum()

    x = torch.randn(4, 2, 5, device=DEV)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    got.backward()
    g1 = m.weight_hh_l0.grad.clone()
    m.zero_grad()
    want = f(x)
    want.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g1, m.weight_hh_l0.grad)


# ----------------------------------------------------------------------------- GPU compile
SM90_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "scripts", "triton_sm90.py")
#: (kernel, cell, dtype) of the barrier (persistent-schedule) builds of scripts/triton_sm90.py's
#: test set: every cell, float32 and bfloat16 between them
SYNC_BUILDS = [(k, c, d) for k in ("fwd", "bwd") for c, d in (
    ("lstm", "fp32"), ("lstm", "bf16"), ("gru", "fp32"), ("gru", "bf16"), ("rnn_tanh", "bf16"),
    ("rnn_relu", "fp32"))]


def _has_nvidia_compiler() -> bool:
    try:
        import triton.backends.nvidia as nv
    except ImportError:
        return False
    return os.path.exists(os.path.join(os.path.dirname(nv.__file__), "bin", "ptxas")) or \
        shutil.which("ptxas") is not None


@pytest.fixture(scope="module")
def sm90_build(tmp_path_factory):
    """Both kernels compiled ahead of time for sm_90 (no GPU needed) by scripts/triton_sm90.py's
    test set: the LSTM in every dtype, with and without ``lengths``, with and without the
    persistent schedule's grid barrier; the GRU and the RNNs with the barrier (float32 and
    bfloat16 between them).  A folder of ``{fwd,bwd}-<cell>-<dtype>-{sync,plain}.ptx`` and
    ``.json`` (compiled-kernel metadata)."""
    if not _has_nvidia_compiler():
        pytest.skip("Triton's NVIDIA backend (ptxas) is absent")
    out = tmp_path_factory.mktemp("sm90")
    r = subprocess.run([sys.executable, SM90_SCRIPT, str(out), "--set", "test"],
                       env=_subprocess_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.count(" ok") == 20
    return out


def test_kernels_compile_for_sm90(sm90_build):
    """Every build compiled to a cubin (the script checks it) and left its PTX: each cell's
    specialisation of both kernels."""
    names = {p.stem for p in sm90_build.glob("*.ptx")}
    assert len(names) == 20
    assert {n.split("-")[1] for n in names} == set(CELLS)


def _loops(ptx: str) -> list:
    """The loops of a PTX function as lists of instruction lines: from a label to the last
    branch back to it."""
    lines = [ln.split("//")[0].strip() for ln in ptx.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(".loc")]
    labels = {ln[:-1]: i for i, ln in enumerate(lines) if re.fullmatch(r"\$L__BB\w+:", ln)}
    out = []
    for i, ln in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+(\$L__BB\w+);", ln)
        if m and labels.get(m.group(1), i) < i:
            out.append(lines[labels[m.group(1)]:i + 1])
    return out


@pytest.mark.parametrize("kernel,cell,dtype", SYNC_BUILDS, ids="-".join)
def test_barrier_ptx_one_arrival_one_acquire_load_per_poll(sm90_build, kernel, cell, dtype):
    """The grid barrier as compiled for sm_90, in every cell's specialisation: per step one
    arrival (an acq_rel atomic add on the 64-bit counter, from one thread); a poll loop that
    sleeps and does exactly one acquire load and no atomic per round; no other atomics and no
    acquire anywhere else."""
    ptx = (sm90_build / f"{kernel}-{cell}-{dtype}-sync.ptx").read_text()
    atomics = re.findall(r"\b(?:atom|red)\.[\w.]+", ptx)
    assert atomics == ["atom.global.gpu.acq_rel.add.u64"], atomics
    acquires = re.findall(r"\bld\.[\w.]*acquire[\w.]*", ptx)
    assert len(acquires) == 1 and acquires[0].endswith(".b64"), acquires
    assert ptx.count("nanosleep") == 1
    # the innermost loop around the sleep (the step loop holds it too)
    poll = min((lp for lp in _loops(ptx) if any("nanosleep" in ln for ln in lp)), key=len)
    assert sum("acquire" in ln for ln in poll) == 1, poll
    assert not any(re.search(r"\b(?:atom|red)\.", ln) for ln in poll), poll
    # the poll sits inside the step loop, not around it: it holds no dot or global store
    assert not any(re.search(r"\bmma\b|wgmma|st\.global", ln) for ln in poll), poll
    # one thread polls: the load is predicated
    assert all(ln.startswith("@") for ln in poll if "acquire" in ln), poll
    if cell == "lstm":
        plain = (sm90_build / f"{kernel}-{cell}-{dtype}-plain.ptx").read_text()
        assert not re.search(r"\b(?:atom|red)\.|acquire|nanosleep", plain)


@pytest.mark.parametrize("kernel", ["fwd", "bwd"])
def test_barrier_kernels_carry_the_cooperative_launch_flag(sm90_build, kernel):
    """Compiled with ``launch_cooperative_grid=True`` (what :func:`run_schedule` passes for a
    barrier grid), the kernel's metadata carries it -- Triton's launcher reads it there and
    adds ``CU_LAUNCH_ATTRIBUTE_COOPERATIVE`` (an option this Triton did not know would be
    dropped silently, and the flag would read None)."""
    for path in sm90_build.glob(f"{kernel}-*.json"):
        meta = json.loads(path.read_text())
        assert meta["launch_cooperative_grid"] is path.stem.endswith("-sync"), path.stem


# ----------------------------------------------------------------------------- GPU only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_layer_vs_cudnn(dtype):
    """charlstm.LSTM(backend="triton") vs cuDNN, both measured against float64 on CPU: the
    kernel's error must be within twice cuDNN's own (plus the 2x rule's floor), for outputs and
    gradients."""
    kw = dict(input_size=8, hidden_size=48, num_layers=2, bidirectional=True)
    truth = torch.nn.LSTM(**kw).double()
    cudnn = copy.deepcopy(truth).to("cuda", dtype)
    ours = charlstm.LSTM(**kw, backend="triton").to("cuda", dtype)
    ours.load_state_dict(cudnn.state_dict())
    truth.load_state_dict({k: v.double().cpu() for k, v in cudnn.state_dict().items()})
    x = torch.randn(12, 8, 8).to(dtype)
    lengths = torch.tensor([12, 3, 7, 12, 1, 5, 9, 2])

    def run(m, dev, dt):
        xx = x.to(dev, dt).requires_grad_()
        out, (h, c) = m(pack_padded_sequence(xx, lengths, enforce_sorted=False))
        y, _ = pad_packed_sequence(out)
        (y.float().pow(2).sum() + h.float().sum() + c.float().sum()).backward()
        return [y, h, c, xx.grad] + [p.grad for p in m.parameters()]

    want = [t.double().cpu() for t in run(truth, "cpu", torch.float64)]
    ref = [t.double().cpu() for t in run(cudnn, "cuda", dtype)]
    got = [t.double().cpu() for t in run(ours, "cuda", dtype)]
    for i, (g, r, w) in enumerate(zip(got, ref, want)):   # the 2x rule with cuDNN as the base
        err, ref_err = testing.max_error(g, w), testing.max_error(r, w)
        assert err <= testing.tolerance(ref_err, w, dtype), (i, err, ref_err)


@pytest.mark.cuda
def test_gpu_long_sequence_bf16_stable():
    """T = 2048 in bfloat16 (the backend's own schedule): finite, and within the 2x rule of the
    reference kernels in bfloat16, both measured against the float64 reference on the same
    rounded inputs."""
    inputs, grads = core_inputs(2048, 4, 64, torch.bfloat16, DEV)
    ref, exact = reference_runs(inputs, grads)
    got = run_kernels(tb.ops.forward, tb.ops.backward, inputs, grads, ref)
    assert all(torch.isfinite(t).all() for t in got.values())
    bad = testing.check_core(got, ref, exact, torch.bfloat16, inputs[4])
    assert not bad, bad


@pytest.mark.cuda
def test_gpu_tensors_on_a_device_that_is_not_current():
    """Tensors on cuda:1 while cuda:0 is current: the kernels launch on cuda:1 (on its current
    stream), match the reference there (2x rule), and leave the current device as it was."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    dev = torch.device("cuda", 1)
    with torch.cuda.device(0):
        for launch in (None, Launch("persistent", 16, 16, 16, 4), Launch("step", 16, 16, 16, 4)):
            inputs, grads = core_inputs(6, 5, 40, torch.float32, dev, lengths=[6, 2, 5, 1, 6])
            ref, exact = reference_runs(inputs, grads)
            got = run_kernels(_kernel_forward(launch), _kernel_backward(launch), inputs, grads,
                              ref)
            assert all(t.device == dev for t in got.values())
            bad = testing.check_core(got, ref, exact, torch.float32, inputs[4])
            assert not bad, f"{launch}: {bad}"
        assert torch.cuda.current_device() == 0


@pytest.mark.cuda
@pytest.mark.parametrize("launch", [
    Launch("persistent", 16, 16, 64, 4), Launch("persistent", 16, 8, 64, 4),
    Launch("persistent", 16, 8, 512, 4, w_resident=True), Launch("sequence", 16, 16, 64, 4),
    Launch("step", 16, 16, 64, 4)],
    ids=["persistent", "persistent-bh8", "persistent-resident", "sequence", "step"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_schedules_many_programs(launch, dtype):
    """On a GPU, each schedule at a size where the persistent grid has many programs per batch
    tile (H = 300 over 16-wide tiles: 19 programs; 8-wide: 38) and several batch tiles
    (B = 40), packed; and W_hh register-resident (float32: a 64 KiB slice, which may spill)."""
    lengths = [24 - (b % 24) for b in range(40)]
    check_core(24, 40, 300, dtype, lengths=lengths, launch=launch)


@pytest.mark.cuda
@pytest.mark.parametrize("cell", ["gru", "rnn_tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gpu_cells_many_programs(cell, dtype):
    """On a GPU, the GRU and the RNN in the persistent schedule with many programs per batch tile
    (H = 300 over 16-wide tiles: 19 programs meeting at the grid barrier) and several batch
    tiles (B = 40), packed."""
    lengths = [24 - (b % 24) for b in range(40)]
    check_core(24, 40, 300, dtype, lengths=lengths, launch=Launch("persistent", 16, 16, 64, 4),
               cell=cell)


def test_autotune_can_be_switched_off_for_gpu_test_runs(monkeypatch):
    """CHARLSTM_TRITON_AUTOTUNE=0 gives GPU launches one fixed configuration (used by
    scripts/gpu_check.py so test runs don't compile every config for every shape)."""
    from charlstm.backends.triton import common
    monkeypatch.setattr(common, "INTERPRET", False)
    monkeypatch.delenv("CHARLSTM_TRITON_SCHEDULE", raising=False)
    monkeypatch.setenv("CHARLSTM_TRITON_AUTOTUNE", "0")
    fixed = common.choose_launch(8, 512)
    assert fixed.fixed and fixed.schedule == "persistent"
    first = common.tune_configs("persistent")[0]
    assert (fixed.block_b, fixed.block_h, fixed.block_k, fixed.num_warps) == (
        first.kwargs["BLOCK_B"], first.kwargs["BLOCK_H"], first.kwargs["BLOCK_K"], first.num_warps)
    monkeypatch.setenv("CHARLSTM_TRITON_AUTOTUNE", "1")
    assert not common.choose_launch(8, 512).fixed
