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

    * CPU: ``torch`` (torch's CPU LSTM beats a Python-level loop and the Triton interpreter).
    * CUDA: ``torch`` (cuDNN).  The Triton and CUDA backends have not yet been measured on a
      GPU, so ``auto`` does not choose them.
    """
    name = validate_name(name)
    if name == "auto":
        return "torch"
    why = unavailable_reason(name, device, dtype)
    if why:
        raise BackendUnavailable(f"charlstm backend {name!r} is unavailable: {why}")
    return name


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
