"""Where the pieces of the CUDA toolkit are: its headers and the CUDA runtime library to link.

Used by ``setup.py`` (which loads this file by path: standard library only, nothing from the
package), by :mod:`.build` (the JIT build) and by the tests (the host emulator's headers).

Why: torch's extension build links with ``-L$CUDA_HOME/lib64 -lcudart``, where torch guesses
``CUDA_HOME`` as the folder above ``nvcc``.  A toolkit assembled from pip wheels, or an
``nvcc`` reached through a wrapper script (``/usr/local/bin/nvcc``), has no
``libcudart.so`` there, and the runtime torch itself loads may exist only under its
versioned name (``nvidia/cu13/lib/libcudart.so.13`` of the ``nvidia-cuda-runtime`` wheel),
which ``-lcudart`` cannot find.  So the build looks for the runtime where torch finds it:

1. the ``libcudart`` already loaded in this process (torch's own, after ``import torch``);
2. the ``nvidia`` runtime wheels next to the installed packages
   (``nvidia/cu<major>/lib``, ``nvidia/cuda_runtime/lib``, any ``nvidia/*/lib``);
3. the toolkit: ``CUDA_HOME`` / ``CUDA_PATH``, the folder above the real ``nvcc`` and the
   library folders ``nvcc -dryrun`` reports (``lib64``, ``lib``, ``targets/*/lib``), and
   ``/usr/local/cuda``.

A file counts when its major version is the one torch was built with (``torch.version.cuda``).
When only a versioned name exists, :func:`cudart_link` makes a private folder holding a
``libcudart.so`` link to it, so that torch's own ``-lcudart`` resolves there (``-L`` folders
are searched in order and ours come first), and adds an rpath to the real folder.
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

#: headers the host emulator (and any host compile of the device code) needs
EMULATOR_HEADERS = ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h")

_CUDART_RE = re.compile(r"^libcudart\.so(\.(\d+))?(\.[\d.]+)?$")


class CudartNotFound(RuntimeError):
    """The CUDA runtime library to link against was not found; the message says where it
    looked."""


# ---------------------------------------------------------------- where to look
def _unique_dirs(paths: Iterable) -> list[Path]:
    seen, out = set(), []
    for p in paths:
        if not p:
            continue
        p = Path(p)
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def site_dirs() -> list[Path]:
    """Folders that hold installed packages (where the ``nvidia`` wheels go)."""
    cands = []
    try:
        cands += site.getsitepackages()
    except AttributeError:  # some virtualenvs
        pass
    try:
        cands.append(site.getusersitepackages())
    except AttributeError:
        pass
    cands += [p for p in sys.path if p]
    return [p for p in _unique_dirs(cands) if p.is_dir()]


def nvcc_dryrun(nvcc: Optional[str]) -> dict:
    """The folders ``nvcc -dryrun`` reports: ``{"include": [...], "lib": [...], "top": path}``
    (empty when there is no nvcc or it fails).  This is how nvcc itself finds its headers and
    libraries, whatever wrapper or layout leads to it."""
    out = {"include": [], "lib": [], "top": None}
    if not nvcc:
        return out
    try:
        res = subprocess.run([nvcc, "-dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return out
    for line in (res.stdout + res.stderr).splitlines():
        m = re.match(r"#\$ (\w+)=(.*)$", line.strip())
        if not m:
            continue
        key, value = m.groups()
        if key == "TOP":
            out["top"] = value.strip()
        elif key in ("INCLUDES", "SYSTEM_INCLUDES", "LIBRARIES"):
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            for i, w in enumerate(words):
                if key == "LIBRARIES" and w.startswith("-L") and len(w) > 2:
                    if not w.rstrip("/").endswith("stubs"):
                        out["lib"].append(w[2:])
                elif w.startswith("-I") and len(w) > 2:
                    out["include"].append(w[2:])
                elif w == "-isystem" and i + 1 < len(words):
                    out["include"].append(words[i + 1])
    return out


DEFAULT_ROOT = "/usr/local/cuda"


def toolkit_roots(cuda_home: Optional[str] = None, nvcc: Optional[str] = None,
                  environ: Optional[dict] = None,
                  fallback_root: Optional[str] = DEFAULT_ROOT) -> list[Path]:
    """Candidate toolkit folders: ``cuda_home`` (torch's guess), ``CUDA_HOME``/``CUDA_PATH``,
    the folder above the real nvcc (symlinks resolved) and what ``nvcc -dryrun`` calls TOP,
    then ``fallback_root``."""
    env = os.environ if environ is None else environ
    cands = [cuda_home, env.get("CUDA_HOME"), env.get("CUDA_PATH")]
    if nvcc:
        cands.append(Path(nvcc).resolve().parent.parent)
        top = nvcc_dryrun(nvcc)["top"]
        if top:
            cands.append(Path(top).resolve())
    cands.append(fallback_root)
    return [p for p in _unique_dirs(cands) if p.is_dir()]


def _wheel_dirs(sites: Sequence[Path], kind: str, major: Optional[int]) -> list[Path]:
    """``nvidia/<package>/<kind>`` folders of the CUDA wheels in ``sites``: the CUDA 13 layout
    (``nvidia/cu13/lib``) and the older one (``nvidia/cuda_runtime/lib``) first."""
    out = []
    for s in sites:
        base = Path(s) / "nvidia"
        if not base.is_dir():
            continue
        first = [f"cu{major}"] if major else []
        first.append("cuda_runtime")
        out += [base / name / kind for name in first]
        out += sorted(Path(p) for p in glob.glob(str(base / "*" / kind)))
    return [p for p in _unique_dirs(out) if p.is_dir()]


def _toolkit_dirs(roots: Sequence[Path], kind: str) -> list[Path]:
    out = []
    for r in roots:
        names = ["lib64", "lib"] if kind == "lib" else ["include"]
        out += [r / n for n in names]
        out += sorted(Path(p) for p in glob.glob(str(r / "targets" / "*" / kind)))
    return [p for p in _unique_dirs(out) if p.is_dir()]


# ---------------------------------------------------------------- headers
@dataclass
class HeaderLookup:
    dirs: list[Path]      #: folders to pass with -I, in order
    tried: list[Path]     #: every folder looked at
    missing: list[str]    #: headers of EMULATOR_HEADERS found in none of them

    @property
    def ok(self) -> bool:
        return not self.missing


def find_cuda_headers(nvcc: Optional[str] = None, cuda_home: Optional[str] = None,
                      sites: Optional[Sequence[Path]] = None, environ: Optional[dict] = None,
                      fallback_root: Optional[str] = DEFAULT_ROOT) -> HeaderLookup:
    """The include folders of the CUDA toolkit or of the CUDA wheels: what ``nvcc -dryrun``
    reports, the toolkit roots' ``include`` and ``targets/*/include``, and the ``nvidia``
    wheels' ``include`` folders.  Folders holding any of the CUDA headers are kept (a wheel
    layout spreads them over several)."""
    sites = site_dirs() if sites is None else sites
    roots = toolkit_roots(cuda_home, nvcc, environ, fallback_root)
    tried = _unique_dirs([Path(p) for p in nvcc_dryrun(nvcc)["include"]]
                         + _toolkit_dirs(roots, "include") + _wheel_dirs(sites, "include", None))
    dirs = [d for d in tried if d.is_dir() and (
        any((d / h).exists() for h in EMULATOR_HEADERS) or (d / "crt" / "host_defines.h").exists())]
    missing = [h for h in EMULATOR_HEADERS if not any((d / h).exists() for d in dirs)]
    return HeaderLookup(dirs=dirs, tried=tried, missing=missing)


# ---------------------------------------------------------------- the runtime library
def cuda_major(version: Optional[str]) -> Optional[int]:
    """13 for torch.version.cuda == "13.0"; None when unknown."""
    if not version:
        return None
    m = re.match(r"(\d+)", str(version))
    return int(m.group(1)) if m else None


def _file_major(path: Path) -> Optional[int]:
    """The major version of a libcudart file, from its name or (an unversioned link) its
    target's name."""
    for name in (path.name, Path(os.path.realpath(path)).name):
        m = _CUDART_RE.match(name)
        if m and m.group(2):
            return int(m.group(2))
    return None


