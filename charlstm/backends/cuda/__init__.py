"""The ``cuda`` backend: persistent fused recurrent kernels in CUDA C++ (``csrc/``), for every
cell of the contract (LSTM, GRU, vanilla RNN with tanh or relu; the cell is a compile-time
parameter of one kernel skeleton).

``auto`` never picks this backend; ask for it with ``backend="cuda"`` (the launcher's own
choice per call) or a variant, ``cuda:persistent_tc|persistent|stepwise`` (:mod:`.paths`).
:func:`charlstm.backends.last_run` says which path the last forward/backward ran.

Exposes what the registry (:mod:`charlstm.backends`) expects of a kernel backend:

* ``VARIANTS`` and ``own_choice(device, dtype, disabled)`` (:mod:`.paths`);
* ``variant_reason(variant, device, dtype)`` -- None when it can run, else a sentence saying why
  (e.g. "torch ... was built without CUDA", "no CUDA device is available", a CPU tensor,
  float64);
* ``core(xproj, w_hh, h0, c0, lengths, variant, *, cell, b_hn) -> (hs, hT, cT)`` -- the
  differentiable recurrent core (the ``charlstm::cuda_core_fwd``/``_bwd`` custom ops,
  :mod:`.ops`).  Only defined where the backend can run; elsewhere reading it raises
  ``BackendUnavailable`` with the reason.

Importing this package never compiles and never raises on a machine without CUDA; the
extension is loaded, or JIT-built with ninja, on the first kernel call (:mod:`.build`).
Design and build notes: ``docs/cuda.md``.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import BackendUnavailable
from .availability import SUPPORTED_DTYPES, global_reason, unavailable_reason
from .paths import VARIANTS, own_choice, path_code

__all__ = ["core", "VARIANTS", "variant_reason", "own_choice", "unavailable_reason",
           "SUPPORTED_DTYPES"]


def variant_reason(variant: str, device: Optional[torch.device] = None,
                   dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None if path ``variant`` (``""``: the launcher's choice) can run for ``device``/``dtype``
    (either may be None), else a sentence saying why.  Every path runs wherever the backend
    does (a forced persistent path on a shape it cannot hold fails at launch, with the reason)."""
    path_code(variant)          # a clear error for an unknown variant
    return unavailable_reason(device, dtype)


if global_reason() is None:
    from .ops import core  # registers the custom ops; compiles nothing yet


def __getattr__(name: str):
    if name == "core":  # only reached where the backend cannot run
        raise BackendUnavailable(f"charlstm backend 'cuda' is unavailable: {global_reason()}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
