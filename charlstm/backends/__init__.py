"""Backend registry: which implementation runs an LSTM forward, and why.

Backends
--------
``reference``  plain tensor ops with a hand-written backward: the specification.
``torch``      torch's own ``nn.LSTM`` forward (cuDNN on a GPU); it runs the whole layer.
``triton``     fused Triton kernels for the recurrent core.
``cuda``       persistent CUDA C++ kernels for the recurrent core.
``auto``       the fastest available for the device, dtype and shape (see :func:`resolve`).

The kernel backends (``reference``, ``triton``, ``cuda``) implement only the recurrent core
of one layer and direction (:mod:`charlstm.backends.contract`); the layer does the rest.

Which backend runs, from strongest to weakest: the innermost :func:`use_backend` context,
then the ``CHARLSTM_BACKEND`` environment variable, then the module's ``backend=`` argument.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from .._override import OverrideStack

BACKENDS = ("reference", "torch", "triton", "cuda")
CHOICES = BACKENDS + ("auto",)
ENV_VAR = "CHARLSTM_BACKEND"


class BackendUnavailable(RuntimeError):
    """Raised when a backend is asked for but cannot run here; the message says why."""


@dataclass(frozen=True)
class Backend:
    name: str
    #: module path whose ``core`` is the recurrent core, or None for the whole-layer backend
    module: Optional[str]
    #: True when the backend runs the recurrence itself (needs the core contract)
    is_core: bool


_REGISTRY = {
    "reference": Backend("reference", "charlstm.backends.reference", True),
    "torch": Backend("torch", None, False),
    "triton": Backend("triton", "charlstm.backends.triton", True),
    "cuda": Backend("cuda", "charlstm.backends.cuda", True),
}

_override = OverrideStack()


def validate_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in CHOICES:
        raise ValueError(f"unknown charlstm backend {name!r}: expected one of {', '.join(CHOICES)}")
    return name.lower()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run every ``charlstm.LSTM`` in this thread with backend ``name`` inside the block."""
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


_LOADED: dict = {}


def _load(name: str):
    """Import a backend module once; return (module, None) or (None, reason).

    The result is cached, so that the forward path (traced by ``torch.compile``) only reads
    a dict after the first call.
    """
    if name in _LOADED:
        return _LOADED[name]
    b = _REGISTRY[name]
    if b.module is None:
        result = (None, None)
    else:
        try:
            result = (importlib.import_module(b.module), None)
        except BackendUnavailable as e:
            result = (None, str(e))
        except ImportError as e:
            result = (None, f"import failed: {e}")
    _LOADED[name] = result
    return result


def preload(*names: str) -> None:
    """Import the named backends now (and the ``CHARLSTM_BACKEND`` one), outside any
    ``torch.compile`` trace: Dynamo cannot trace an import, only the cached lookup after it."""
    env = os.environ.get(ENV_VAR, "").lower()
    for name in names + ((env,) if env in _REGISTRY else ()):
        if name in _REGISTRY:
            _load(name)


def unavailable_reason(name: str, device: Optional[torch.device] = None,
                       dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None when backend ``name`` can run for this device/dtype, else a sentence saying why."""
    name = validate_name(name)
    if name == "auto":
        return None
    if name in ("torch", "reference"):
        return None
    mod, why = _load(name)
    if mod is None:
        return why
    check: Callable = getattr(mod, "unavailable_reason", None)
    return check(device, dtype) if check is not None else None


def status(name: str) -> str:
    """One line for ``charlstm info``: availability and maturity of a backend."""
    why = unavailable_reason(name)
    if why:
        return f"unavailable: {why}"
    mod, _ = _load(name)
    note = getattr(mod, "STATUS", None) if mod is not None else None
    if name == "torch":
        note = "torch.nn.LSTM (cuDNN on CUDA devices)"
    if name == "reference":
        note = "plain tensor ops, hand-written backward (the specification)"
    return "available" + (f" - {note}" if note else "")


def resolve(name: str, device: torch.device, dtype: torch.dtype, *, batch: int = 0,
            hidden: int = 0, seq_len: int = 0) -> str:
    """Turn a requested name (possibly ``auto``) into a concrete backend that can run.

    ``auto`` rule (written down from measurements; until a kernel backend has GPU benchmark
    results that beat cuDNN for a shape, ``auto`` does not pick it):

    * CPU, float32: per shape, :func:`_cpu_auto` (``reference`` for short calls of wide
      layers, ``torch`` otherwise); other dtypes ``torch``.
    * CUDA: ``torch`` (cuDNN).  The Triton and CUDA backends have not yet been measured on a
      GPU, so ``auto`` does not choose them.
    """
    name = validate_name(name)
    if name == "auto":
        cpu = device.type == "cpu" and dtype == torch.float32
        return _cpu_auto(batch, hidden, seq_len) if cpu else "torch"
    why = unavailable_reason(name, device, dtype)
    if why:
        raise BackendUnavailable(f"charlstm backend {name!r} is unavailable: {why}")
    return name


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
    """The differentiable recurrent core ``core(xproj, w_hh, h0, c0, lengths)`` of a kernel backend."""
    b = _REGISTRY[name]
    if not b.is_core:
        raise ValueError(f"backend {name!r} runs the whole layer and has no recurrent core")
    mod, why = _load(name)
    if mod is None:
        raise BackendUnavailable(f"charlstm backend {name!r} is unavailable: {why}")
    return mod.core


def is_core(name: str) -> bool:
    return _REGISTRY[name].is_core
