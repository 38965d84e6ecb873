"""What the Triton forward and backward kernels share: mode detection, dtypes, launch choices.

* :data:`INTERPRET` -- whether ``triton.jit`` in this process builds interpreter functions
  (``TRITON_INTERPRET=1`` was set before the kernels were defined).  Decided once, at import,
  exactly as Triton decides it.
* :func:`dot_mode` -- how a kernel feeds ``tl.dot`` for an input dtype (see its docstring).
* :class:`Launch` and :func:`choose_launch` -- the schedule (``"sequence"``, ``"step"`` or
  ``"persistent"``, see :class:`Launch`) and the block sizes.
* :func:`run_schedule` -- launches a forward or backward kernel under a :class:`Launch`
  (grid, per-step loop, step flags), the one place both kernels' launch logic lives.
* :func:`grid_barrier` -- the ``"persistent"`` schedule's per-step barrier among the programs
  of one batch tile (``@triton.jit``, GPU only in earnest; see its docstring).
* :func:`batch_tile` -- ``@triton.jit``: a program's batch rows, lengths and row offsets.
* :func:`lstm_cell`, :func:`tanh` -- ``@triton.jit`` pointwise math in float32.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRET", "KERNEL_DTYPES", "Launch", "SCHEDULES", "batch_tile", "choose_launch",
           "default_schedule", "dot_mode", "grid_barrier", "lstm_cell", "persistent_grid",
           "run_schedule", "tanh", "tune_configs"]


def _interpreting() -> bool:
    try:  # Triton >= 3.4 reads its knobs; older versions read the variable directly
        from triton import knobs
        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


#: True when this process's ``triton.jit`` functions run under the Triton interpreter (CPU).
INTERPRET: bool = _interpreting()

def _autotune_enabled() -> bool:
    """False when ``CHARLSTM_TRITON_AUTOTUNE=0``: GPU launches then use one fixed configuration
    (the first of :func:`tune_configs`) instead of autotuning every new (B, H) -- for test
    runs, where compiling every configuration for every shape would dominate.  Read per call."""
    return os.environ.get("CHARLSTM_TRITON_AUTOTUNE", "1") != "0"


#: input dtypes the kernels implement (float64 goes to the reference kernels, see ``ops``)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dot_mode(dtype: torch.dtype) -> tuple[bool, str]:
    """``(cast_to_f32, input_precision)`` for the kernels' dots (the forward's ``h @ W_hh^T``,
    the backward's ``dgates @ W_hh``), whose operands are in the input dtype.

    * float32: operands stay float32, ``input_precision="ieee"`` (no TF32), so the kernel
      matches the float32 reference to rounding order.
    * float16: native float16 operands (products are exact in the float32 accumulator).
    * bfloat16: native on a GPU; under the interpreter ``tl.dot`` on bfloat16 operands returns
      garbage (Triton 3.9 + torch 2.13 CPU), so the operands are cast to float32 first, which
      is exact (a bfloat16 value is a float32 value).
    """
    if dtype == torch.float32:
        return False, "ieee"
    if dtype == torch.bfloat16 and INTERPRET:
        return True, "ieee"
    return False, "tf32"   # ignored for 16-bit operands


class Launch(NamedTuple):
    """How one call is launched.

    ``schedule``:

    * ``"sequence"`` -- grid ``(ceil(B / block_b), 1)``, one launch; each program runs every
      time step for its batch rows and all hidden units and never waits for another program.
      The interpreter's default; on a GPU it uses only ``ceil(B / block_b)`` SMs.
    * ``"step"`` -- grid ``(ceil(B / block_b), ceil(H / block_h))``, one launch per time step;
      the kernel boundary is the step barrier (pays one launch per step).
    * ``"persistent"`` -- grid ``(nb, nh)`` with ``nb = ceil(B / block_b)`` and ``nh`` hidden
      programs per batch tile, capped so that all ``nb * nh`` programs are resident at once
      (``nb * nh <= max_programs``, default: the GPU's SM count); one launch, each program owns
      every ``nh``-th hidden tile of its batch tile, and the ``nh`` programs of a batch tile
      meet at :func:`grid_barrier` after every step.  The GPU default.  Under the interpreter
      (programs run one after another, a barrier among several would deadlock) the same grid
      runs one launch per step when ``nh > 1``; with ``nh == 1`` the barrier code itself runs.

    ``block_*``/``num_warps``: ``None`` lets the GPU autotuner pick.  ``max_programs``: cap on
    the persistent grid (tests use it to force ``nh``); ignored by the other schedules.
    ``w_resident``: the forward keeps its ``W_hh`` slice in registers for all steps (needs one
    hidden tile per program and ``block_k >= H``; see :func:`.forward.lstm_fwd_kernel`); the
    backward ignores it.  The backward also raises ``block_h`` to 16 (its ``tl.dot`` has the
    hidden tile as N, which must be >= 16; the forward's N is ``4 * block_h``).
    """

    schedule: str
    block_b: Optional[int] = None
    block_h: Optional[int] = None
    block_k: Optional[int] = None
    num_warps: Optional[int] = None
    max_programs: Optional[int] = None
    w_resident: bool = False

    @property
    def fixed(self) -> bool:
        return self.block_b is not None


def interpreter_blocks(batch: int, hidden: int) -> dict:
    """Block sizes under the interpreter: one tile covering B and H where that stays small.

    The interpreter's cost is per operation, not per element, so the fewest tiles is fastest;
    ``tl.dot`` needs every dim >= 16; 64 caps the tile so larger shapes still loop over tiles.
    """
    bb = min(64, max(16, triton.next_power_of_2(batch)))
    bh = min(64, max(16, triton.next_power_of_2(hidden)))
    # K spans H in the forward and 4H in the backward: one chunk for both where that fits
    bk = min(256, max(16, triton.next_power_of_2(4 * hidden)))
    return dict(block_b=bb, block_h=bh, block_k=bk, num_warps=1)


SCHEDULES = ("sequence", "step", "persistent")


def default_schedule() -> str:
    """The schedule of a bare ``triton``: ``"sequence"`` under the interpreter (fewest
    interpreted operations), ``"persistent"`` on a GPU -- NOT yet measured against the others on
    a GPU; it is the schedule that spreads ``W_hh`` over many SMs without paying a launch per
    step."""
    return "sequence" if INTERPRET else "persistent"


def choose_launch(batch: int, hidden: int, schedule: Optional[str] = None) -> Launch:
    """The launch for a batch/hidden size under ``schedule`` (one of :data:`SCHEDULES`: the
    variant of ``triton:<schedule>``, chosen by :mod:`.ops`); ``None``: :func:`default_schedule`.
    """
    if schedule is None:
        schedule = default_schedule()
    if schedule not in SCHEDULES:
        raise ValueError(f"triton backend: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if INTERPRET:
        return Launch(schedule, **interpreter_blocks(batch, hidden))
    if not _autotune_enabled():
        first = tune_configs(schedule)[0]     # an ordinary (not W_RESIDENT) configuration
        return Launch(schedule, block_b=first.kwargs["BLOCK_B"], block_h=first.kwargs["BLOCK_H"],
                      block_k=first.kwargs["BLOCK_K"], num_warps=first.num_warps)
    return Launch(schedule)


#: (BLOCK_B, BLOCK_H, BLOCK_K, warps) tried by the autotuner of the "sequence"/"step" kernels
_BLOCKS = [(16, 32, 32, 4), (16, 64, 64, 4), (16, 32, 64, 2), (32, 32, 64, 4), (32, 64, 64, 4),
           (64, 64, 32, 8), (64, 64, 64, 8)]
#: ... of the "persistent" kernels: narrower hidden tiles, i.e. more programs per batch tile, so
#: each SM reads a smaller slice of W_hh per step (the point of that schedule at small batch)
_PERSISTENT_BLOCKS = [(16, 16, 64, 4), (16, 16, 128, 4), (16, 32, 64, 4), (32, 16, 64, 4),
                      (32, 32, 64, 4), (64, 32, 64, 8)]
#: the persistent forward only (its gate-interleaved dot allows 8-wide hidden tiles)
_PERSISTENT_FWD_BLOCKS = [(16, 8, 64, 4), (16, 8, 128, 4)]
#: (BLOCK_B, BLOCK_H, warps) of the persistent forward with W_hh register-resident; BLOCK_K is
#: set to next_pow2(H) per shape by :func:`_prune_resident`
_RESIDENT_BLOCKS = [(16, 4, 4), (16, 8, 4), (16, 16, 8)]
#: W_RESIDENT limits, from ptxas register reports of this kernel (Triton 3.6, sm_90a,
#: bfloat16, BLOCK_B = 16; compile facts, not timings): K chunks of 512 with a W_hh slice of up
#: to 8 KiB per warp compiled without spills (BLOCK_H 4/8 at 4 warps, 8/16 at 8 warps); every
#: 1024-wide K chunk spilled (0.5 to 5 KB), even at 8 warps.  So: H <= 512 only.
RESIDENT_MAX_K = 512
RESIDENT_BYTES_PER_WARP = 8 * 1024


def tune_configs(schedule: str = "sequence", direction: str = "forward") -> list:
    """Autotuner configurations (GPU only) over BLOCK_B, BLOCK_H, BLOCK_K and warps, for the
    ``direction`` ("forward"/"backward") kernel under ``schedule``.  The first one is the
    fixed configuration of ``CHARLSTM_TRITON_AUTOTUNE=0``.  Forward configurations also set
    ``W_RESIDENT``; the persistent forward adds 8-wide tiles and register-resident ``W_hh``
    variants (``BLOCK_K = 0`` until :func:`_prune_resident` sets it per shape)."""
    persistent = schedule == "persistent"
    forward = direction == "forward"
    blocks = list(_PERSISTENT_BLOCKS if persistent else _BLOCKS)
    if persistent and forward:
        blocks += _PERSISTENT_FWD_BLOCKS

    def cfg(bb, bh, bk, w, resident=False):
        kw = {"BLOCK_B": bb, "BLOCK_H": bh, "BLOCK_K": bk}
        if forward:
            kw["W_RESIDENT"] = resident
        return triton.Config(kw, num_warps=w, num_stages=2)

    out = [cfg(*b) for b in blocks]
    if persistent and forward:
        out += [cfg(bb, bh, 0, w, True) for bb, bh, w in _RESIDENT_BLOCKS]
    return out


def _prune_resident(configs, named_args, **_):
    """The persistent forward autotuner's ``early_config_prune``: keeps every ordinary
    configuration and each W_RESIDENT one that can run this shape -- every program owns one
    hidden tile inside the co-residency cap, ``next_pow2(H) <= RESIDENT_MAX_K`` and the slice
    fits ``RESIDENT_BYTES_PER_WARP`` -- with its ``BLOCK_K`` set to ``next_pow2(H)``."""
    B, H = int(named_args["B"]), int(named_args["H"])
    w = named_args["w_ptr"]
    cap = _device_programs(w.device)
    hp = max(16, triton.next_power_of_2(H))
    out = []
    for c in configs:
        kw = c.kwargs
        if not kw.get("W_RESIDENT"):
            out.append(c)
            continue
        nh = persistent_grid(B, H, kw["BLOCK_B"], kw["BLOCK_H"], cap)[1]
        slice_bytes = hp * 4 * kw["BLOCK_H"] * w.element_size()
        if (nh * kw["BLOCK_H"] < H or hp > RESIDENT_MAX_K
                or slice_bytes > RESIDENT_BYTES_PER_WARP * c.num_warps):
            continue
        out.append(triton.Config(dict(kw, BLOCK_K=hp), num_warps=c.num_warps,
                                 num_stages=c.num_stages))
    return out


def persistent_grid(batch: int, hidden: int, block_b: int, block_h: int,
                    max_programs: Optional[int]) -> tuple[int, int]:
    """``(nb, nh)`` of the persistent schedule: ``nh`` hidden programs per batch tile, at most
    one per hidden tile and at least one, with ``nb * nh <= max_programs`` where ``nh > 1`` (so
    every program that waits at :func:`grid_barrier` has all its partners resident; with
    ``nh == 1`` nobody waits for anybody and ``nb`` may exceed the cap)."""
    nb = triton.cdiv(batch, block_b)
    tiles = triton.cdiv(hidden, block_h)
    if max_programs is None:
        return nb, tiles
    return nb, max(1, min(tiles, max_programs // nb))


#: the narrowest hidden tile any launch may use (the forward's gate-interleaved dot: 4 x 4 = 16)
MIN_BLOCK_H = 4


def sync_slots(max_programs: Optional[int], hidden: int) -> int:
    """Flags per batch tile: a power of two >= the largest ``nh`` any configuration may use
    (one hidden program per ``MIN_BLOCK_H``-wide tile, at most ``max_programs``)."""
    most = triton.cdiv(hidden, MIN_BLOCK_H)
    if max_programs is not None:
        most = min(max_programs, most)
    return max(2, triton.next_power_of_2(most))


def _device_programs(device: torch.device) -> Optional[int]:
    """Programs that can be resident at once on ``device`` (one per SM); None under the
    interpreter (no limit: the interpreter runs programs one after another)."""
    if INTERPRET or device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def run_schedule(kernel, tuned: dict, launch: Launch, *, T: int, B: int, H: int, args: tuple,
                 flags: dict, first: int, count: int, direction: int, device: torch.device,
                 fixed_extra: Optional[dict] = None) -> None:
    """Launch a forward or backward kernel for the steps ``first, first + direction, ..``
    (``count`` of them) under ``launch``.

    The kernel's signature is ``(*args, sync_ptr, t_first, t_count, T, B, H, **flags,
    GRID_SYNC, SYNC_SLOTS, XCACHE, BLOCK_B, BLOCK_H, BLOCK_K)``; this function supplies
    everything from ``sync_ptr`` on (the zeroed step flags of :func:`grid_barrier`, the step
    range, the persistent-schedule constants and the blocks).  ``tuned`` maps a schedule to
    its autotuned wrapper (:func:`tuned_kernels`, GPU only).  Forward: ``first = 0,
    direction = +1``; backward: ``first = T - 1, direction = -1`` (the kernel counts down).
    ``fixed_extra``: more constexprs for a fixed launch (the forward's ``W_RESIDENT``).
    """
    cap = launch.max_programs if launch.max_programs is not None else _device_programs(device)
    if launch.fixed:
        if launch.block_h < MIN_BLOCK_H or launch.block_b < 16:
            raise ValueError(f"triton backend: block_h must be >= {MIN_BLOCK_H} and block_b >= 16, "
                             f"got block_h={launch.block_h}, block_b={launch.block_b}")
        kern, meta = kernel, dict(BLOCK_B=launch.block_b, BLOCK_H=launch.block_h,
                                  BLOCK_K=launch.block_k, num_warps=launch.num_warps)
        meta.update(fixed_extra or {})
        if meta.get("W_RESIDENT"):
            _check_resident(launch, B, H, cap)
    else:
        kern, meta = tuned[launch.schedule], {}
    slots = sync_slots(cap, H)
    sched = launch.schedule
    per_step = sched == "step"
    grid_sync = False
    if sched == "persistent":
        nh = persistent_grid(B, H, launch.block_b or 16, launch.block_h or 16, cap)[1]
        # interpreter: a barrier among several programs would deadlock (they run one by one)
        per_step = INTERPRET and nh > 1
        grid_sync = not per_step

    def grid(m):
        if sched == "sequence":
            return (triton.cdiv(B, m["BLOCK_B"]), 1)
        if sched == "step":
            return (triton.cdiv(B, m["BLOCK_B"]), triton.cdiv(H, m["BLOCK_H"]))
        return persistent_grid(B, H, m["BLOCK_B"], m["BLOCK_H"], cap)

    # the step flags, one row of `slots` per possible batch tile (BLOCK_B >= 16); only the
    # persistent schedule reads them (the autotuner zeroes them again before each timing run)
    sync = torch.zeros(triton.cdiv(B, 16) * slots if sched == "persistent" else 1,
                       device=device, dtype=torch.int32)
    sync_flags = dict(GRID_SYNC=grid_sync, SYNC_SLOTS=slots, XCACHE=".cg" if grid_sync else "")
    if per_step:
        for s in range(count):
            kern[grid](*args, sync, first + direction * s, 1, T, B, H, **flags, **sync_flags,
                       **meta)
    else:
        kern[grid](*args, sync, first, count, T, B, H, **flags, **sync_flags, **meta)


def _check_resident(launch: Launch, B: int, H: int, cap: Optional[int]) -> None:
    """A fixed W_RESIDENT launch must give every program exactly one hidden tile and cover H
    with one K chunk; a clear error otherwise (the kernel itself cannot check)."""
    if launch.schedule == "sequence":
        nh = 1
    elif launch.schedule == "step":
        nh = triton.cdiv(H, launch.block_h)
    else:
        nh = persistent_grid(B, H, launch.block_b, launch.block_h, cap)[1]
    if launch.block_k < H or nh * launch.block_h < H:
        raise ValueError(
            f"triton backend: w_resident needs block_k >= H and one hidden tile per program; "
            f"got H={H}, block_k={launch.block_k}, {nh} program(s) x block_h={launch.block_h} "
            f"per batch tile ({launch.schedule} schedule)")


def tuned_kernels(kernel, direction: str) -> dict:
    """One autotuned wrapper of the ``direction`` ("forward"/"backward") ``kernel`` per schedule
    (separate caches: the best blocks of a one-launch schedule are not those of a per-step one),
    keyed on B and H; the persistent ones zero their step flags before every timing run, and
    the persistent forward prunes its W_RESIDENT configurations per shape.  Empty under the
    interpreter."""
    if INTERPRET:
        return {}
    out = {}
    for sched in SCHEDULES:
        extra = {}
        if sched == "persistent":
            extra["reset_to_zero"] = ["sync_ptr"]
            if direction == "forward":
                extra["prune_configs_by"] = {"early_config_prune": _prune_resident}
        out[sched] = triton.autotune(configs=tune_configs(sched, direction), key=["B", "H"],
                                     **extra)(kernel)
    return out


@triton.jit
def grid_barrier(flags_ptr, slot, n_slots, value, SYNC_SLOTS: tl.constexpr):
    """Barrier of the ``"persistent"`` schedule among the ``n_slots`` programs of one batch tile.

    ``flags_ptr`` points at the batch tile's ``SYNC_SLOTS`` int32 step flags (zero at launch);
    the caller is program ``slot`` and has just finished step number ``value`` (1, 2, ..).
    Protocol (a fresh value per step, so no flag is ever reset inside a launch):

    1. ``tl.debug_barrier()``: every thread of the program has issued its stores of this step;
    2. ``atomic_xchg(flag[slot], value)`` with release semantics at GPU scope publishes them
       (exchange, not add: correct even if every thread executed it);
    3. spin on an acquire read of all ``n_slots`` flags until their minimum reaches ``value``;
    4. ``tl.debug_barrier()``: no thread reads the next step's inputs before the acquire.

    Needs every program of the batch tile resident (see :func:`persistent_grid`).  Readers of
    other programs' data load it with ``cache_modifier=".cg"`` (L2, not a possibly stale L1).
    Under the interpreter it runs only with ``n_slots == 1``, where it never waits.
    """
    tl.debug_barrier()
    tl.atomic_xchg(flags_ptr + slot, value, sem="release", scope="gpu")
    rs = tl.arange(0, SYNC_SLOTS)
    smask = rs < n_slots
    seen = tl.min(tl.where(smask, tl.atomic_add(flags_ptr + rs, 0, mask=smask, sem="acquire",
                                                scope="gpu"), value), axis=0)
    while seen < value:
        seen = tl.min(tl.where(smask, tl.atomic_add(flags_ptr + rs, 0, mask=smask, sem="acquire",
                                                    scope="gpu"), value), axis=0)
    tl.debug_barrier()


@triton.jit
def batch_tile(len_ptr, T, B, H, HAS_LENGTHS: tl.constexpr, BLOCK_B: tl.constexpr):
    """The batch rows of program ``(pid_b, .)`` -> ``(bmask, L, row_g, row_h)``: which of its
    ``BLOCK_B`` rows exist, their lengths (``T`` without ``HAS_LENGTHS``; 0 for rows past B),
    and their row offsets ``[BLOCK_B, 1]`` into ``[.., B, 4H]`` and ``[.., B, H]`` tensors.
    Shared by the forward and backward kernels."""
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = rb < B
    if HAS_LENGTHS:
        L = tl.load(len_ptr + rb, mask=bmask, other=0)
    else:
        L = tl.where(bmask, T, 0)
    return bmask, L, rb[:, None] * (4 * H), rb[:, None] * H


@triton.jit
def lstm_cell(z_i, z_f, z_g, z_o, c_prev):
    """The pointwise LSTM cell in float32 -> ``(i, f, g, o, c, m)`` with ``m = o * tanh(c)``.

    One helper, no nested calls: under the interpreter each ``@triton.jit`` call costs
    milliseconds, so the forward makes one call per tile and step.  ``tanh(x)`` is written
    ``2 * sigmoid(2x) - 1`` (saturates to +-1 without overflow; absolute error ~1e-7).
    """
    i = 1.0 / (1.0 + tl.exp(-z_i))
    f = 1.0 / (1.0 + tl.exp(-z_f))
    o = 1.0 / (1.0 + tl.exp(-z_o))
    g = 2.0 / (1.0 + tl.exp(-2.0 * z_g)) - 1.0
    c = f * c_prev + i * g
    return i, f, g, o, c, o * (2.0 / (1.0 + tl.exp(-2.0 * c)) - 1.0)


@triton.jit
def tanh(x):
    """tanh in float32, the same formula as in :func:`lstm_cell`."""
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0