def loaded_cudart(maps: str = "/proc/self/maps") -> Optional[Path]:
    """The libcudart shared library mapped into this process (torch's, once torch with CUDA is
    imported), or None (not Linux, or not loaded)."""
    try:
        text = Path(maps).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6:
            p = Path(parts[5].strip())
            if _CUDART_RE.match(p.name) and p.exists():
                return p
    return None


@dataclass
class CudartLookup:
    path: Optional[Path]                             #: the library file to link, or None
    how: str = ""                                    #: "loaded" or the folder it came from
    tried: list[Path] = field(default_factory=list)  #: folders looked in, in order
    rejected: list[str] = field(default_factory=list)  #: files of another major version

    def explain(self, major: Optional[int]) -> str:
        want = f"libcudart.so.{major} (the CUDA {major} runtime torch uses)" if major \
            else "libcudart.so*"
        lines = [f"cannot find the CUDA runtime library {want} to link the charlstm extension "
                 f"against. Looked for a libcudart loaded in this process (none), then in:"]
        lines += [f"  {d}" for d in self.tried] or ["  (no candidate folder exists)"]
        if self.rejected:
            lines.append("Found only other versions: " + ", ".join(self.rejected))
        lines.append("Set CUDA_HOME to a CUDA toolkit of that version (with lib64/libcudart.so), "
                     "or install the CUDA runtime wheel torch depends on (e.g. "
                     "nvidia-cuda-runtime for CUDA 13, nvidia-cuda-runtime-cu12 for CUDA 12).")
        return "\n".join(lines)


