"""Device and precision choices shared by train / sample / evaluate."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

__all__ = ["resolve_device", "parse_dtype", "check_amp", "autocast", "DTYPES"]

DTYPES = {"float32": None, "fp32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_device(name: Optional[str] = "auto") -> torch.device:
    """``"auto"``/None: ``cuda`` when available, else ``cpu``; otherwise ``torch.device(name)``."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"bad --device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: this torch sees no CUDA GPU "
                         f"(torch {torch.__version__}); use --device cpu")
    return dev


def parse_dtype(name: str) -> Optional[torch.dtype]:
    """The autocast dtype for ``--dtype`` (None for float32)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"bad --dtype {name!r}: expected float32, bf16 or fp16") from None


def check_amp(device: torch.device, dtype: Optional[torch.dtype]) -> None:
    """Reduced-precision autocast is a CUDA feature here: torch's CPU LSTM under autocast fails
    (oneDNN: "could not create a primitive descriptor", torch 2.13 CPU), so refuse it early."""
    if dtype is not None and device.type != "cuda":
        raise ValueError(f"--dtype {str(dtype).replace('torch.', '')} (autocast) needs a CUDA "
                         f"device, got {device}; use --dtype float32 on the CPU")


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for a non-float32 dtype, a no-op context otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
