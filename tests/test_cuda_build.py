"""CPU tests of how the cuda backend's extension is built (no GPU, no CUDA torch needed).

* The CUDA runtime lookup (``charlstm/backends/cuda/build_toolkit.py``) on fake layouts: a
  ``CUDA_HOME`` without libcudart next to a runtime wheel that has only the versioned
  ``libcudart.so.13`` -- the layout where ``-lcudart`` failed to link with torch 2.11+cu130 --
  reproduced with real ``g++`` links; the toolkit's ``targets/*/lib``; torch's loaded copy
  first; other major versions skipped; a plain message when nothing is found.
* ``setup.py`` and the JIT build pass that runtime to the link; the JIT build compiles one
  architecture; a lock left by a killed build is removed (``build.clear_stale_lock``).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charlstm.backends.cuda import build, build_toolkit

ROOT = Path(__file__).resolve().parents[1]
CXX = shutil.which("g++") or shutil.which("c++")
needs_cxx = pytest.mark.skipif(CXX is None, reason="needs a host C++ compiler to link")


def _fake_cudart(folder: Path, major: int = 13, unversioned: bool = False) -> Path:
    """A real shared library named like the CUDA runtime (soname libcudart.so.<major>)."""
    folder.mkdir(parents=True, exist_ok=True)
    lib = folder / f"libcudart.so.{major}"
    if CXX is None:
        lib.write_bytes(b"")
    else:
        src = folder / "cudart_fake.cpp"
        src.write_text(f'extern "C" int charlstm_fake_cuda_runtime() {{ return {major}; }}\n')
        subprocess.run([CXX, "-shared", "-fPIC", f"-Wl,-soname,libcudart.so.{major}", str(src),
                        "-o", str(lib)], check=True, capture_output=True)
        src.unlink()
    if unversioned:
        (folder / "libcudart.so").symlink_to(lib.name)
    return lib


def _layout(tmp_path: Path):
    """CUDA_HOME with an empty lib64 (torch's -L) and a site folder whose CUDA 13 runtime
    wheel has only the versioned name."""
    home = tmp_path / "cuda_home"
    (home / "lib64").mkdir(parents=True)
    site = tmp_path / "site"
    lib = _fake_cudart(site / "nvidia" / "cu13" / "lib")
    return home, site, lib


def _find_kwargs(home, site):
    return dict(cuda_home=str(home), nvcc=None, sites=[site], use_loaded=False, environ={},
                fallback_root=None)


def _link(tmp_path: Path, ldflags) -> subprocess.CompletedProcess:
    """Link a shared object the way torch's extension build does: ...ldflags -L$CUDA_HOME/lib64
    -lcudart."""
    obj = tmp_path / "ext.cpp"
    obj.write_text('extern "C" int charlstm_fake_cuda_runtime();\n'
                   'int call() { return charlstm_fake_cuda_runtime(); }\n')
    return subprocess.run([CXX, "-shared", "-fPIC", str(obj), "-o", str(tmp_path / "ext.so"),
                           *ldflags, f"-L{tmp_path / 'cuda_home' / 'lib64'}", "-lcudart"],
                          capture_output=True, text=True)


def _dynamic_section(so: Path) -> str:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf not found")
    return subprocess.run([readelf, "-d", str(so)], capture_output=True, text=True).stdout


@needs_cxx
def test_versioned_only_runtime_wheel_links(tmp_path):
    """The torch 2.11+cu130 layout: -L$CUDA_HOME/lib64 -lcudart cannot link; with the found
    runtime's flags first it links against libcudart.so.13 and records the wheel's folder."""
    home, site, lib = _layout(tmp_path)
    res = _link(tmp_path, [])
    assert res.returncode != 0 and "cudart" in res.stderr     # the failure the issue reports
    link = build_toolkit.cudart_link(tmp_path / "link", major=13, **_find_kwargs(home, site))
    assert link.library == lib and link.rpath == lib.parent
    assert (link.library_dir / "libcudart.so").resolve() == lib.resolve()
    res = _link(tmp_path, link.ldflags)
    assert res.returncode == 0, res.stderr
    dyn = _dynamic_section(tmp_path / "ext.so")
    assert "[libcudart.so.13]" in dyn and str(lib.parent) in dyn
    # a second build reuses the link folder
    again = build_toolkit.cudart_link(tmp_path / "link", major=13, **_find_kwargs(home, site))
    assert again.library_dir == link.library_dir


def test_toolkit_targets_folder_and_unversioned_name(tmp_path):
    home = tmp_path / "cuda_home"
    lib = _fake_cudart(home / "targets" / "x86_64-linux" / "lib", unversioned=True)
    found = build_toolkit.find_cudart(13, **_find_kwargs(home, tmp_path / "nosite"))
    assert found.path == lib.parent / "libcudart.so"                      # -lcudart's own name
    link = build_toolkit.cudart_link(tmp_path / "link", major=13, **_find_kwargs(home, tmp_path))
    assert link.library_dir == lib.parent and not (tmp_path / "link").exists()


def test_runtime_loaded_by_torch_comes_first(tmp_path):
    home, site, _ = _layout(tmp_path)
    torch_lib = _fake_cudart(tmp_path / "torch_libs")
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f10 r-xp 00000000 08:01 42   /usr/lib/libc.so.6\n"
                    f"7f20-7f30 r-xp 00000000 08:01 43   {torch_lib}\n")
    loaded = build_toolkit.loaded_cudart(str(maps))
    assert loaded == torch_lib
    kw = dict(_find_kwargs(home, site), use_loaded=True, loaded=loaded)
    found = build_toolkit.find_cudart(13, **kw)
    assert found.path == torch_lib and found.how == "loaded"
    assert build_toolkit.find_cudart(12, **kw).path is None                 # wrong major: skipped


def test_other_major_versions_are_skipped_and_the_message_says_where_it_looked(tmp_path):
    home = tmp_path / "cuda_home"
    _fake_cudart(home / "lib64", major=12, unversioned=True)
    site = tmp_path / "site"
    (site / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    with pytest.raises(build_toolkit.CudartNotFound) as err:
        build_toolkit.cudart_link(tmp_path / "link", major=13, **_find_kwargs(home, site))
    msg = str(err.value)
    assert "libcudart.so.13" in msg and "CUDA 13" in msg
    assert str(home / "lib64") in msg and str(site / "nvidia" / "cu13" / "lib") in msg
    assert "Found only other versions" in msg and "libcudart.so.12" in msg


def test_headers_from_a_wheel_layout(tmp_path):
    """The emulator's headers where only the CUDA wheels keep them (split over packages)."""
    site = tmp_path / "site"
    spread = {"cu13": ["cuda_runtime.h", "cuda_fp16.h"], "cuda_bf16x": ["cuda_bf16.h"]}
    for pkg, names in spread.items():
        inc = site / "nvidia" / pkg / "include"
        inc.mkdir(parents=True)
        for n in names:
            (inc / n).write_text("")
    found = build_toolkit.find_cuda_headers(nvcc=None, cuda_home=None, sites=[site], environ={},
                                            fallback_root=None)
    assert found.ok and set(found.dirs) == {site / "nvidia" / "cu13" / "include",
                                            site / "nvidia" / "cuda_bf16x" / "include"}
    empty = build_toolkit.find_cuda_headers(nvcc=None, cuda_home=str(tmp_path), sites=[],
                                            environ={}, fallback_root=None)
    assert not empty.ok and empty.missing == list(build_toolkit.EMULATOR_HEADERS)


def test_nvcc_dryrun_is_parsed(tmp_path):
    """nvcc's own answer for its folders, here from a stand-in printing nvcc 13's -dryrun."""
    fake = tmp_path / "nvcc"
    fake.write_text("#!/bin/sh\ncat >&2 <<'EOF'\n"
                    "#$ TOP=/opt/cuda/bin/..\n"
                    '#$ INCLUDES="-I/opt/cuda/bin/../targets/x86_64-linux/include"  \n'
                    '#$ SYSTEM_INCLUDES="-isystem" '
                    '"/opt/cuda/bin/../targets/x86_64-linux/include/cccl"  \n'
                    '#$ LIBRARIES=  "-L/opt/cuda/bin/../targets/x86_64-linux/lib/stubs" '
                    '"-L/opt/cuda/bin/../targets/x86_64-linux/lib"\n'
                    "EOF\n")
    fake.chmod(0o755)
    out = build_toolkit.nvcc_dryrun(str(fake))
    assert out["top"] == "/opt/cuda/bin/.."
    assert out["include"] == ["/opt/cuda/bin/../targets/x86_64-linux/include",
                              "/opt/cuda/bin/../targets/x86_64-linux/include/cccl"]
    assert out["lib"] == ["/opt/cuda/bin/../targets/x86_64-linux/lib"]       # not the stubs


# =============================================================== the two builds use it
@needs_cxx
def test_setup_py_links_the_runtime_it_finds(tmp_path, monkeypatch):
    """setup.py (run in a copy of the tree) gives the extension the found runtime's folder
    first and an rpath, so torch's own -L$CUDA_HOME/lib64 -lcudart no longer decides."""
    import setuptools
    from torch.utils import cpp_extension

    home = tmp_path / "cuda_home"
    (home / "lib64").mkdir(parents=True)
    (home / "bin").mkdir()
    (home / "bin" / "nvcc").write_text("#!/bin/sh\nexit 1\n")
    (home / "bin" / "nvcc").chmod(0o755)
    lib = _fake_cudart(home / "targets" / "x86_64-linux" / "lib")     # versioned name only
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "setup.py", tree / "setup.py")
    for d in ("charlstm", "csrc"):
        (tree / d).symlink_to(ROOT / d)
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(home))
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: str(home / "bin" / name))
    monkeypatch.setenv("CUDA_HOME", str(home))
    monkeypatch.delenv("CHARLSTM_NO_CUDA_BUILD", raising=False)
    monkeypatch.chdir(tree)
    exec(compile((tree / "setup.py").read_text(), str(tree / "setup.py"), "exec"),
         {"__name__": "__main__", "__file__": str(tree / "setup.py")})
    (ext,) = captured["ext_modules"]
    first = Path(ext.library_dirs[0])
    assert (first / "libcudart.so").exists(), ext.library_dirs     # -lcudart resolves here
    assert str(home / "lib64") in ext.library_dirs[1:]              # torch's guess comes after
    assert any(a.startswith("-Wl,-rpath,") for a in ext.extra_link_args)
    # the fake toolkit's runtime, or a real CUDA 13 runtime wheel installed here (found first)
    target = (first / "libcudart.so").resolve()
    assert target == lib.resolve() or target.name.startswith("libcudart.so.13"), target


