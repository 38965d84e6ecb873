"""The cuda backend's variants (``cuda:<path>``) and a bare ``cuda``'s own choice.

* ``persistent_tc``: the persistent path with the matmul of both directions on tensor cores
  (WMMA, float16 and bfloat16 only; float32 runs ``persistent``, and :func:`charlstm.backends.
  last_run` says so).  Forcing it for a shape whose layout does not fit raises ``RuntimeError``.
* ``persistent``: one cooperative launch per layer and direction for the whole sequence, each
  block keeping its slice of ``W_hh`` in shared memory, one grid barrier per step.  Forcing it
  for a shape whose grid cannot be co-resident raises ``RuntimeError`` with the reason.
* ``stepwise``: one fused (matmul + cell update) launch per time step from a host loop,
  ``W_hh`` read from L2; works for every size, and is capturable in a CUDA graph.

A bare ``cuda`` (variant ``""``) passes the launcher's ``auto`` path, which decides per
direction and call: ``persistent_tc`` for float16/bfloat16 with batch >= 8
(``CHARLSTM_TC_MIN_BATCH`` in ``csrc/launch.h``, an estimate from arithmetic, not measured)
when its layout fits, else ``persistent`` when it fits on the device, else ``stepwise``
(:func:`own_choice` for what happens when variants are disabled).
"""
from __future__ import annotations

from typing import Optional

from .. import _REGISTRY, legacy_choice
from .abi import PATH_CODES, PATH_NAMES

#: the paths, in the registry's order (``cuda:persistent_tc``, ...)
VARIANTS: tuple = _REGISTRY["cuda"].variants

#: CHARLSTM_CUDA_PATH (no longer read per call): warned about once, mapped to own_choice
_LEGACY = legacy_choice("CHARLSTM_CUDA_PATH", "cuda")


def own_choice(device=None, dtype=None, disabled: frozenset = frozenset()) -> Optional[str]:
    """The variant a bare ``cuda`` runs: ``""`` (the launcher's ``auto``) unless variants are
    ``disabled`` (or the old ``CHARLSTM_CUDA_PATH`` names one).  The launcher cannot be told to
    leave one path out of ``auto``, so then a fixed path: with ``persistent`` disabled,
    ``stepwise`` (``persistent_tc`` shares its grid barrier and runs it for float32); with
    ``persistent_tc`` disabled, ``persistent`` (no fallback: a shape it cannot hold raises);
    with ``stepwise`` disabled, ``persistent_tc`` (also no fallback).  None when nothing is
    left."""
    if _LEGACY is not None and _LEGACY not in disabled:
        return _LEGACY
    if not disabled:
        return ""
    if "persistent" in disabled:
        order = ("stepwise",)
    elif "persistent_tc" in disabled:
        order = ("persistent", "stepwise")
    else:
        order = ("persistent_tc", "persistent")
    return next((v for v in order if v not in disabled), None)


def path_code(variant: str) -> int:
    """The launcher's ``enum charlstm_path`` code for ``variant`` (``""``: ``auto``)."""
    if variant and variant not in VARIANTS:
        raise ValueError(f"cuda backend: unknown variant {variant!r}, expected one of "
                         f"{', '.join(VARIANTS)} (or '' for the backend's own choice)")
    return PATH_CODES[variant or "auto"]


def ran_name(code: int) -> str:
    """The concrete name of the path the launcher reports it ran (``"cuda:persistent"``)."""
    return f"cuda:{PATH_NAMES.get(code, 'none')}"
