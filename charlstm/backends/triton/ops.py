"""The Triton kernels registered as the ``charlstm::triton_core_fwd``/``_bwd`` custom ops.

:func:`forward`/:func:`backward` check the contract's preconditions, send float64 to the
reference kernels (the Triton kernels implement float32, float16 and bfloat16; float64 has no
tensor-core ``tl.dot`` and would only be a slower reference) and otherwise launch
:mod:`.forward`/:mod:`.backward` with the schedule the variant names (``""``: :func:`own_choice`).
Registration (``torch.library.custom_op`` + ``register_fake`` + ``register_autograd``, dW_hh as
one GEMM) is :func:`charlstm.backends.contract.make_core_op`; ``torch.library.triton_op`` is
deliberately not used: under the interpreter it fails ``opcheck``'s fake-tensor test.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import (
    _REGISTRY,
    BackendUnavailable,
    cell_reason,
    disabled_variants,
    legacy_choice,
    record_run,
    reference,
)
from ..contract import CoreKernels, cell_of, check_core_inputs, make_core_op
from . import backward as _bwd
from . import forward as _fwd
from .common import INTERPRET, KERNEL_DTYPES, choose_launch, default_schedule

__all__ = ["VARIANTS", "core", "forward", "backward", "device_reason", "variant_reason",
           "own_choice"]

#: the schedules, in the registry's order (``triton:persistent``, ...)
VARIANTS: tuple = _REGISTRY["triton"].variants

#: CHARLSTM_TRITON_SCHEDULE (no longer read per call): warned about once, mapped to own_choice
_LEGACY = legacy_choice("CHARLSTM_TRITON_SCHEDULE", "triton")


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


def variant_reason(variant: str, device: Optional[torch.device] = None,
                   dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None if schedule ``variant`` (``""``: any) can run for ``device``/``dtype``, else why.

    Runs on CUDA devices, and on CPU tensors when ``TRITON_INTERPRET=1`` was set before the
    kernels were defined.  dtypes: float32, float16, bfloat16 (float64 via the reference).
    """
    _check_variant(variant)
    why = device_reason(device)
    if why is not None:
        return why
    if dtype is not None and dtype not in KERNEL_DTYPES + (torch.float64,):
        return (f"dtype {dtype} is not supported (float32, float16, bfloat16; float64 runs on "
                f"the reference kernels)")
    return None


def own_choice(device: Optional[torch.device], dtype: Optional[torch.dtype],
               disabled: frozenset = frozenset()) -> Optional[str]:
    """The schedule a bare ``triton`` runs: :func:`.common.default_schedule` (``sequence``
    under the interpreter, ``persistent`` on a GPU), or the old ``CHARLSTM_TRITON_SCHEDULE``'s;
    never one of ``disabled`` (then the next in :data:`VARIANTS` order; None when all are)."""
    preferred = _LEGACY or default_schedule()
    for v in (preferred,) + VARIANTS:
        if v not in disabled:
            return v
    return None


def _check_variant(variant: str) -> None:
    if variant and variant not in VARIANTS:
        raise ValueError(f"triton backend: unknown variant {variant!r}, expected one of "
                         f"{', '.join(VARIANTS)} (or '' for the backend's own choice)")


def _schedule(variant: str, t: Tensor) -> str:
    """The schedule to launch for ``variant`` on ``t``'s device; checks that it can run."""
    why = device_reason(t.device)
    if why is not None:
        raise RuntimeError(f"charlstm triton backend: {why}")
    if t.dtype not in KERNEL_DTYPES:
        raise TypeError(f"charlstm triton backend: dtype must be float32, float16, bfloat16 "
                        f"(or float64, run by the reference kernels), got {t.dtype}")
    _check_variant(variant)
    if variant:
        return variant
    choice = own_choice(t.device, t.dtype, disabled_variants("triton"))
    if choice is None:
        raise BackendUnavailable("charlstm backend 'triton': every schedule is disabled by "
                                 "CHARLSTM_DISABLED_VARIANTS")
    return choice


def _check_cell(cell) -> None:
    why = cell_reason("triton", cell)
    if why:
        raise BackendUnavailable(f"charlstm backend 'triton': {why}")


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def forward(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Optional[Tensor],
            lengths: Optional[Tensor], b_hn: Optional[Tensor] = None, cell: str = "lstm",
            variant: str = ""):
    """Contract forward -> ``(hs, hT, cT, cs, gates)`` of ``cell`` with schedule ``variant``."""
    check_core_inputs(xproj, w_hh, h0, c0, lengths, b_hn, cell)
    _check_cell(cell)
    if xproj.dtype == torch.float64:
        _check_variant(variant)
        record_run("forward", "reference")
        return reference.forward(xproj, w_hh, h0, c0, lengths, b_hn, cell)
    schedule = _schedule(variant, xproj)
    T, B, GH = xproj.shape
    spec = cell_of(cell)
    out = _fwd.forward(xproj.contiguous(), w_hh.contiguous(), h0.contiguous(), _contiguous(c0),
                       _contiguous(lengths), _contiguous(b_hn), spec.name,
                       launch=choose_launch(B, GH // spec.gates, schedule))
    record_run("forward", f"triton:{schedule}")
    return out


def backward(dhs: Tensor, dhT: Tensor, dcT: Optional[Tensor], w_hh: Tensor, h0: Tensor,
             c0: Optional[Tensor], hs: Tensor, cs: Tensor, gates: Tensor,
             lengths: Optional[Tensor], cell: str = "lstm", variant: str = ""):
    """Contract backward -> ``(dgates, dh0, dc0)`` of ``cell`` with schedule ``variant``."""
    _check_cell(cell)
    if w_hh.dtype == torch.float64:
        _check_variant(variant)
        record_run("backward", "reference")
        return reference.backward(dhs, dhT, dcT, w_hh, h0, c0, hs, cs, gates, lengths, cell)
    schedule = _schedule(variant, w_hh)
    T, B, H = dhs.shape
    D = w_hh.dtype
    out = _bwd.backward(dhs.to(D).contiguous(), dhT.to(D).contiguous(),
                        _contiguous(None if dcT is None else dcT.to(D)), w_hh.contiguous(),
                        h0.contiguous(), _contiguous(c0), hs.contiguous(), cs.contiguous(),
                        gates.contiguous(), _contiguous(lengths), cell_of(cell).name,
                        launch=choose_launch(B, H, schedule))
    record_run("backward", f"triton:{schedule}")
    return out


kernels = CoreKernels(forward, backward)
core = make_core_op("triton_core", kernels)
