"""Backend registry: which implementation runs an LSTM forward, and why.

Names
-----
A kernel path is named ``backend:variant``.  The concrete names, in this order::

    reference, torch, triton:persistent, triton:sequence, triton:step,
    cuda:persistent_tc, cuda:persistent, cuda:stepwise

``reference``  plain tensor ops with a hand-written backward: the specification.
``torch``      torch's own ``nn.LSTM`` forward (cuDNN on a GPU); it runs the whole layer.
``triton:*``   fused Triton kernels for the recurrent core, one per schedule (``docs/triton.md``).
``cuda:*``     CUDA C++ kernels for the recurrent core, one per path (``docs/cuda.md``).

Selectors: ``auto`` (charlstm chooses, see :func:`resolve`), and a bare ``triton`` / ``cuda``
(that backend's own choice among its variants).  Names are case-insensitive.  They are accepted
by ``charlstm.LSTM/GRU/RNN(backend=...)``, :func:`charlstm.convert`, :func:`use_backend`, the
``CHARLSTM_BACKEND`` environment variable and the CLI's ``--backend``.

The kernel backends (everything but ``torch``) implement only the recurrent core of one layer and
direction (:mod:`charlstm.backends.contract`); the layer does the rest.  Each kernel backend
module exposes ``VARIANTS`` (this registry's tuple), ``variant_reason(variant, device, dtype)``,
``own_choice(device, dtype, disabled)`` (backends with variants) and ``core``; the variant is
passed to its custom ops as a ``str`` argument (``""``: the backend's own choice).

Which name runs, strongest first: the innermost :func:`use_backend` context, then
``CHARLSTM_BACKEND``, then the module's ``backend=`` argument.  ``CHARLSTM_DISABLED_VARIANTS``
(space or comma separated concrete names) makes variants unavailable, with that reason, and
keeps every backend's own choice (and ``auto``) away from them; ``scripts/gpu_check``'s canary
sets it for paths that failed or hung.

How far each backend has been verified is written once, in the registry (:data:`STATUS`), and
shown by ``charlstm info``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from .._override import OverrideStack

ENV_VAR = "CHARLSTM_BACKEND"
DISABLED_ENV = "CHARLSTM_DISABLED_VARIANTS"

_ALL_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_HALF_AND_SINGLE = (torch.float32, torch.float16, torch.bfloat16)


class BackendUnavailable(RuntimeError):
    """Raised when a backend is asked for but cannot run here; the message says why."""


@dataclass(frozen=True)
class Backend:
    name: str
    #: module path of the kernel backend, or None for the whole-layer ``torch`` backend
    module: Optional[str]
    #: True when the backend runs the recurrence itself (needs the core contract)
    is_core: bool
    #: variant names, in the backend's default order (empty: the backend has no variants)
    variants: tuple
    #: device types its kernels can run on at all (whether they can run *here* is
    #: :func:`unavailable_reason`'s answer)
    device_types: tuple
    #: input dtypes it accepts
    dtypes: tuple
    #: how far it has been verified -- the one place this is written (shown by ``charlstm info``)
    status: str
    #: the cells (:data:`charlstm.backends.contract.CELLS`) its kernels implement
    cells: tuple = ("lstm", "gru", "rnn_tanh", "rnn_relu")


_REGISTRY = {
    "reference": Backend("reference", "charlstm.backends.reference", True, (), ("cpu", "cuda"),
                         _ALL_DTYPES,
                         "complete: plain tensor ops, hand-written backward (the specification)"),
    "torch": Backend("torch", None, False, (), ("cpu", "cuda"), _ALL_DTYPES,
                     "complete: torch.nn.LSTM/GRU/RNN (cuDNN on CUDA devices)"),
    "triton": Backend("triton", "charlstm.backends.triton", True,
                      ("persistent", "sequence", "step"), ("cuda", "cpu"), _ALL_DTYPES,
                      "correct under the Triton interpreter (CPU); compiles for sm_90 "
                      "(Triton 3.6, 3.9); untested on GPU"),
    "cuda": Backend("cuda", "charlstm.backends.cuda", True,
                    ("persistent_tc", "persistent", "stepwise"), ("cuda",), _HALF_AND_SINGLE,
                    "compiled (sm_80, sm_90, warnings as errors, no spills); device code checked "
                    "in a CPU host emulator; untested on GPU"),
}

#: the backend families, in registry order
BACKENDS = tuple(_REGISTRY)
#: each backend's verification status (what ``charlstm info`` shows)
STATUS = {name: b.status for name, b in _REGISTRY.items()}
#: the cells each backend's kernels implement
CELLS_BY_BACKEND = {name: b.cells for name, b in _REGISTRY.items()}
#: every concrete name, in order
NAMES = tuple(n if not b.variants else f"{n}:{v}" for n, b in _REGISTRY.items()
              for v in (b.variants or (None,)))
#: the backends with variants, whose bare name means "the backend's own choice"
SELECTORS = tuple(n for n, b in _REGISTRY.items() if b.variants)
#: every accepted name: ``auto``, then each backend followed by its variants
CHOICES = ("auto",) + tuple(x for n, b in _REGISTRY.items()
                            for x in (n,) + tuple(f"{n}:{v}" for v in b.variants))


@dataclass(frozen=True)
class VariantInfo:
    """One concrete kernel path and whether it can run for the asked device/dtype."""

    name: str                  # "triton:step"
    backend: str               # "triton"
    variant: Optional[str]     # "step"; None for reference and torch
    is_core: bool
    available: bool
    reason: Optional[str]      # None when available, else one sentence saying why not
    status: str                # the backend's verification status
    device_types: tuple        # device types its kernels can run on at all
    dtypes: tuple              # input dtypes it accepts
    cells: tuple               # cells its kernels implement


_override = OverrideStack()


# ----------------------------------------------------------------------------- names
def parse_name(name: str) -> tuple:
    """``"triton:step"`` -> ``("triton", "step")``; ``"cuda"`` -> ``("cuda", None)``;
    ``"auto"`` -> ``("auto", None)``.  Case-insensitive; anything else raises ``ValueError``
    listing the choices."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key == "auto":
        return "auto", None
    backend, sep, variant = (key or "").partition(":")
    b = _REGISTRY.get(backend)
    if b is None or (sep and variant not in b.variants):
        raise ValueError(f"unknown charlstm backend {name!r}: expected one of {', '.join(CHOICES)}")
    return backend, (variant if sep else None)


