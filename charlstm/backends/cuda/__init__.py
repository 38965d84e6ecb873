"""The ``cuda`` backend: persistent fused LSTM kernels in CUDA C++ (``csrc/``).

Status: compiled for sm_80/sm_90 with warnings as errors, not yet verified on a GPU.
``auto`` never picks this backend; ask for it with ``backend="cuda"``.

Exposes what the registry (:mod:`charlstm.backends`) expects of a kernel backend:

* ``core(xproj, w_hh, h0, c0, lengths) -> (hs, hT, cT)`` -- the differentiable recurrent core
  (the ``charlstm::cuda_core_fwd``/``_bwd`` custom ops, :mod:`.ops`).  Only defined where the
  backend can run; elsewhere reading it raises ``BackendUnavailable`` with the reason;
* ``unavailable_reason(device, dtype)`` -- None when it can run, else a sentence saying why
  (e.g. "torch ... was built without CUDA", "no CUDA device is available", a CPU tensor,
  float64);
* ``STATUS`` -- how far it has been verified.

Choosing the implementation (for benchmarks and tests), see :mod:`.paths`::

    from charlstm.backends import cuda
    cuda.set_path("stepwise")            # or "persistent", "persistent_tc", "auto" (default)
    with cuda.use_path("persistent"):    # this thread, inside the block
        ...
    cuda.last_path()                     # {"forward": "persistent", "backward": ...}

or ``CHARLSTM_CUDA_PATH=persistent|stepwise|persistent_tc|auto`` in the environment.

Importing this package never compiles and never raises on a machine without CUDA; the
extension is loaded, or JIT-built with ninja, on the first kernel call (:mod:`.build`).
Design and build notes: ``docs/cuda.md``.
"""
from __future__ import annotations

from .. import BackendUnavailable
from .availability import SUPPORTED_DTYPES, global_reason, unavailable_reason
from .paths import ENV_VAR as PATH_ENV_VAR
from .paths import PATHS, current_path, last_path, set_path, use_path

__all__ = ["core", "unavailable_reason", "STATUS", "SUPPORTED_DTYPES", "PATHS", "PATH_ENV_VAR",
           "set_path", "use_path", "current_path", "last_path"]

#: how far this backend has been verified (do not claim more until the GPU tests pass)
STATUS = "compiled, not yet verified on a GPU"

if global_reason() is None:
    from .ops import core  # registers the custom ops; compiles nothing yet


def __getattr__(name: str):
    if name == "core":  # only reached where the backend cannot run
        raise BackendUnavailable(f"charlstm backend 'cuda' is unavailable: {global_reason()}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
