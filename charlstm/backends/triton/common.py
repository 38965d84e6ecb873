"""What the Triton forward and backward kernels share: mode detection, dtypes, launch choices.

* :data:`INTERPRET` -- whether ``triton.jit`` in this process builds interpreter functions
  (``TRITON_INTERPRET=1`` was set before the kernels were defined).  Decided once, at import,
  exactly as Triton decides it.
* :func:`dot_mode` -- how a kernel feeds ``tl.dot`` for an input dtype (see its docstring).
* :class:`Launch` and :func:`choose_launch` -- the schedule (``"sequence"``, ``"step"`` or
  ``"persistent"``, see :class:`Launch`) and the block sizes.
* :func:`run_schedule` -- launches a forward or backward kernel under a :class:`Launch`
  (grid, per-step loop, arrival counters, cooperative launch with its fallback, device
  guard), the one place both kernels' launch logic lives.
* :func:`grid_barrier` -- the ``"persistent"`` schedule's per-step barrier among the programs
  of one batch tile (``@triton.jit``, GPU only in earnest; see its docstring).
* :func:`batch_tile` -- ``@triton.jit``: a program's batch rows and lengths.
* :func:`dot_slots`, :func:`cell_launch` -- what the cell (the kernels' ``CELL`` constexpr)
  changes in a launch: the forward dot's columns per hidden unit, the narrowest hidden tile.
* :func:`lstm_cell`, :func:`gru_cell`, :func:`rnn_cell` and their ``*_back`` --
  ``@triton.jit`` pointwise steps of each cell in float32, forward and backward.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from ..contract import cell_of

__all__ = ["COUNTER_STRIDE", "INTERPRET", "KERNEL_DTYPES", "Launch", "SCHEDULES",
           "barrier_counters", "batch_tile", "cell_launch", "choose_launch", "default_schedule",
           "dot_mode", "dot_slots", "grid_barrier", "gru_cell", "gru_cell_back", "last_schedules",
           "lstm_cell", "lstm_cell_back", "persistent_grid", "rnn_cell", "rnn_cell_back",
           "run_schedule", "tile_strides", "tune_configs"]


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
      meet at :func:`grid_barrier` after every step.  Where they wait for each other
      (``nh > 1``) the grid is launched cooperatively, so the driver guarantees them resident
      together or refuses, and a refusal runs ``"step"`` instead (:func:`run_schedule`).  The
      GPU default.  Under the interpreter (programs run one after another, a barrier among
      several would deadlock) the same grid runs one launch per step when ``nh > 1``; with
      ``nh == 1`` the barrier code itself runs.

    ``block_*``/``num_warps``: ``None`` lets the GPU autotuner pick.  ``max_programs``: cap on
    the persistent grid (tests use it to force ``nh``); ignored by the other schedules.
    ``w_resident``: the forward keeps its ``W_hh`` slice in registers for all steps (needs one
    hidden tile per program and ``block_k >= H``; see :func:`.forward.lstm_fwd_kernel`); the
    backward ignores it.  Both kernels raise ``block_h`` to their cell's narrowest tile
    (:func:`cell_launch`: ``tl.dot`` needs N >= 16, and N is ``dot_slots(cell) * block_h`` in
    the forward, ``block_h`` in the backward).
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
    # K spans H in the forward and G*H (up to 4H) in the backward: one chunk for both where
    # that fits
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


def _prune_persistent(configs, named_args, **kwargs):
    """The persistent autotuners' ``early_config_prune`` (both directions), per shape and cell
    (the kernels' ``CELL`` constexpr, in ``kwargs``):

    * the cell: configurations whose dot would be narrower than 16 (``dot_slots(cell) *
      BLOCK_H``: the RNN's 8-wide forward tiles) are dropped;
    * co-residency: where some configuration's whole grid fits the device (one program per
      SM), only those are kept, so that every grid the autotuner launches can be launched
      cooperatively (:func:`run_schedule`); a configuration left out has ``nh == 1`` with more
      batch tiles than SMs (see :func:`persistent_grid`).  Where none fits, all have
      ``nh == 1``, nobody waits, and all are kept (launched ordinarily).
    * W_RESIDENT (forward): each one is kept only where it can run this shape -- every program
      owns one hidden tile, ``next_pow2(H) <= RESIDENT_MAX_K`` and the slice (``next_pow2(H) x
      dot_slots(cell) * BLOCK_H`` elements) fits ``RESIDENT_BYTES_PER_WARP`` -- with its
      ``BLOCK_K`` set to ``next_pow2(H)``.
    """
    B, H = int(named_args["B"]), int(named_args["H"])
    w = named_args["w_ptr"]
    slots = dot_slots(kwargs.get("CELL", "lstm"))
    cap = _device_programs(w.device)
    hp = max(16, triton.next_power_of_2(H))
    configs = [c for c in configs if slots * c.kwargs["BLOCK_H"] >= 16]
    out = []
    for c in configs:
        kw = c.kwargs
        nb, nh = persistent_grid(B, H, kw["BLOCK_B"], kw["BLOCK_H"], cap)
        if cap is not None and nb * nh > cap and _grid_fits(B, cap, configs):
            continue
        if not kw.get("W_RESIDENT"):
            out.append(c)
            continue
        slice_bytes = hp * slots * kw["BLOCK_H"] * w.element_size()
        if (nh * kw["BLOCK_H"] < H or hp > RESIDENT_MAX_K
                or slice_bytes > RESIDENT_BYTES_PER_WARP * c.num_warps):
            continue
        out.append(triton.Config(dict(kw, BLOCK_K=hp), num_warps=c.num_warps,
                                 num_stages=c.num_stages))
    return out


def _grid_fits(batch: int, cap: Optional[int], configs) -> bool:
    """Whether some configuration's persistent grid fits ``cap`` programs: the one with the
    largest ``BLOCK_B`` has the fewest batch tiles, and a grid with ``nh > 1`` always fits."""
    return cap is None or triton.cdiv(batch, max(c.kwargs["BLOCK_B"] for c in configs)) <= cap


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


def dot_slots(cell: str) -> int:
    """Columns of the forward's gate-interleaved dot per hidden unit (its N is ``dot_slots *
    BLOCK_H``; the kernels derive the same number from their ``CELL`` constexpr): 4 for the
    LSTM (i, f, g, o) and the GRU (r, z, n and one slot masked to zero, so that N stays a power
    of two and the LSTM's reshape/split serves it), 1 for the RNN."""
    return 1 if cell_of(cell).gates == 1 else 4


def cell_launch(launch: Launch, cell: str, direction: str) -> Launch:
    """``launch`` with a fixed ``block_h`` raised where the ``direction`` kernel's dot for
    ``cell`` would be narrower than ``tl.dot``'s minimum N of 16: the forward's N is
    ``dot_slots(cell) * block_h`` (LSTM/GRU tiles may be 4 wide, the RNN's 16), the
    backward's ``block_h``.  Autotuned launches are pruned instead (:func:`_prune_persistent`)."""
    slots = dot_slots(cell) if direction == "forward" else 1
    if launch.fixed and slots * launch.block_h < 16:
        return launch._replace(block_h=16 // slots)
    return launch


#: the narrowest hidden tile any launch may use (the LSTM/GRU forward's gate-interleaved dot:
#: 4 x 4 = 16; :func:`cell_launch` raises it per cell and direction)
MIN_BLOCK_H = 4
#: the shortest batch tile any launch may use (``tl.dot``'s minimum M)
MIN_BLOCK_B = 16
#: int64 elements between two batch tiles' arrival counters: 128 bytes, one cache line each, so
#: the programs of one batch tile never poll a line that another tile's programs write
COUNTER_STRIDE = tl.constexpr(16)  # (a constexpr: the kernels read it)


def barrier_counters(batch: int, device: torch.device) -> torch.Tensor:
    """Zeroed int64 arrival counters of :func:`grid_barrier`, one per batch tile any
    configuration can have (``BLOCK_B >= MIN_BLOCK_B``), ``COUNTER_STRIDE`` apart."""
    return torch.zeros(triton.cdiv(batch, MIN_BLOCK_B) * COUNTER_STRIDE.value, device=device,
                       dtype=torch.int64)


def _device_programs(device: torch.device) -> Optional[int]:
    """Programs that can be resident at once on ``device`` (one per SM); None under the
    interpreter (no limit: the interpreter runs programs one after another)."""
    if INTERPRET or device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def _on_device(device: torch.device):
    """``torch.cuda.device(device)`` for a CUDA device: Triton launches on the current device's
    current stream, which must be the tensors' (as the CUDA backend's ops guard it)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


#: persistent launches whose cooperative grid the driver refused, keyed by device, kernel,
#: shape and launch: they run the "step" schedule without trying (and warning) again
_REFUSED: set = set()


def _is_refusal(err: RuntimeError) -> bool:
    """Whether a launch error is the driver refusing a cooperative grid (not a fault):
    ``CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE`` (the grid cannot be resident at once, e.g.
    an MPS client limited to fewer SMs) or ``CUDA_ERROR_NOT_SUPPORTED`` (no cooperative
    launch on this device or setup), as Triton's launcher words them."""
    text = str(err)
    return "cooperative launch" in text or "operation not supported" in text


_last = threading.local()


def _ran(direction: int, schedule: str) -> str:
    _last.schedules = dict(last_schedules(), **{"forward" if direction > 0 else "backward":
                                                schedule})
    return schedule


def last_schedules() -> dict:
    """``{"forward": schedule, "backward": schedule}``: what :func:`run_schedule` last ran in
    this thread for each direction -- ``"step"`` where a persistent launch's cooperative grid
    was refused (empty before the first launch)."""
    return dict(getattr(_last, "schedules", {}))


def run_schedule(kernel, tuned: dict, launch: Launch, *, T: int, B: int, H: int, args: tuple,
                 flags: dict, first: int, count: int, direction: int, device: torch.device,
                 fixed_extra: Optional[dict] = None) -> str:
    """Launch a forward or backward kernel for the steps ``first, first + direction, ..``
    (``count`` of them) under ``launch``; returns the schedule that ran.

    The kernel's signature is ``(*args, sync_ptr, t_first, t_count, T, B, H, **flags,
    GRID_SYNC, XCACHE, BLOCK_B, BLOCK_H, BLOCK_K)``; this function supplies everything from
    ``sync_ptr`` on (the zeroed arrival counters of :func:`grid_barrier`, the step range, the
    persistent-schedule constants and the blocks).  ``tuned`` maps a schedule to its autotuned
    wrapper (:func:`tuned_kernels`, GPU only).  Forward: ``first = 0, direction = +1``;
    backward: ``first = T - 1, direction = -1`` (the kernel counts down).  ``fixed_extra``:
    more constexprs for a fixed launch (the forward's ``W_RESIDENT``).

    Launches run under ``torch.cuda.device(device)``, on that device's current stream.  A
    persistent grid whose programs wait for each other is launched *cooperatively*
    (``launch_cooperative_grid=True``: ``CU_LAUNCH_ATTRIBUTE_COOPERATIVE``), so the driver
    either makes every program resident at once or refuses the launch; then this warns once
    and runs the ``"step"`` schedule instead (returning ``"step"``), never a grid that could
    hang.
    """
    cap = launch.max_programs if launch.max_programs is not None else _device_programs(device)
    if launch.fixed:
        if launch.block_h < MIN_BLOCK_H or launch.block_b < MIN_BLOCK_B:
            raise ValueError(f"triton backend: block_h must be >= {MIN_BLOCK_H} and block_b >= "
                             f"{MIN_BLOCK_B}, got block_h={launch.block_h}, "
                             f"block_b={launch.block_b}")
        kern, meta = kernel, dict(BLOCK_B=launch.block_b, BLOCK_H=launch.block_h,
                                  BLOCK_K=launch.block_k, num_warps=launch.num_warps)
        meta.update(fixed_extra or {})
        if meta.get("W_RESIDENT"):
            _check_resident(launch, B, H, cap)
    else:
        kern, meta = tuned[launch.schedule], {}
    sched = launch.schedule
    per_step = sched == "step"
    grid_sync = cooperative = False
    if sched == "persistent":
        if launch.fixed:
            nh = persistent_grid(B, H, launch.block_b, launch.block_h, cap)[1]
            # interpreter: a barrier among several programs would deadlock (they run one by one)
            per_step = INTERPRET and nh > 1
            cooperative = nh > 1 and not per_step
        else:   # GPU autotuner: every configuration it launches fits (_prune_persistent)
            cooperative = _grid_fits(B, cap, kern.configs)
        grid_sync = not per_step

    def grid(m):
        if sched == "sequence":
            return (triton.cdiv(B, m["BLOCK_B"]), 1)
        if sched == "step":
            return (triton.cdiv(B, m["BLOCK_B"]), triton.cdiv(H, m["BLOCK_H"]))
        return persistent_grid(B, H, m["BLOCK_B"], m["BLOCK_H"], cap)

    # only the persistent schedule reads the counters (its autotuner zeroes them again before
    # each timing run); the others get a one-element placeholder
    sync = barrier_counters(B if sched == "persistent" else 1, device)
    consts = dict(GRID_SYNC=grid_sync, XCACHE=".cg" if grid_sync else "", **flags, **meta)
    # everything that specialises the kernel (the cell, dtypes' flags) is part of the key
    refusal_key = (str(device), getattr(kernel, "__name__", repr(kernel)), B, H, launch,
                   tuple(sorted(flags.items())))
    with _on_device(device):
        if per_step:
            for s in range(count):
                kern[grid](*args, sync, first + direction * s, 1, T, B, H, **consts)
            return _ran(direction, sched)
        if not cooperative:
            kern[grid](*args, sync, first, count, T, B, H, **consts)
            return _ran(direction, sched)
        if refusal_key not in _REFUSED:
            try:
                kern[grid](*args, sync, first, count, T, B, H, **consts,
                           launch_cooperative_grid=True)
                return _ran(direction, sched)
            except RuntimeError as err:
                if not _is_refusal(err):
                    raise
                _REFUSED.add(refusal_key)
                warnings.warn(
                    f"charlstm triton backend: the driver refused the cooperative launch of the "
                    f"persistent {refusal_key[1]} grid (B={B}, H={H}) on {device}: {err}; running "
                    f"the 'step' schedule instead (one launch per time step)",
                    RuntimeWarning, stacklevel=3)
    return run_schedule(kernel, tuned, launch._replace(schedule="step"), T=T, B=B, H=H,
                        args=args, flags=flags, first=first, count=count, direction=direction,
                        device=device, fixed_extra=fixed_extra)


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
    keyed on B, H and the cell (Triton adds the tensors' dtypes); the persistent ones zero their
    arrival counters before every timing run and prune their configurations per shape and cell
    (:func:`_prune_persistent`).  Empty under the
    interpreter."""
    if INTERPRET:
        return {}
    out = {}
    for sched in SCHEDULES:
        extra = {}
        if sched == "persistent":
            extra["reset_to_zero"] = ["sync_ptr"]
            extra["prune_configs_by"] = {"early_config_prune": _prune_persistent}
        # the cell is in the key: a configuration tuned for one cell may not fit another
        out[sched] = triton.autotune(configs=tune_configs(sched, direction),
                                     key=["B", "H", "CELL"],
                                     **extra)(kernel)
    return out


#: nanoseconds a program sleeps between two polls of its arrival counter (``nanosleep``: the
#: hardware sleeps between 0 and twice that).  A guess, not measured: short against a step
#: (microseconds), long enough that up to one program per SM polling one line leaves L2 alone.
POLL_SLEEP_NS = 64
#: the poll loop's sleep as inline PTX (Triton has no sleep of its own), used only on a GPU:
#: the interpreter has no inline assembly, and its programs run one after another, so a poll
#: never has to wait there
_POLL_SLEEP_ASM = tl.constexpr(f"nanosleep.u32 {POLL_SLEEP_NS};\nmov.b32 $0, 0;")
_SLEEP_BETWEEN_POLLS = tl.constexpr(not INTERPRET)


@triton.jit
def _sleep_between_polls():
    """``nanosleep`` for ``POLL_SLEEP_NS`` on a GPU; nothing when interpreting."""
    if _SLEEP_BETWEEN_POLLS:
        tl.inline_asm_elementwise(_POLL_SLEEP_ASM, "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def grid_barrier(counter_ptr, n_programs, step):
    """Barrier of the ``"persistent"`` schedule among the ``n_programs`` programs of one batch
    tile, after each one has finished step number ``step`` (1, 2, .. within this launch).

    ``counter_ptr`` points at the batch tile's int64 *arrival counter* (zero at launch).  Each
    program adds 1 to it once per step, so after step ``s`` it reaches ``n_programs * s``: it
    only grows, and nothing is ever reset inside a launch.  Protocol:

    1. ``tl.debug_barrier()`` (``bar.sync``): every thread of the program has issued this
       step's stores;
    2. one ``atomic_add(counter, 1)`` with acq_rel semantics at GPU scope (Triton issues a
       scalar atomic from one thread): its release half publishes those stores; the program
       that arrives last reads ``n_programs * step`` back and never polls;
    3. the others poll: one acquire load of the counter per round (Triton lowers the scalar
       ``atomic_add(counter, 0, sem="acquire")`` to one ``ld.acquire.gpu`` from one thread and
       shares the value through shared memory), with a ``nanosleep`` between rounds;
    4. ``tl.debug_barrier()``: no thread reads the next step's inputs before the acquire.

    Visibility of the other programs' stores to every thread of this one comes from that
    release/acquire pair at GPU scope plus the block barriers around it (causality order in
    the PTX memory model); the ``.cg`` hint on the readers' loads is not what guarantees it
    (pipelined loads become ``cp.async``, which ignores it).  Needs every program of the batch
    tile resident at once: :func:`run_schedule` launches such grids cooperatively.  Under the
    interpreter it runs only with ``n_programs == 1``, where step 2 already returns the target.
    """
    tl.debug_barrier()
    target = n_programs.to(tl.int64) * step
    seen = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu") + 1
    while seen < target:
        _sleep_between_polls()
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def batch_tile(len_ptr, T, B, HAS_LENGTHS: tl.constexpr, BLOCK_B: tl.constexpr):
    """The batch rows of program ``(pid_b, .)`` -> ``(row0, bmask, L, rows)``: its first row
    ``row0`` as an int64 scalar, which of its ``BLOCK_B`` rows exist, their lengths (``T``
    without ``HAS_LENGTHS``; 0 for rows past B), and their indices ``[BLOCK_B, 1]`` *inside the
    tile* (the kernels multiply them by the row length of each tensor: ``G*H``, ``S*H``, ``H``).

    Offsets: ``B * H`` may exceed 2^31, so the kernels move each base pointer to row ``row0``
    and to its time step with 64-bit scalars (``row0 * G*H``, ``t * B * H``) and keep only
    offsets inside one tile, below ``BLOCK_B * 4H``, in 32 bits (fewer registers than 64-bit
    offset tensors).  Shared by the forward and backward kernels."""
    rl = tl.arange(0, BLOCK_B)
    rb = tl.program_id(0) * BLOCK_B + rl
    bmask = rb < B
    if HAS_LENGTHS:
        L = tl.load(len_ptr + rb, mask=bmask, other=0)
    else:
        L = tl.where(bmask, T, 0)
    row0 = tl.program_id(0).to(tl.int64) * BLOCK_B
    return row0, bmask, L, rl[:, None]


@triton.jit
def tile_strides(rows, B, H, NG: tl.constexpr, NS: tl.constexpr):
    """The strides both kernels use, from the tile's row indices ``rows`` (:func:`batch_tile`)
    and the cell's gate blocks ``NG`` and saved blocks ``NS``: ``(row_g, row_s, row_h)``, the
    32-bit row offsets inside the tile of ``[.., B, G*H]``, ``[.., B, S*H]`` and ``[.., B, H]``
    tensors, and ``(BH, BG, BS)``, the 64-bit time (or parity) strides of the same tensors."""
    BH = tl.cast(B, tl.int64) * H
    return rows * (NG * H), rows * (NS * H), rows * H, BH, NG * BH, NS * BH


# ----------------------------------------------------------------------------- the cells
# One @triton.jit helper per cell and direction, called once per tile and step (under the
# interpreter each call costs milliseconds, so none of them calls another).  Float32 in and
# out.  tanh(x) is written 2 * sigmoid(2x) - 1 (saturates to +-1 without overflow; absolute
# error ~1e-7).
@triton.jit
def lstm_cell(z_i, z_f, z_g, z_o, c_prev):
    """The LSTM step -> ``(i, f, g, o, c, m)`` with ``m = o * tanh(c)``, from the gate
    pre-activations ``z_*`` (``x + a``)."""
    i = 1.0 / (1.0 + tl.exp(-z_i))
    f = 1.0 / (1.0 + tl.exp(-z_f))
    o = 1.0 / (1.0 + tl.exp(-z_o))
    g = 2.0 / (1.0 + tl.exp(-2.0 * z_g)) - 1.0
    c = f * c_prev + i * g
    return i, f, g, o, c, o * (2.0 / (1.0 + tl.exp(-2.0 * c)) - 1.0)


@triton.jit
def gru_cell(z_r, z_z, x_n, a_n, b_hn, h_prev):
    """The GRU step -> ``(r, z, n, hn, h)``: ``r, z = sigmoid(z_r), sigmoid(z_z)`` (``z_* = x_*
    + a_*``), ``hn = a_n + b_hn``, ``n = tanh(x_n + r * hn)``, ``h = (1 - z) * n + z *
    h_prev`` (torch's convention: the reset gate scales the hidden side of ``n``)."""
    r = 1.0 / (1.0 + tl.exp(-z_r))
    z = 1.0 / (1.0 + tl.exp(-z_z))
    hn = a_n + b_hn
    n = 2.0 / (1.0 + tl.exp(-2.0 * (x_n + r * hn))) - 1.0
    return r, z, n, hn, (1.0 - z) * n + z * h_prev


@triton.jit
def rnn_cell(z, RELU: tl.constexpr):
    """The vanilla RNN step: ``relu(z)`` or ``tanh(z)``."""
    if RELU:
        return tl.maximum(z, 0.0)
    return 2.0 / (1.0 + tl.exp(-2.0 * z)) - 1.0


@triton.jit
def lstm_cell_back(dh, dc_next, i, f, g, o, c_t, c_prev):
    """The LSTM step backward -> ``(dz_i, dz_f, dz_g, dz_o, dc)``, ``dc`` being the gradient
    of ``c[t]`` (``dc * f`` is what flows on to ``c[t-1]``)."""
    tc = 2.0 / (1.0 + tl.exp(-2.0 * c_t)) - 1.0
    dc = dc_next + dh * o * (1.0 - tc * tc)
    return (dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g),
            dh * tc * o * (1.0 - o), dc)


@triton.jit
def gru_cell_back(dh, r, z, n, hn, h_prev):
    """The GRU step backward -> ``(dr, dz, dn, dn * r, dh * z)``: the gradients of the three
    gate pre-activations (``d xproj``), the ``n`` block of ``dhid`` (the gradient of ``a_n``,
    which the reset gate scales) and the part of ``dh[t-1]`` that bypasses ``W_hh``."""
    dn = dh * (1.0 - z) * (1.0 - n * n)
    dz = dh * (h_prev - n) * z * (1.0 - z)
    dr = dn * hn * r * (1.0 - r)
    return dr, dz, dn, dn * r, dh * z


@triton.jit
def rnn_cell_back(dh, h, RELU: tl.constexpr):
    """The vanilla RNN step backward from the saved activated ``h``: ``dh * act'``."""
    if RELU:
        return tl.where(h > 0.0, dh, 0.0)
    return dh * (1.0 - h * h)