def test_jit_build_one_arch_and_the_found_runtime(tmp_path, monkeypatch):
    home, site, lib = _layout(tmp_path)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(build, "_torch_cuda_home", lambda: str(home))
    monkeypatch.setattr(build, "nvcc_path", lambda: None)
    monkeypatch.setattr(build_toolkit, "site_dirs", lambda: [site])
    monkeypatch.setattr(build_toolkit, "loaded_cudart", lambda: None)
    kw = build.jit_load_kwargs(directory=tmp_path / "ext", environ={}, capability=(9, 0))
    assert kw["build_directory"] == str(tmp_path / "ext")
    archs = [f for f in kw["extra_cuda_cflags"] if "arch" in f]
    assert archs == ["-gencode=arch=compute_90,code=sm_90"]
    assert kw["extra_ldflags"] == [f"-L{tmp_path / 'ext' / 'cudart'}", f"-Wl,-rpath,{lib.parent}"]
    assert (tmp_path / "ext" / "cudart" / "libcudart.so").resolve() == lib.resolve()
    kw = build.jit_load_kwargs(directory=tmp_path / "ext", environ={"TORCH_CUDA_ARCH_LIST": "9.0"},
                               capability=(9, 0))
    assert not [f for f in kw["extra_cuda_cflags"] if "arch" in f]   # torch honours the variable
    assert build.jit_archs(environ={}, capability=(8, 6)) == ["8.6"]


