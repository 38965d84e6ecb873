"""Compile flags of the CUDA extension, in one place for both builds.

Used by ``setup.py`` (ahead of time, ``charlstm._C``; it loads this file by path, so it imports
nothing from the package and nothing but the standard library) and by :mod:`.build` (the JIT
build with ninja on first use).

Target architectures: ``TORCH_CUDA_ARCH_LIST`` when set (torch parses it, names such as
``Hopper`` and ``+PTX`` included); otherwise the ``archs`` the caller names (the JIT build: the
current GPU's) or :data:`DEFAULT_ARCHS` (sm_80, sm_86, sm_89, sm_90; ``setup.py``), passed as
explicit ``-gencode`` flags so that torch does not add its own.  The kernels need
sm_70 or newer (``ld.acquire``, ``__nanosleep``).
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping, Optional

#: architectures compiled when ``TORCH_CUDA_ARCH_LIST`` is not set
DEFAULT_ARCHS = ("8.0", "8.6", "8.9", "9.0")

ARCH_ENV = "TORCH_CUDA_ARCH_LIST"

#: host compiler flags (torch adds the C++ standard and its own defines)
CXX_FLAGS = ["-O3"]
#: nvcc flags; accurate expf/tanhf on purpose (no --use_fast_math: results are compared with
#: the reference backend), -lineinfo for compute-sanitizer and profilers
NVCC_FLAGS = ["-O3", "-lineinfo"]


def gencode_flags(archs: Iterable[str]) -> list:
    """``-gencode`` flags for arch strings like ``"9.0"``; ``"9.0+PTX"`` also embeds PTX."""
    flags = []
    for arch in archs:
        ptx = arch.endswith("+PTX")
        num = arch[:-4] if ptx else arch
        parts = num.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"arch {arch!r}: expected the form '9.0' or '9.0+PTX'")
        cc = parts[0] + parts[1]
        flags.append(f"-gencode=arch=compute_{cc},code=sm_{cc}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{cc},code=compute_{cc}")
    return flags


def extension_kwargs(environ: Optional[Mapping[str, str]] = None,
                     archs: Optional[Iterable[str]] = None) -> dict:
    """``dict(extra_compile_args={"cxx": [...], "nvcc": [...]})`` for the CUDA extension.

    With ``TORCH_CUDA_ARCH_LIST`` set in ``environ`` (default ``os.environ``) no arch flag is
    added and torch's build honours the variable; otherwise ``archs`` (default
    :data:`DEFAULT_ARCHS`) become ``-gencode`` flags.
    """
    env = os.environ if environ is None else environ
    nvcc = list(NVCC_FLAGS)
    if not env.get(ARCH_ENV, "").strip():
        nvcc += gencode_flags(DEFAULT_ARCHS if archs is None else list(dict.fromkeys(archs)))
    return dict(extra_compile_args={"cxx": list(CXX_FLAGS), "nvcc": nvcc})