def find_cudart(major: Optional[int] = None, cuda_home: Optional[str] = None,
                nvcc: Optional[str] = None, sites: Optional[Sequence[Path]] = None,
                loaded: Optional[Path] = None, use_loaded: bool = True,
                environ: Optional[dict] = None,
                fallback_root: Optional[str] = DEFAULT_ROOT) -> CudartLookup:
    """Find the libcudart to link (see the module docstring for the order).  ``major``: the
    CUDA major version torch was built with; files of another major are skipped."""
    if use_loaded:
        loaded = loaded if loaded is not None else loaded_cudart()
        if loaded is not None and (major is None or _file_major(loaded) in (major, None)):
            return CudartLookup(path=loaded, how="loaded")
    sites = site_dirs() if sites is None else sites
    dirs = _unique_dirs(_wheel_dirs(sites, "lib", major)
                        + _toolkit_dirs(toolkit_roots(cuda_home, nvcc, environ, fallback_root),
                                        "lib")
                        + [Path(p) for p in nvcc_dryrun(nvcc)["lib"]])
    dirs = [d for d in dirs if d.is_dir()]
    lookup = CudartLookup(path=None, tried=dirs)
    unknown = None  # an unversioned regular file: used only if nothing better turns up
    for d in dirs:
        # the unversioned name first (what -lcudart wants), then the versioned ones
        files = sorted((p for p in d.iterdir() if _CUDART_RE.match(p.name)),
                       key=lambda p: (p.name != "libcudart.so", p.name))
        for f in files:
            fm = _file_major(f)
            if major is not None and fm is not None and fm != major:
                lookup.rejected.append(str(f))
                continue
            if major is not None and fm is None:
                unknown = unknown or (f, str(d))  # its version cannot be told from its name
                continue
            lookup.path, lookup.how = f, str(d)
            return lookup
    if unknown is not None:
        lookup.path, lookup.how = unknown
    return lookup


@dataclass
class CudartLink:
    library: Path          #: the libcudart file linked
    library_dir: Path      #: the folder to pass with -L (holds a file named libcudart.so)
    rpath: Path            #: the folder of the library, for the loader
    how: str

    @property
    def ldflags(self) -> list[str]:
        return [f"-L{self.library_dir}", f"-Wl,-rpath,{self.rpath}"]


def cudart_link(link_dir, major: Optional[int] = None, **find_kwargs) -> CudartLink:
    """Find libcudart (:func:`find_cudart`) and make ``-lcudart`` resolve to it: its own folder
    when the file is named ``libcudart.so``, else ``link_dir`` holding a ``libcudart.so`` link
    to it.  Raises :class:`CudartNotFound` saying where it looked."""
    found = find_cudart(major=major, **find_kwargs)
    if found.path is None:
        raise CudartNotFound(found.explain(major))
    lib = Path(found.path)
    if lib.name == "libcudart.so":
        return CudartLink(library=lib, library_dir=lib.parent, rpath=lib.parent, how=found.how)
    link_dir = Path(link_dir)
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "libcudart.so"
    if link.is_symlink() or link.exists():
        if os.path.realpath(link) == os.path.realpath(lib):
            return CudartLink(library=lib, library_dir=link_dir, rpath=lib.parent, how=found.how)
        link.unlink()
    try:
        link.symlink_to(lib)
    except OSError:  # no symlinks here: a copy links the same way (its soname is the same)
        shutil.copyfile(lib, link)
    return CudartLink(library=lib, library_dir=link_dir, rpath=lib.parent, how=found.how)
