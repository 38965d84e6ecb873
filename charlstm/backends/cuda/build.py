"""Find or build the compiled extension of the cuda backend.

Order: ``charlstm._C`` when ``setup.py`` built it ahead of time; otherwise a JIT build of
``csrc/*.cu`` + ``csrc/*.cpp`` with ``torch.utils.cpp_extension.load`` (ninja), on the first
kernel call -- never at import -- cached in torch's extensions directory
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), so later processes load it
in a second.  Flags come from :mod:`.build_flags` (shared with ``setup.py``).

The sources are looked up in ``CHARLSTM_CSRC`` if set, else in the ``csrc/`` folder next to
the ``charlstm`` package (a source checkout or an editable install).
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Optional

from . import build_flags

EXT_NAME = "charlstm_cuda_ext"
CSRC_ENV = "CHARLSTM_CSRC"

_lock = threading.Lock()
_ext = None


def csrc_dir() -> Path:
    """Where the CUDA/C++ sources are: ``CHARLSTM_CSRC``, else ``<repo>/csrc`` (a checkout or
    an editable install), else the copy a regular install ships in ``charlstm/_csrc``."""
    env = os.environ.get(CSRC_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    repo = here.parents[3] / "csrc"
    if repo.is_dir():
        return repo
    return here.parents[2] / "_csrc"


def sources(directory: Optional[Path] = None) -> list:
    d = csrc_dir() if directory is None else directory
    return sorted(glob.glob(str(d / "*.cu"))) + sorted(glob.glob(str(d / "*.cpp")))


def prebuilt_available() -> bool:
    """True when ``charlstm._C`` (the ahead-of-time build) is installed."""
    try:
        return importlib.util.find_spec("charlstm._C") is not None
    except (ImportError, ValueError):
        return False


def nvcc_path() -> Optional[str]:
    """nvcc from ``CUDA_HOME`` (as torch finds it) or ``PATH``; None if there is none."""
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:  # noqa: BLE001 - torch's lookup itself may fail without CUDA
        CUDA_HOME = None
    if CUDA_HOME:
        cand = os.path.join(CUDA_HOME, "bin", "nvcc")
        if os.path.exists(cand):
            return cand
    return shutil.which("nvcc")


def jit_reason() -> Optional[str]:
    """None when a JIT build can be attempted here, else a sentence saying what is missing."""
    if not sources():
        return (f"no CUDA sources found in {csrc_dir()} (set {CSRC_ENV} to the csrc/ folder of a "
                f"charlstm checkout, or install charlstm with the extension built ahead of time)")
    if nvcc_path() is None:
        return ("nvcc was not found (set CUDA_HOME or put nvcc on PATH) and charlstm._C was not "
                "built ahead of time")
    if shutil.which("ninja") is None:
        try:
            import ninja  # noqa: F401
        except ImportError:
            return "ninja is needed for the JIT build of the CUDA extension (pip install ninja)"
    return None


def build_reason() -> Optional[str]:
    """None when the extension is prebuilt or can be JIT-built, else why not."""
    if prebuilt_available():
        return None
    return jit_reason()


def _jit_build(verbose: bool):
    import torch
    from torch.utils import cpp_extension

    why = jit_reason()
    if why:
        raise RuntimeError(f"charlstm cuda backend: cannot build the CUDA extension: {why}")
    extra = []
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        extra.append(f"{major}.{minor}")
    flags = build_flags.extension_kwargs(extra_archs=extra)["extra_compile_args"]
    print(f"charlstm: compiling the CUDA extension {EXT_NAME} from {csrc_dir()} (first use; "
          f"a few minutes; cached in the torch extensions directory for later runs) ...",
          file=sys.stderr, flush=True)
    ext = cpp_extension.load(name=EXT_NAME, sources=sources(),
                             extra_include_paths=[str(csrc_dir())],
                             extra_cflags=flags["cxx"], extra_cuda_cflags=flags["nvcc"],
                             verbose=verbose)
    print("charlstm: CUDA extension ready.", file=sys.stderr, flush=True)
    return ext


def load_extension(verbose: bool = False):
    """The extension module (``forward``/``backward``), built on first call if needed."""
    global _ext
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is None:
            ext = None
            if prebuilt_available():
                try:
                    ext = importlib.import_module("charlstm._C")
                except ImportError as e:  # e.g. built against another torch: rebuild
                    print(f"charlstm: the prebuilt charlstm._C does not load ({e}); building "
                          f"it just in time instead", file=sys.stderr)
            _ext = ext if ext is not None else _jit_build(verbose)
    return _ext