# =============================================================== stale lock
def _owner(d: Path, pid: int, host=None) -> Path:
    f = d / f"charlstm_build.{host or socket.gethostname()}.{pid}"
    f.write_text("")
    return f


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_clear_stale_lock(tmp_path):
    lock = tmp_path / "lock"
    assert build.clear_stale_lock(tmp_path) is None                  # no lock: nothing to do
    lock.write_text("")
    dead = _owner(tmp_path, _dead_pid())
    assert build.clear_stale_lock(tmp_path) == lock                  # its builder was killed
    assert not lock.exists() and not dead.exists()
    lock.write_text("")
    live = _owner(tmp_path, os.getpid())
    assert build.clear_stale_lock(tmp_path) is None and lock.exists()  # a live build holds it
    live.unlink()
    other = _owner(tmp_path, 1, host="another-host")
    assert build.clear_stale_lock(tmp_path) is None and lock.exists()  # cannot tell: kept
    other.unlink()
    assert build.clear_stale_lock(tmp_path) == lock                  # nobody recorded: stale


def test_jit_build_clears_a_stale_lock_and_records_itself(tmp_path, monkeypatch):
    from torch.utils import cpp_extension

    (tmp_path / "lock").write_text("")
    _owner(tmp_path, _dead_pid())
    seen = {}

    def fake_load(**kw):
        seen["lock"] = (tmp_path / "lock").exists()
        seen["owners"] = [f.name for f in tmp_path.glob("charlstm_build.*")]
        raise RuntimeError("compile failed")

    monkeypatch.setattr(build, "jit_reason", lambda: None)
    monkeypatch.setattr(build, "build_directory", lambda: tmp_path)
    monkeypatch.setattr(build, "jit_load_kwargs", lambda verbose, directory: {})
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    with pytest.raises(RuntimeError, match="compile failed"):
        build._jit_build(verbose=False)
    me = f"charlstm_build.{socket.gethostname()}.{os.getpid()}"
    assert seen == {"lock": False, "owners": [me]}
    assert not list(tmp_path.glob("charlstm_build.*"))               # removed even on failure
