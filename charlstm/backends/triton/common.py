"""What the Triton forward and backward kernels share: mode detection, dtypes, launch choices.

* :data:`INTERPRET` -- whether ``triton.jit`` in this process builds interpreter functions
  (``TRITON_INTERPRET=1`` was set before the kernels were defined).  Decided once, at import,
  exactly as Triton decides it.
* :func:`dot_mode` -- how a kernel feeds ``tl.dot`` for an input dtype (see its docstring).
* :class:`Launch` and :func:`choose_launch` -- the schedule (``"sequence"``: one launch runs
  every step; ``"step"``: one launch per time step) and the block sizes.
* :func:`lstm_cell`, :func:`tanh` -- ``@triton.jit`` pointwise math in float32.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRET", "KERNEL_DTYPES", "Launch", "backward_precision", "choose_launch",
           "dot_mode", "lstm_cell", "tanh", "tune_configs"]


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
    """``(cast_to_f32, input_precision)`` for the forward's ``h @ W_hh^T`` dot.

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


def backward_precision(dtype: torch.dtype) -> str:
    """``input_precision`` of the backward's ``dz @ W_hh`` dot (float32 ``dz``, ``W_hh`` cast to float32).

    float32 inputs and the interpreter: ``"ieee"``.  16-bit inputs on a GPU: ``"tf32"``;
    ``W_hh`` (10 or 7 mantissa bits) is exact in TF32 and ``dz`` is rounded to 10 mantissa
    bits, finer than rounding it to the input dtype would be.
    """
    return "ieee" if (dtype == torch.float32 or INTERPRET) else "tf32"


class Launch(NamedTuple):
    """How one call is launched.

    ``schedule``: ``"sequence"`` -- grid ``(ceil(B / block_b), 1)``, one launch, each program
    runs every time step for its batch rows and all hidden units; ``"step"`` -- grid
    ``(ceil(B / block_b), ceil(H / block_h))``, one launch per time step, each program owns
    one tile of hidden units.  ``block_*``/``num_warps``: ``None`` lets the GPU autotuner pick.
    """

    schedule: str
    block_b: Optional[int] = None
    block_h: Optional[int] = None
    block_k: Optional[int] = None
    num_warps: Optional[int] = None

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

#: hidden sizes up to this run the "sequence" schedule on a GPU, larger ones "step".  NOT
#: measured yet: a first guess (one SM reads all of W_hh from L2 every step in "sequence";
#: "step" spreads W_hh over many SMs but pays one launch per step).
SEQUENCE_MAX_HIDDEN = 256

SCHEDULES = ("sequence", "step")


def choose_launch(batch: int, hidden: int, schedule: Optional[str] = None) -> Launch:
    """The launch for a batch/hidden size; ``schedule`` forces ``"sequence"`` or ``"step"``."""
    if schedule is None:
        schedule = "sequence" if (INTERPRET or hidden <= SEQUENCE_MAX_HIDDEN) else "step"
    if schedule not in SCHEDULES:
        raise ValueError(f"triton backend: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if INTERPRET:
        return Launch(schedule, **interpreter_blocks(batch, hidden))
    if not _autotune_enabled():
        first = tune_configs()[0]
        return Launch(schedule, block_b=first.kwargs["BLOCK_B"], block_h=first.kwargs["BLOCK_H"],
                      block_k=first.kwargs["BLOCK_K"], num_warps=first.num_warps)
    return Launch(schedule)


def tune_configs() -> list:
    """Autotuner configurations (GPU only) over BLOCK_B, BLOCK_H, BLOCK_K and warps."""
    out = []
    for bb, bh, bk, w in ((16, 32, 32, 4), (16, 64, 64, 4), (16, 32, 64, 2), (32, 32, 64, 4),
                          (32, 64, 64, 4), (64, 64, 32, 8), (64, 64, 64, 8)):
        out.append(triton.Config({"BLOCK_B": bb, "BLOCK_H": bh, "BLOCK_K": bk}, num_warps=w,
                                 num_stages=2))
    return out


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
