"""Which implementation of the cuda backend runs: ``persistent``, ``stepwise``,
``persistent_tc`` or ``auto``.

* ``persistent``: one cooperative launch per layer and direction for the whole sequence, each
  block keeping its slice of ``W_hh`` in shared memory, one grid barrier per step.  Forcing it
  for a shape whose grid cannot be co-resident raises ``RuntimeError`` with the reason.
* ``stepwise``: one fused (matmul + cell update) launch per time step from a host loop,
  ``W_hh`` read from L2; works for every size, and is capturable in a CUDA graph.
* ``persistent_tc``: the persistent paths with the matmul of both directions on tensor cores
  (WMMA, float16 and bfloat16 only; float32 runs ``persistent``).
* ``auto`` (default), each direction: ``persistent_tc`` for float16/bfloat16 with batch >= 8
  (``CHARLSTM_TC_MIN_BATCH`` in ``csrc/launch.h``, an estimate from arithmetic, not measured)
  when its layout fits, else ``persistent`` when it fits on the device, else ``stepwise``.

The path in force, strongest first: the innermost :func:`use_path` block (this thread), then
:func:`set_path`, then the ``CHARLSTM_CUDA_PATH`` environment variable, then ``auto``.
:func:`last_path` says which path the last forward/backward in this thread actually ran
(benchmarks and tests use it to check they timed what they meant to).
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Optional

from ..._override import OverrideStack
from .abi import PATH_CODES

ENV_VAR = "CHARLSTM_CUDA_PATH"
PATHS = tuple(PATH_CODES)

_local = threading.local()          # last path used, per thread
_override = OverrideStack()
_default: Optional[str] = None


def validate_path(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in PATH_CODES:
        raise ValueError(f"unknown cuda backend path {name!r}: expected one of {', '.join(PATHS)}")
    return name.lower()


def set_path(name: Optional[str]) -> None:
    """Set the process-wide path (``None`` goes back to ``CHARLSTM_CUDA_PATH`` / ``auto``)."""
    global _default
    _default = None if name is None else validate_path(name)


@contextlib.contextmanager
def use_path(name: str) -> Iterator[None]:
    """Run the cuda backend with path ``name`` inside the block (this thread only)."""
    with _override.push(validate_path(name)):
        yield


def current_path() -> str:
    """The path name in force for the next call (see the module docstring for precedence)."""
    override = _override.top()
    if override is not None:
        return override
    if _default is not None:
        return _default
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            return validate_path(env)
        except ValueError as e:
            raise ValueError(f"{ENV_VAR}={env!r}: {e}") from None
    return "auto"


def record(direction: str, name: str) -> None:
    """Remember which path ran for ``direction`` ("forward" or "backward")."""
    last = getattr(_local, "last", None)
    if last is None:
        last = _local.last = {}
    last[direction] = name


def last_path() -> dict:
    """``{"forward": name, "backward": name}`` of the last calls in this thread (may be empty)."""
    return dict(getattr(_local, "last", None) or {})
