"""The cuda backend's recurrent core: the compiled kernels registered as custom ops.

``forward``/``backward`` implement :mod:`charlstm.backends.contract` by calling the extension
(``csrc/bindings.cpp`` -> ``csrc/launch.h``) on the current CUDA stream, with the path the
variant names (:mod:`.paths`; ``""``: a bare ``cuda``'s own choice).  Importing this module
registers the ``charlstm::cuda_core_fwd``/``_bwd`` ops but compiles nothing: the extension is
loaded (or JIT-built) on the first kernel call.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import BackendUnavailable, cell_reason, disabled_variants, record_run
from ..contract import CoreKernels, cell_of, check_core_inputs, make_core_op
from . import build, paths
from .abi import CELL_CODES, DTYPE_CODES


def _check_supported(t: Tensor, name: str) -> None:
    if t.device.type != "cuda":
        raise ValueError(f"charlstm cuda backend: {name} must be a CUDA tensor, got {t.device}")
    if t.dtype not in DTYPE_CODES:
        raise TypeError(f"charlstm cuda backend: dtype {t.dtype} is not supported (expected "
                        f"float32, float16 or bfloat16)")


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def _path(variant: str, t: Tensor) -> int:
    """The launcher's path code for ``variant`` (``""``: :func:`.paths.own_choice`)."""
    if not variant:
        variant = paths.own_choice(t.device, t.dtype, disabled_variants("cuda"))
        if variant is None:
            raise BackendUnavailable("charlstm backend 'cuda': every path is disabled by "
                                     "CHARLSTM_DISABLED_VARIANTS")
    return paths.path_code(variant)


def _cell_code(cell) -> int:
    """The launcher's ``enum charlstm_cell`` code of ``cell`` (a clear error for a cell this
    backend does not implement)."""
    why = cell_reason("cuda", cell)
    if why:
        raise BackendUnavailable(f"charlstm backend 'cuda': {why}")
    return CELL_CODES[cell_of(cell).name]


def forward(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Optional[Tensor],
            lengths: Optional[Tensor], b_hn: Optional[Tensor] = None, cell: str = "lstm",
            variant: str = ""):
    """Contract forward -> (hs, hT, cT, cs, gates) of ``cell``; cs/gates in float32 (cT, cs
    empty for cells without c)."""
    check_core_inputs(xproj, w_hh, h0, c0, lengths, b_hn, cell)
    cell_code = _cell_code(cell)
    _check_supported(xproj, "xproj")
    code = _path(variant, xproj)
    ext = build.load_extension()
    dev = xproj.device
    with torch.cuda.device(dev):  # keywords: the names of csrc/bindings.cpp's py::arg (tested)
        hs, hT, cT, cs, gates, used = ext.forward(
            xproj=xproj.contiguous(), w_hh=w_hh.contiguous(), h0=h0.contiguous(),
            c0=_contiguous(c0), lengths=_contiguous(lengths), b_hn=_contiguous(b_hn),
            cell=cell_code, stream=torch.cuda.current_stream(dev).cuda_stream, path=code)
    record_run("forward", paths.ran_name(used))
    return hs, hT, cT, cs, gates


def backward(dhs: Tensor, dhT: Tensor, dcT: Optional[Tensor], w_hh: Tensor, h0: Tensor,
             c0: Optional[Tensor], hs: Tensor, cs: Tensor, gates: Tensor,
             lengths: Optional[Tensor], cell: str = "lstm", variant: str = ""):
    """Contract backward -> (dgates, dh0, dc0) of ``cell`` (dc0 empty for cells without c)."""
    cell_code = _cell_code(cell)
    _check_supported(w_hh, "w_hh")
    code = _path(variant, w_hh)
    ext = build.load_extension()
    dev = dhs.device
    with torch.cuda.device(dev):
        dgates, dh0, dc0, used = ext.backward(
            dhs=dhs.contiguous(), dhT=dhT.contiguous(), dcT=_contiguous(dcT),
            w_hh=w_hh.contiguous(), h0=h0.contiguous(), c0=_contiguous(c0), hs=hs.contiguous(),
            cs=cs.contiguous(), gates=gates.contiguous(), lengths=_contiguous(lengths),
            cell=cell_code, stream=torch.cuda.current_stream(dev).cuda_stream, path=code)
    record_run("backward", paths.ran_name(used))
    return dgates, dh0, dc0


kernels = CoreKernels(forward, backward)
core = make_core_op("cuda_core", kernels, device_types="cuda")
