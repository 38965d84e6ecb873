"""The ``triton`` backend: fused Triton kernels for the LSTM recurrent core.

Status: correct under the Triton interpreter (CPU); compiles, untested on GPU.

Exposes what the registry (:mod:`charlstm.backends`) expects of a kernel backend:

* ``core(xproj, w_hh, h0, c0, lengths) -> (hs, hT, cT)`` -- the differentiable recurrent core
  (the ``charlstm::triton_core_fwd``/``_bwd`` custom ops, :mod:`.ops`);
* ``unavailable_reason(device, dtype)`` -- None when it can run, else a sentence saying why;
* ``STATUS`` -- one line on how far it has been verified.

Modules: :mod:`.common` (mode, dtypes, launch choice, pointwise helpers), :mod:`.forward` and
:mod:`.backward` (one kernel each, design in their docstrings), :mod:`.ops` (dispatch and
registration).  float64 runs on the reference kernels (see :mod:`.ops`).  Design and limits
for users: ``docs/triton.md``.
"""
from __future__ import annotations

from typing import Optional

import torch

try:
    import triton  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    from .. import BackendUnavailable
    raise BackendUnavailable(f"triton is not installed ({e})") from None

from .common import INTERPRET, KERNEL_DTYPES
from .ops import core, device_reason

__all__ = ["core", "unavailable_reason", "STATUS", "INTERPRET"]

#: how far this backend has been verified (do not claim more than has been checked)
STATUS = "correct under the Triton interpreter (CPU); compiles, untested on GPU"


def unavailable_reason(device: Optional[torch.device] = None,
                       dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None if the Triton core can run for ``device``/``dtype``, else a sentence saying why.

    Runs on CUDA devices, and on CPU tensors when ``TRITON_INTERPRET=1`` was set before the
    kernels were defined.  dtypes: float32, float16, bfloat16 (float64 via the reference).
    """
    why = device_reason(device)
    if why is not None:
        return why
    if dtype is not None and dtype not in KERNEL_DTYPES + (torch.float64,):
        return (f"dtype {dtype} is not supported (float32, float16, bfloat16; float64 runs on "
                f"the reference kernels)")
    return None