def validate_name(name: str) -> str:
    """The canonical (lower-case) spelling of ``name``; ``ValueError`` if it is unknown."""
    backend, variant = parse_name(name)
    return backend if variant is None else f"{backend}:{variant}"


def is_core(name: str) -> bool:
    """True when ``name`` runs on a recurrent core (every backend but ``torch``; ``auto`` too
    may resolve to one, so ask about a resolved name)."""
    backend, _ = parse_name(name)
    return backend != "auto" and _REGISTRY[backend].is_core


def runs_on(name: str, device_type: str) -> bool:
    """Whether backend ``name``'s kernels can run on ``device_type`` at all (on some machine)."""
    backend, _ = parse_name(name)
    return backend == "auto" or device_type in _REGISTRY[backend].device_types


def disabled_variants(backend: Optional[str] = None) -> frozenset:
    """The concrete names listed in ``CHARLSTM_DISABLED_VARIANTS`` (read per call); with
    ``backend``, only that backend's, as variant names (``{"persistent"}``)."""
    raw = os.environ.get(DISABLED_ENV, "")
    names = frozenset(raw.replace(",", " ").lower().split())
    unknown = names - set(NAMES)
    if unknown:
        raise ValueError(f"{DISABLED_ENV}={raw!r}: {', '.join(sorted(unknown))} is not a "
                         f"concrete kernel path; expected names from {', '.join(NAMES)}")
    if backend is None:
        return names
    return frozenset(n.partition(":")[2] for n in names if n.partition(":")[0] == backend)


def _disabled_reason() -> str:
    return f"disabled by {DISABLED_ENV} ({os.environ.get(DISABLED_ENV, '').strip()})"


# ----------------------------------------------------------------------------- loading
_LOADED: dict = {}
_CORES: dict = {}


