"""The Triton kernels registered as the ``charlstm::triton_core_fwd``/``_bwd`` custom ops.

:func:`forward`/:func:`backward` check the contract's preconditions, send float64 to the
reference kernels (the Triton kernels implement float32, float16 and bfloat16; float64 has no
tensor-core ``tl.dot`` and would only be a slower reference) and otherwise launch
:mod:`.forward`/:mod:`.backward`.  Registration (``torch.library.custom_op`` + ``register_fake``
+ ``register_autograd``, dW_hh as one GEMM) is :func:`charlstm.backends.contract.make_core_op`;
``torch.library.triton_op`` is deliberately not used: under the interpreter it fails
``opcheck``'s fake-tensor test.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from ..contract import CoreKernels, check_core_inputs, make_core_op
from . import backward as _bwd
from . import forward as _fwd
from .common import INTERPRET, KERNEL_DTYPES

__all__ = ["core", "forward", "backward", "device_reason"]


def device_reason(device: Optional[torch.device]) -> Optional[str]:
    """None when the kernels can run on ``device`` (None: on some device of this process)."""
    if device is None:
        if INTERPRET or torch.cuda.is_available():
            return None
        return ("no CUDA GPU, and TRITON_INTERPRET=1 (the Triton interpreter) was not set "
                "before charlstm's Triton kernels were defined")
    device = torch.device(device)
    if device.type == "cuda" or INTERPRET:
        return None
    if device.type == "cpu":
        return ("CPU tensors need TRITON_INTERPRET=1 (the Triton interpreter), set before "
                "charlstm's Triton kernels are defined")
    return f"the Triton kernels run on CUDA devices (or CPU under the interpreter), got {device}"


def _check_runnable(t: Tensor) -> None:
    why = device_reason(t.device)
    if why is not None:
        raise RuntimeError(f"charlstm triton backend: {why}")
    if t.dtype not in KERNEL_DTYPES + (torch.float64,):
        raise TypeError(f"charlstm triton backend: dtype must be float32, float16, bfloat16 "
                        f"(or float64, run by the reference kernels), got {t.dtype}")


def forward(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, lengths: Optional[Tensor]):
    """Contract forward -> ``(hs, hT, cT, cs, gates)``."""
    check_core_inputs(xproj, w_hh, h0, c0, lengths)
    if xproj.dtype == torch.float64:
        return reference.forward(xproj, w_hh, h0, c0, lengths)
    _check_runnable(xproj)
    return _fwd.forward(xproj.contiguous(), w_hh.contiguous(), h0.contiguous(), c0.contiguous(),
                        None if lengths is None else lengths.contiguous())


def backward(dhs: Tensor, dhT: Tensor, dcT: Tensor, w_hh: Tensor, c0: Tensor, cs: Tensor,
             gates: Tensor, lengths: Optional[Tensor]):
    """Contract backward -> ``(dgates, dh0, dc0)``."""
    if w_hh.dtype == torch.float64:
        return reference.backward(dhs, dhT, dcT, w_hh, c0, cs, gates, lengths)
    _check_runnable(w_hh)
    c = [t.contiguous() for t in (dhs.to(w_hh.dtype), dhT.to(w_hh.dtype), dcT.to(w_hh.dtype),
                                  w_hh, c0, cs, gates)]
    return _bwd.backward(*c, None if lengths is None else lengths.contiguous())


kernels = CoreKernels(forward, backward)
core = make_core_op("triton_core", kernels)
