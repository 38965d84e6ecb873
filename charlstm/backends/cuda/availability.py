"""Can the cuda backend run here, and if not, why (one sentence).  Never raises, never builds.

The machine-level answer is computed once (at import of the backend, outside any
``torch.compile`` trace); afterwards :func:`unavailable_reason` only reads module globals and
compares devices/dtypes, which Dynamo traces without a graph break.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import build

#: dtypes the kernels support (float32 accumulation and cell state for all of them)
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


_UNSET = object()
_global = _UNSET


def _compute_global_reason() -> Optional[str]:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} was built without CUDA"
    if not torch.cuda.is_available():
        return "no CUDA device is available (torch.cuda.is_available() is False)"
    return build.build_reason()


def global_reason() -> Optional[str]:
    """Why the backend cannot run in this process at all (None: it can).  Cached."""
    global _global
    if _global is _UNSET:
        _global = _compute_global_reason()
    return _global


def unavailable_reason(device: Optional[torch.device] = None,
                       dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None if the cuda core can run for ``device``/``dtype`` (either may be None), else why."""
    why = global_reason()
    if why:
        return why
    if device is not None:
        dev = torch.device(device)
        if dev.type != "cuda":
            return f"the cuda backend runs on CUDA devices only, got a {dev.type} tensor"
    if dtype is not None and dtype not in SUPPORTED_DTYPES:
        return (f"dtype {dtype} is not supported by the cuda backend (float32, float16 and "
                f"bfloat16 are; use the reference or torch backend for {dtype})")
    return None