def _bind(core, variant: str):
    """``core`` with ``variant`` bound: ``bound(xproj, w_hh, h0, c0=None, lengths=None, *,
    cell="lstm", b_hn=None, return_cs=False)``."""
    def bound(xproj, w_hh, h0, c0=None, lengths=None, *, cell="lstm", b_hn=None,
              return_cs=False):
        return core(xproj, w_hh, h0, c0, lengths, variant, cell=cell, b_hn=b_hn,
                    return_cs=return_cs)
    bound.fwd_op, bound.bwd_op, bound.variant = core.fwd_op, core.bwd_op, variant
    return bound


def _load(backend: str):
    """Import a backend module once; return (module, None) or (None, reason).

    Also binds its core to each variant (and to ``""``, the backend's own choice) where the core
    exists.  Cached, so that the forward path (traced by ``torch.compile``) only reads dicts
    after the first call.
    """
    if backend in _LOADED:
        return _LOADED[backend]
    b = _REGISTRY[backend]
    if b.module is None:
        result = (None, None)
    else:
        try:
            result = (importlib.import_module(b.module), None)
        except BackendUnavailable as e:
            result = (None, str(e))
        except ImportError as e:
            result = (None, f"import failed: {e}")
    mod = result[0]
    if mod is not None:
        try:
            core = mod.core
        except BackendUnavailable:      # cannot run in this process: no core to bind
            core = None
        if core is not None:
            for v in ("",) + b.variants:
                _CORES[(backend, v)] = _bind(core, v)
    _LOADED[backend] = result
    return result


def preload(*names: str) -> None:
    """Import the named backends now (and the ``CHARLSTM_BACKEND`` one), outside any
    ``torch.compile`` trace: Dynamo cannot trace an import, only the cached lookup after it."""
    env = os.environ.get(ENV_VAR, "")
    for name in names + ((env,) if env else ()):
        try:
            backend, _ = parse_name(name)
        except ValueError:
            continue                    # reported where the name is used
        if backend != "auto":
            _load(backend)


# ----------------------------------------------------------------------------- availability
def _module_reason(backend: str, variant: str, device, dtype) -> Optional[str]:
    b = _REGISTRY[backend]
    if dtype is not None and dtype not in b.dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in b.dtypes)
        return f"dtype {dtype} is not supported by the {backend} backend ({names} are)"
    mod, why = _load(backend)
    if why:
        return why
    return None if mod is None else mod.variant_reason(variant, device, dtype)


def _own_choice(backend: str, device, dtype) -> tuple:
    """``(variant, None)`` -- the variant a bare ``backend`` runs (``""``: its kernels decide
    per call) -- or ``(None, reason)`` when it cannot run."""
    why = _module_reason(backend, "", device, dtype)
    if why:
        return None, why
    choice = _LOADED[backend][0].own_choice(device, dtype, disabled_variants(backend))
    if choice is None:
        return None, f"every variant of {backend} is {_disabled_reason()}"
    return choice, None


def cell_reason(backend: str, cell: Optional[str]) -> Optional[str]:
    """None when ``backend`` implements ``cell`` (None: any cell), else why not."""
    if cell is None or backend == "auto":
        return None
    from .contract import cell_of
    name = cell_of(cell).name
    if name not in _REGISTRY[backend].cells:
        return (f"the {backend} backend does not implement the {name} cell yet (it implements "
                f"{', '.join(_REGISTRY[backend].cells)})")
    return None


def unavailable_reason(name: str, device: Optional[torch.device] = None,
                       dtype: Optional[torch.dtype] = None,
                       cell: Optional[str] = None) -> Optional[str]:
    """None when ``name`` can run for this device/dtype/cell (each may be None: "some"), else
    a sentence saying why.  A bare ``triton``/``cuda`` can run when its own choice can."""
    backend, variant = parse_name(name)
    if backend == "auto":
        return None
    why = cell_reason(backend, cell)
    if why:
        return why
    if variant is None and _REGISTRY[backend].variants:
        return _own_choice(backend, device, dtype)[1]
    if validate_name(name) in disabled_variants():
        return _disabled_reason()
    return _module_reason(backend, variant or "", device, dtype)


def variants(device: Optional[torch.device] = None,
             dtype: Optional[torch.dtype] = None, cell: Optional[str] = None) -> list:
    """Every concrete name (:data:`NAMES`) as a :class:`VariantInfo`, with its availability
    for ``device``/``dtype``/``cell`` (None: any)."""
    out = []
    for name in NAMES:
        backend, variant = parse_name(name)
        b = _REGISTRY[backend]
        why = unavailable_reason(name, device, dtype, cell)
        out.append(VariantInfo(name, backend, variant, b.is_core, why is None, why, b.status,
                               b.device_types, b.dtypes, b.cells))
    return out


