"""Find or build the compiled extension of the cuda backend.

Order: ``charlstm._C`` when ``setup.py`` built it ahead of time; otherwise a JIT build of
``csrc/*.cu`` + ``csrc/*.cpp`` with ``torch.utils.cpp_extension.load`` (ninja), on the first
kernel call -- never at import -- cached in torch's extensions directory
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), so later processes load it
in a second.  Flags come from :mod:`.build_flags` (shared with ``setup.py``); the JIT build
compiles for one architecture (``TORCH_CUDA_ARCH_LIST`` when set, else the current GPU's) and
links the CUDA runtime torch uses, wherever it is (:mod:`.build_toolkit`).

A build killed half way leaves torch's lock file in the build folder, and every later build
would wait on it for ever: :func:`clear_stale_lock` removes it when the charlstm build that
took it is gone (each build records its process id beside the lock), and runs before every
JIT build.

The sources are looked up in ``CHARLSTM_CSRC`` if set, else in the ``csrc/`` folder next to
the ``charlstm`` package (a source checkout or an editable install).
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import shutil
import socket
import sys
import threading
from pathlib import Path
from typing import Optional

from . import build_flags, build_toolkit

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
    CUDA_HOME = _torch_cuda_home()
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


def build_directory() -> Path:
    """The folder torch builds the JIT extension in (created if missing):
    ``$TORCH_EXTENSIONS_DIR/charlstm_cuda_ext`` or torch's default cache folder."""
    from torch.utils import cpp_extension
    try:
        return Path(cpp_extension._get_build_directory(EXT_NAME, verbose=False))
    except AttributeError:  # a torch without the private helper
        root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
        d = Path(root) / EXT_NAME
        d.mkdir(parents=True, exist_ok=True)
        return d


_OWNER_PREFIX = "charlstm_build."


def _owner_file(directory: Path) -> Path:
    return directory / f"{_OWNER_PREFIX}{socket.gethostname()}.{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clear_stale_lock(directory=None) -> Optional[Path]:
    """Remove torch's build lock (``<build folder>/lock``) when no live charlstm build holds
    it, i.e. when every build that recorded itself beside the lock (``charlstm_build.<host>.<pid>``
    files) has died, or none did.  Owners on another host count as alive.  Returns the path
    removed, or None.  Safe to call before any build; the GPU check calls it after a killed
    build step."""
    d = build_directory() if directory is None else Path(directory)
    lock = d / "lock"
    if not lock.exists():
        return None
    host = socket.gethostname()
    alive = False
    for f in d.glob(_OWNER_PREFIX + "*"):
        owner_host, _, pid = f.name[len(_OWNER_PREFIX):].rpartition(".")
        if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            f.unlink(missing_ok=True)
        else:
            alive = True
    if alive:
        return None
    lock.unlink(missing_ok=True)
    return lock


def jit_archs(environ=None, capability=None) -> Optional[list]:
    """The architectures of a JIT build: None when ``TORCH_CUDA_ARCH_LIST`` is set (torch honours
    it), else the current GPU's (``capability``, default torch's answer), else the defaults."""
    env = os.environ if environ is None else environ
    if env.get(build_flags.ARCH_ENV, "").strip():
        return None
    if capability is None:
        import torch
        if torch.cuda.is_available():
            capability = torch.cuda.get_device_capability()
    if capability is not None:
        return [f"{capability[0]}.{capability[1]}"]
    return list(build_flags.DEFAULT_ARCHS)


def jit_load_kwargs(verbose: bool = False, directory=None, environ=None, capability=None) -> dict:
    """The keyword arguments of ``torch.utils.cpp_extension.load`` for the JIT build."""
    import torch

    d = build_directory() if directory is None else Path(directory)
    archs = jit_archs(environ, capability)
    flags = build_flags.extension_kwargs(environ=environ, archs=archs)["extra_compile_args"]
    major = build_toolkit.cuda_major(torch.version.cuda)
    link = build_toolkit.cudart_link(d / "cudart", major=major, cuda_home=_torch_cuda_home(),
                                     nvcc=nvcc_path(), environ=environ)
    return dict(name=EXT_NAME, sources=sources(), extra_include_paths=[str(csrc_dir())],
                extra_cflags=flags["cxx"], extra_cuda_cflags=flags["nvcc"],
                extra_ldflags=link.ldflags, build_directory=str(d), verbose=verbose)


def _torch_cuda_home() -> Optional[str]:
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:  # noqa: BLE001 - torch's lookup itself may fail without CUDA
        return None
    return CUDA_HOME


def _jit_build(verbose: bool):
    from torch.utils import cpp_extension

    why = jit_reason()
    if why:
        raise RuntimeError(f"charlstm cuda backend: cannot build the CUDA extension: {why}")
    d = build_directory()
    removed = clear_stale_lock(d)
    if removed:
        print(f"charlstm: removed a stale build lock {removed} (its build was killed)",
              file=sys.stderr, flush=True)
    try:
        kwargs = jit_load_kwargs(verbose, directory=d)
    except build_toolkit.CudartNotFound as e:
        raise RuntimeError(f"charlstm cuda backend: cannot build the CUDA extension: {e}") from None
    print(f"charlstm: compiling the CUDA extension {EXT_NAME} from {csrc_dir()} (first use; "
          f"a few minutes; cached in {d} for later runs) ...", file=sys.stderr, flush=True)
    owner = _owner_file(d)
    owner.write_text("")
    try:
        ext = cpp_extension.load(**kwargs)
    finally:
        owner.unlink(missing_ok=True)
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
