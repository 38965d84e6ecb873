"""Device and precision choices shared by train / sample / evaluate."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

__all__ = ["resolve_device", "parse_dtype", "check_amp", "autocast", "DTYPES"]

DTYPES = {"float32": None, "fp32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_device(name: Optional[str] = "auto") -> torch.device:
    """``"auto"``/None: ``cuda`` when available, else ``cpu``; otherwise ``torch.device(name)``
    once this torch has shown it can use it.

    A name torch does not know, a device this torch was built without (``mps`` on Linux,
    ``xpu``, ...) or cannot see (``cuda`` without a GPU, ``cuda:3`` on a one-GPU machine), and
    ``meta`` (no data) are a ValueError saying so: ``charlstm train|sample|eval`` report it in
    one line with exit status 2 instead of failing later with a traceback."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"bad --device {name!r}: {str(e).splitlines()[0]}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name!r}: this torch sees no CUDA GPU "
                             f"(torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s), 0 to "
                             f"{torch.cuda.device_count() - 1}")
        return dev
    if dev.type == "meta":
        raise ValueError(f"--device {name!r}: the meta device holds no data; use --device cpu "
                         f"or cuda")
    try:   # any other kind: allocate once, which fails when this torch cannot use it
        torch.empty(1, device=dev)
    except Exception as e:  # noqa: BLE001  (NotImplementedError, AssertionError, ImportError...)
        why = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise ValueError(f"--device {name!r} is not usable with this torch "
                         f"({torch.__version__}): {why}; use --device cpu") from None
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