def kernel_variants(device: Optional[torch.device] = None,
                    dtype: Optional[torch.dtype] = None, cell: Optional[str] = None) -> list:
    """:func:`variants` of the backends with a recurrent core (everything but ``torch``)."""
    return [v for v in variants(device, dtype, cell) if v.is_core]


def status(name: str) -> str:
    """One line for ``charlstm info``: availability and verification status of ``name``."""
    why = unavailable_reason(name)
    if why:
        return f"unavailable: {why}"
    backend, _ = parse_name(name)
    return "available" + ("" if backend == "auto" else f" - {_REGISTRY[backend].status}")


# ----------------------------------------------------------------------------- choosing
@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run every charlstm layer (LSTM, GRU, RNN) in this thread with backend ``name`` inside the
    block."""
    name = validate_name(name)
    preload(name)
    with _override.push(name):
        yield


def requested(module_choice: str) -> str:
    """The backend name in force for a module whose own choice is ``module_choice``."""
    override = _override.top()
    if override is not None:
        return override
    env = os.environ.get(ENV_VAR)
    if env:
        try:
            return validate_name(env)
        except ValueError as e:
            raise ValueError(f"{ENV_VAR}={env!r}: {e}") from None
    return module_choice


def resolve(name: str, device: torch.device, dtype: torch.dtype, *, batch: int = 0,
            hidden: int = 0, seq_len: int = 0, cell: str = "lstm") -> str:
    """Turn a requested name into the name that runs; ``BackendUnavailable`` (naming it and
    why) when it cannot.

    * a concrete name: itself;
    * a bare ``triton``/``cuda``: the backend's own choice -- ``"triton:<schedule>"``, or
      ``"cuda"`` when its kernels decide per call (the C++ ``auto`` rule; :func:`last_run`
      says what ran), never a disabled variant;
    * ``auto``, written down from measurements:

      * CPU, float32, LSTM: per shape, :func:`_cpu_auto` (``reference`` for short calls of wide
        layers, ``torch`` otherwise); other dtypes, and the other cells (whose CPU costs have
        not been measured), ``torch``;
      * CUDA: ``torch`` (cuDNN).  Until a kernel backend has GPU benchmark results that beat
        cuDNN for a shape, ``auto`` does not pick it (none has run on a GPU yet).

    ``cell``: the layer's cell (:data:`charlstm.backends.contract.CELLS`); a backend that does
    not implement it is unavailable for it.
    """
    canonical = validate_name(name)
    if canonical == "auto":
        cpu = device.type == "cpu" and dtype == torch.float32 and cell == "lstm"
        return _cpu_auto(batch, hidden, seq_len) if cpu else "torch"
    why = unavailable_reason(canonical, device, dtype, cell)
    if why:
        raise BackendUnavailable(f"charlstm backend {canonical!r} is unavailable: {why}")
    if canonical in _REGISTRY and _REGISTRY[canonical].variants:
        choice = _own_choice(canonical, device, dtype)[0]
        return f"{canonical}:{choice}" if choice else canonical
    return canonical


def _cpu_auto(batch: int, hidden: int, seq_len: int) -> str:
    """``auto`` on a CPU (float32): ``reference`` for short calls of wide layers, else ``torch``.

    torch's CPU LSTM (oneDNN) pays a cost per call that grows with the weights and then runs
    each step cheaply; the ``reference`` backend pays nothing per call and ~0.1-0.2 ms per step
    (one small matrix product and a few elementwise ops).  So a short call of a wide layer --
    a sampling or streaming step, a short prime -- is faster on ``reference``, while training
    and ``eval`` shapes (T = 50, B = 50) stay on ``torch``.  The rule, with ``work = seq_len *
    max(batch, 4)``: ``reference`` when ``hidden >= 512`` and ``work <= 64``, or ``hidden >=
    384`` and ``work <= 16``.

    Measured with ``python benchmarks/bench_cpu_auto.py --threads-list 1 --metric cpu``
    (2026-11-28, 2-core AMD EPYC VM shared with other jobs, torch 2.13.0+cpu, one layer, process
    CPU ms, torch / reference; docs/benchmarks.md has the whole table):

    * H = 512, forward: T=1 B=1 6.17 / 1.41; T=1 B=64 8.34 / 4.82; T=4 B=16 8.28 / 5.49; T=16
      B=1 7.67 / 3.96; beyond the rule T=4 B=64 16.4 / 17.3, T=64 B=1 7.44 / 11.3.
      Forward + backward: T=1 B=1 7.69 / 3.55; T=16 B=1 12.3 / 11.9; T=1 B=64 14.4 / 14.8.
    * H = 1024, forward: T=1 B=1 21.3 / 3.23; T=4 B=16 40.4 / 29.8; beyond, T=16 B=16 82.7 /
      91.1.  H = 384: T=1 B=1 2.74 / 1.22; T=4 B=1 1.49 / 1.25; beyond, T=16 B=1 2.47 / 3.39.
    * H <= 256 (torch everywhere but near-ties): H=128 T=1 B=1 0.17 / 0.21 forward, 0.72 /
      0.77 forward + backward; the char-rnn training shape (T=64 B=64 H=128) 38.7 / 61.7.

    At torch's default thread count (2 here) oneDNN's per-call cost was larger still, but the
    shared machine was too loaded for those timings to mean anything; this rule is the
    one-thread one.  Other dtypes are not measured: ``torch``.
    """
    work = seq_len * max(batch, 4)
    if (hidden >= 512 and work <= 64) or (hidden >= 384 and work <= 16):
        return "reference"
    return "torch"


def core_for(name: str):
    """The differentiable recurrent core ``core(xproj, w_hh, h0, c0, lengths) -> (hs, hT, cT)``
    of a kernel path, with its variant bound (a bare backend name: ``""``, the backend's own
    choice).  ``core.fwd_op``/``core.bwd_op`` are the registered custom ops (whose last
    argument is the variant) and ``core.variant`` the bound variant."""
    backend, variant = parse_name(name)
    if backend == "auto" or not _REGISTRY[backend].is_core:
        raise ValueError(f"backend {name!r} runs the whole layer and has no recurrent core")
    mod, why = _load(backend)
    core = _CORES.get((backend, variant or ""))
    if core is None:
        if why is None:
            mod.core  # noqa: B018  (raises BackendUnavailable with the reason)
        raise BackendUnavailable(f"charlstm backend {name!r} is unavailable: {why}")
    return core


# ----------------------------------------------------------------------------- what ran
_last_run: dict = {}


def record_run(direction: str, name: str) -> None:
    """Called by the kernels: the concrete name that ran for ``direction`` ("forward" or
    "backward")."""
    _last_run[direction] = name


def last_run() -> dict:
    """``{"forward": "cuda:persistent_tc", "backward": "cuda:persistent"}``: the concrete kernel
    path of the last core forward/backward that ran (a bare ``cuda``/``triton`` request records
    what the backend chose; float64 on triton records ``reference``).  Process-wide, not per
    thread: autograd runs a CUDA backward on its own device thread.  May be empty."""
    return dict(_last_run)


# ----------------------------------------------------------------------------- old knobs
def legacy_choice(var: str, backend: str) -> Optional[str]:
    """The variant an old environment variable (``CHARLSTM_TRITON_SCHEDULE``,
    ``CHARLSTM_CUDA_PATH``) asks for, with one warning naming the replacement; None when unset
    or not a variant.  A backend module calls it once, at import: a mapped value becomes that
    backend's own choice (what a bare ``triton``/``cuda`` runs)."""
    raw = os.environ.get(var, "").strip().lower()
    if not raw:
        return None
    mapped = raw if raw in _REGISTRY[backend].variants else None
    how = (f"taken as the own choice of a bare {backend!r} for now" if mapped else "ignored")
    warnings.warn(f"{var} is no longer read ({var}={raw!r} is {how}): name the kernel path "
                  f"instead, e.g. backend='{backend}:{mapped or _REGISTRY[backend].variants[0]}' "
                  f"or {ENV_VAR}={backend}:{mapped or _REGISTRY[backend].variants[0]}; "
                  f"{DISABLED_ENV} keeps a backend's own choice away from variants",
                  FutureWarning, stacklevel=3)
    return mapped
