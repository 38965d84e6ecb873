"""Build script: pure Python unless the installed torch has CUDA and nvcc is found.

The CUDA extension (``charlstm._C``) is compiled ahead of time only when
``torch.version.cuda`` is set and ``nvcc`` is available; otherwise the package
installs as pure Python and the ``cuda`` backend JIT-compiles on first use (or
reports why it cannot).  torch is never listed as a build requirement, so pip
never downloads another torch: build with ``--no-build-isolation`` to compile
against the torch you have.
"""
import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py


class build_py_with_csrc(build_py):
    """Also ship csrc/ inside the package (charlstm/_csrc), so that a non-editable install
    on a CUDA machine can JIT-build the extension from the sources it came with."""

    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, "charlstm", "_csrc")
        os.makedirs(dest, exist_ok=True)
        for pattern in ("*.cu", "*.cuh", "*.h", "*.cpp"):
            for src in glob.glob(os.path.join("csrc", pattern)):
                self.copy_file(src, os.path.join(dest, os.path.basename(src)))


def _cuda_extension_kwargs():
    if os.environ.get("CHARLSTM_NO_CUDA_BUILD", "0") == "1":
        return {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # build isolation without torch: pure Python
        return {}
    if torch.version.cuda is None:
        return {}
    nvcc = shutil.which("nvcc") or (
        cpp_extension.CUDA_HOME and os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
    if not nvcc or not os.path.exists(nvcc):
        return {}
    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join("csrc", "*.cu"))
                     + glob.glob(os.path.join("csrc", "*.cpp")))
    if not sources:
        return {}
    # The compile flags live in one place, shared with the JIT build.
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_charlstm_build_flags",
        os.path.join(here, "charlstm", "backends", "cuda", "build_flags.py"))
    flags = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flags)
    extension_kwargs = flags.extension_kwargs
    ext = cpp_extension.CUDAExtension(
        name="charlstm._C", sources=sources, include_dirs=[os.path.join(here, "csrc")],
        **extension_kwargs())
    return {"ext_modules": [ext],
            "cmdclass": {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}}


_kwargs = _cuda_extension_kwargs()
_kwargs.setdefault("cmdclass", {})["build_py"] = build_py_with_csrc
setup(**_kwargs)
