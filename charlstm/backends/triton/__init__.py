"""The ``triton`` backend: fused Triton kernels for the recurrent core of every cell (LSTM, GRU,
RNN tanh/relu; the cell is a compile-time parameter of the same two kernels).

Variants (``triton:<schedule>``, :data:`VARIANTS`; each runs the same two kernels, see
:class:`.common.Launch`):

* ``persistent`` -- one launch, hidden tiles spread over co-resident programs that meet at a
  step-flag barrier after every step; the GPU default;
* ``sequence`` -- one launch, each program runs every step for its batch rows and all hidden
  units, no program waits for another; the default under the interpreter;
* ``step`` -- one launch per time step.

A bare ``triton`` runs :func:`own_choice`.  Exposes what the registry
(:mod:`charlstm.backends`) expects of a kernel backend: ``VARIANTS``,
``variant_reason(variant, device, dtype)``, ``own_choice(device, dtype, disabled)`` and
``core(xproj, w_hh, h0, c0, lengths, variant)`` (the ``charlstm::triton_core_fwd``/``_bwd``
custom ops, :mod:`.ops`).

Modules: :mod:`.common` (mode, dtypes, launch choice, pointwise helpers), :mod:`.forward` and
:mod:`.backward` (one kernel each, design in their docstrings), :mod:`.ops` (dispatch and
registration).  float64 runs on the reference kernels (see :mod:`.ops`).  Design and limits
for users: ``docs/triton.md``.
"""
from __future__ import annotations

try:
    import triton  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    from .. import BackendUnavailable
    raise BackendUnavailable(f"triton is not installed ({e})") from None

from .common import INTERPRET
from .ops import VARIANTS, core, own_choice, variant_reason

__all__ = ["core", "variant_reason", "own_choice", "VARIANTS", "INTERPRET"]
