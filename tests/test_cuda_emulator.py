"""CPU checks of the cuda backend's device code and launch planning, without a GPU.

* The host emulator (``csrc/emu``): the real kernel bodies of ``csrc/*.cuh`` run with one
  ``std::thread`` per CUDA thread, on the launch plans the launchers themselves compute
  (``csrc/launch_plan.h`` fed with emulated device limits), against a double-precision
  implementation of the contract; its WMMA shim also enforces the WMMA alignment rules and
  conflict-free fragment loads (the padded tile rows).
* The launchers' choice of paths (``choose_paths``), CUDA-graph capture included.
* The PTX of the tensor-core kernels for sm_90a: every fragment load in the ``.shared`` form.

Skipped only where there is no CUDA toolkit at all; where ``nvcc`` or the CUDA headers exist
and the emulator does not build, these tests fail.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from charlstm.backends.contract import CELLS
from charlstm.backends.cuda import build, build_toolkit

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"


def _toolkit():
    nvcc = build.nvcc_path()
    headers = build_toolkit.find_cuda_headers(nvcc=nvcc, cuda_home=build._torch_cuda_home())
    if nvcc is None and not headers.dirs:
        looked = ", ".join(map(str, headers.tried)) or "no candidate folder"
        pytest.skip(f"no CUDA toolkit here: no nvcc (PATH or CUDA_HOME) and no CUDA headers "
                    f"({looked})")
    return nvcc, headers


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """csrc/emu/emu_main.cpp built with the host compiler."""
    nvcc, headers = _toolkit()
    assert headers.ok, (f"the CUDA toolkit is here (nvcc {nvcc}) but the headers "
                        f"{headers.missing} are in none of: {[str(d) for d in headers.tried]}")
    cxx = shutil.which("g++") or shutil.which("c++")
    assert cxx, "the CUDA toolkit is here but no host C++ compiler (g++ or c++) is on PATH"
    exe = tmp_path_factory.mktemp("emu") / "emu"
    # 64 threads (2 warps) per block instead of 256: the same code, a quarter of the threads.
    cmd = [cxx, "-std=c++20", "-O1", "-pthread", *[f"-I{d}" for d in headers.dirs],
           "-DCHARLSTM_BLOCK_THREADS=64", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
           str(CSRC / "emu" / "emu_main.cpp"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, " ".join(cmd) + "\n" + res.stderr[-3000:]
    return exe


# (cell, dtype, T, B, H, packed, path, a1, a2, a3, what the plan must show)
#   persistent, persistent_tc: a1 emulated SMs, a2 shared memory bytes per block;
#   stepwise: a1 units and a2 rows per block, a3 staging bytes (49152: the launchers' default).
# Small budgets force chunked staging; the strings pin each case to the layout it is for.
# The LSTM's cases (from before the cells were generalised) cover every layout; each other cell
# gets both paths, both directions, packed rows, chunked and ragged staging, tensor cores.
EMU_CASES = [
    ("lstm", "f32", 1, 1, 1, 0, "persistent", 4, 100000, 0, ["fwd: 1 blocks x 1 units, bb 1"]),
    ("lstm", "f32", 4, 9, 20, 1, "persistent", 6, 1700, 0, ["fwd: 5 blocks x 4 units, bb 5",
                                                            "bwd: 5 blocks x 4 units, bb 1"]),
    ("lstm", "f16", 6, 5, 33, 1, "persistent", 4, 3000, 0, ["fwd: 4 blocks x 9 units, bb 5",
                                                            "bwd: 4 blocks x 9 units, bb 1"]),
    ("lstm", "bf16", 5, 3, 40, 1, "persistent", 5, 100000, 0, ["bb 3"]),
    ("lstm", "f32", 3, 2, 100, 0, "persistent", 2, 100000, 0, ["2 blocks x 50 units"]),
    ("lstm", "f32", 5, 9, 20, 1, "stepwise", 8, 16, 0,
     ["fwd: grid 3 x 1, units 8 rows 9 stage_rows 0",
      "bwd: grid 3 x 1, units 8 rows 9 stage_rows 0"]),
    # several row blocks; forward staged 3 rows at a time of 4 (ragged), backward unstaged
    ("lstm", "f16", 5, 9, 20, 1, "stepwise", 3, 4, 120,
     ["fwd: grid 7 x 3, units 3 rows 4 stage_rows 3",
      "bwd: grid 7 x 3, units 3 rows 4 stage_rows 0"]),
    ("lstm", "bf16", 3, 9, 24, 1, "stepwise", 8, 8, 960,
     ["fwd: grid 3 x 2, units 8 rows 8 stage_rows 8",
      "bwd: grid 3 x 2, units 8 rows 8 stage_rows 2"]),
    ("lstm", "f32", 1, 3, 5, 1, "stepwise", 8, 16, 100000, ["stage_rows 3"]),
    # the launchers' own stepwise limits (8 units x 16 rows, 48 KiB): a 1-row second block
    ("lstm", "bf16", 2, 17, 24, 1, "stepwise", 8, 16, 49152,
     ["fwd: grid 3 x 2, units 8 rows 16 stage_rows 16"]),
    # WMMA forward and backward (padded rows: ld = kpad + 8):
    ("lstm", "f16", 4, 5, 20, 1, "persistent_tc", 6, 100000, 0, ["kpad 32 ld 40 nsplit 2"]),
    ("lstm", "bf16", 3, 19, 33, 1, "persistent_tc", 2, 100000, 0, ["mpad 80 kpad 48 ld 56"]),
    ("lstm", "f16", 6, 17, 20, 1, "persistent_tc", 3, 100000, 0, ["3 blocks x 7 units"]),
    ("lstm", "bf16", 4, 8, 40, 0, "persistent_tc", 1, 100000, 0,
     ["bwd: 1 blocks x 40 units", "mpad 48"]),
    # rows of 128 bytes (K = 64) and 512 bytes (K = 256): 8-way conflicts without the padding
    ("lstm", "bf16", 2, 16, 64, 1, "persistent_tc", 8, 100000, 0,
     ["fwd: 8 blocks x 8 units", "kpad 64 ld 72", "kpad 256 ld 264"]),
    # GRU: 3 gate rows per unit (W slice 3*4*20*4 = 960 bytes), saved r, z, n, hn
    ("gru", "f32", 4, 9, 20, 1, "persistent", 6, 1200, 0,
     ["fwd: 5 blocks x 4 units, bb 3, smem 1200", "bwd: 5 blocks x 4 units, bb 1"]),
    ("gru", "f16", 6, 5, 33, 1, "persistent", 4, 3000, 0, ["fwd: 4 blocks x 9 units, bb 5",
                                                           "bwd: 4 blocks x 9 units, bb 3"]),
    ("gru", "f16", 5, 9, 20, 1, "stepwise", 3, 4, 120,
     ["fwd: grid 7 x 3, units 3 rows 4 stage_rows 3",
      "bwd: grid 7 x 3, units 3 rows 4 stage_rows 0"]),
    ("gru", "bf16", 3, 9, 24, 1, "stepwise", 8, 8, 960,
     ["bwd: grid 3 x 2, units 8 rows 8 stage_rows 3"]),
    ("gru0", "f32", 3, 5, 12, 1, "stepwise", 8, 16, 100000, ["stage_rows 5"]),      # b_hn = NULL
    # the backward stages the float32 dhid (n block scaled by r), rounded: K = 3H
    ("gru", "f16", 4, 5, 20, 1, "persistent_tc", 6, 100000, 0, ["mpad 16 kpad 64 ld 72 nsplit 2"]),
    ("gru", "bf16", 3, 19, 33, 1, "persistent_tc", 2, 100000, 0, ["mpad 64 kpad 48 ld 56"]),
    ("gru", "f16", 6, 17, 20, 1, "persistent_tc", 3, 100000, 0, ["3 blocks x 7 units"]),
    # vanilla RNN: one gate row per unit, saved h
    ("rnn_tanh", "f32", 4, 9, 20, 1, "persistent", 6, 560, 0, ["fwd: 5 blocks x 4 units, bb 3",
                                                               "bwd: 5 blocks x 4 units, bb 3"]),
    ("rnn_tanh", "f16", 5, 9, 20, 1, "stepwise", 3, 4, 120,
     ["fwd: grid 7 x 3, units 3 rows 4 stage_rows 3",
      "bwd: grid 7 x 3, units 3 rows 4 stage_rows 1"]),
    ("rnn_tanh", "bf16", 3, 19, 33, 1, "persistent_tc", 2, 100000, 0, ["mpad 32 kpad 48 ld 56"]),
    ("rnn_tanh", "bf16", 2, 16, 64, 1, "persistent_tc", 8, 100000, 0,
     ["fwd: 8 blocks x 8 units", "kpad 64 ld 72"]),                                 # 128-byte rows
    ("rnn_relu", "f16", 6, 5, 33, 1, "persistent", 4, 1000, 0, ["fwd: 4 blocks x 9 units, bb 5",
                                                                "bwd: 4 blocks x 9 units, bb 2"]),
    ("rnn_relu", "bf16", 3, 9, 24, 1, "stepwise", 8, 8, 300,
     ["bwd: grid 3 x 2, units 8 rows 8 stage_rows 3"]),
    ("rnn_relu", "f16", 6, 17, 20, 1, "persistent_tc", 3, 100000, 0, ["3 blocks x 7 units"]),
]
#: outputs compared per cell: hs, hT, gates, dgates, dh0, and the LSTM's cT, cs, dc0
OUTPUTS = {"lstm": 8, "gru": 5, "gru0": 5, "rnn_tanh": 5, "rnn_relu": 5}


@pytest.mark.parametrize("case", EMU_CASES, ids=lambda c: "-".join(map(str, c[:7])) + f"-{c[9]}")
def test_kernel_code_in_host_emulation_matches_contract(emulator, case):
    """Every output of both directions against a double-precision implementation of the
    contract (its backward fed the kernels' saved tensors), NaN-filled outputs and shared memory
    so that anything unwritten fails, inactive rows exactly 0; exit code 3 if a WMMA load breaks
    an alignment rule or conflicts on banks.  Checks indexing, staging, work division, the
    barrier logic, each cell's pointwise step and carry and the launch plans; not the GPU memory
    model (see csrc/emu/emu_shim.h)."""
    *args, plan = case
    res = subprocess.run([str(emulator), *map(str, args)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(re.findall(r"^ok   ", res.stdout, re.M)) == OUTPUTS[args[0]], res.stdout
    for s in plan:
        assert s in res.stdout, f"expected {s!r} in the plan:\n{res.stdout}"


def test_device_cells_match_the_contract(emulator):
    """The device cells' gate count, saved blocks and cell state (cells.cuh, asserted equal to
    launch_plan.h's table at compile time) are the contract's (charlstm/backends/contract.py)."""
    res = subprocess.run([str(emulator), "cells"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    got = {name: (int(g), int(s), c == "1") for name, g, s, c in
           (line.split() for line in res.stdout.splitlines())}
    assert got == {c.name: (c.gates, c.saved, c.has_c) for c in CELLS.values()}


def _paths(emulator, path, capturing, half, batch):
    res = subprocess.run([str(emulator), "paths", path, str(int(capturing)), str(int(half)),
                          str(batch)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def test_path_choice_outside_capture(emulator):
    """The launchers' order of paths (launch_plan.h: choose_paths), as documented."""
    assert _paths(emulator, "auto", False, True, 8) == "paths: persistent_tc persistent stepwise"
    assert _paths(emulator, "auto", False, True, 7) == "paths: persistent stepwise"
    assert _paths(emulator, "auto", False, False, 64) == "paths: persistent stepwise"
    assert _paths(emulator, "persistent_tc", False, False, 64) == "paths: persistent"
    assert _paths(emulator, "persistent_tc", False, True, 1) == "paths: persistent_tc"
    assert _paths(emulator, "persistent", False, True, 64) == "paths: persistent"
    assert _paths(emulator, "stepwise", False, True, 64) == "paths: stepwise"


def test_path_choice_under_graph_capture(emulator):
    """A capturing stream: auto runs the stepwise path (ordinary launches, which capture) at
    any batch and dtype; a forced persistent path is refused with a sentence saying why and
    what captures (no silent change of path)."""
    for half in (False, True):
        for batch in (1, 8, 64):
            assert _paths(emulator, "auto", True, half, batch) == "paths: stepwise"
    assert _paths(emulator, "stepwise", True, True, 1) == "paths: stepwise"
    for forced in ("persistent", "persistent_tc"):
        out = _paths(emulator, forced, True, True, 16)
        assert out.startswith("refused: ") and f"the {forced} path" in out, out
        assert "capture" in out and "stepwise" in out, out


# =============================================================== PTX of the tensor-core kernels
@pytest.mark.parametrize("source", ["cell_lstm.cu", "cell_gru.cu", "cell_rnn.cu"])
def test_tensor_core_fragment_loads_are_shared_in_ptx(source, tmp_path):
    """Every wmma.load in the sm_90a PTX of each cell's kernels is the .shared form (the generic
    form becomes plain generic loads in SASS instead of ldmatrix); both operands in float16 and
    bfloat16 (the GRU's backward stages its float32 dhid rounded into the same tile)."""
    nvcc = build.nvcc_path()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH or CUDA_HOME): cannot compile to PTX here")
    out = tmp_path / "k.ptx"
    cmd = [nvcc, "-std=c++17", "-O3", "-arch=sm_90a", "-ptx", f"-I{CSRC}", str(CSRC / source),
           "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, " ".join(cmd) + "\n" + res.stderr[-3000:]
    loads = re.findall(r"\bwmma\.load\.[\w.]+", out.read_text())
    forms = {(m.group(1), m.group(2)) for m in
             (re.match(r"wmma\.load\.([ab])\..*\.(f16|bf16)$", x) for x in loads) if m}
    assert forms == {(ab, t) for ab in "ab" for t in ("f16", "bf16")}, loads
    generic = [x for x in loads if ".shared." not in x]
    assert not generic, f"wmma.load not in the .shared form: {sorted(set(generic))}"


# =============================================================== persistent plans
def _plan(emulator, kind, T, B, H, elem, sms, smem, cc=90, cell="lstm"):
    res = subprocess.run([str(emulator), "plan", cell, kind,
                          *map(str, (T, B, H, elem, sms, smem, cc))],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def _tc_bytes(m, k, elem, pad, warps=2):
    """Shared memory of a tensor-core block as docs/cuda.md describes it (rows of ld = kpad + pad
    elements; the emulator's blocks have 2 warps, which sets the number of K slices)."""
    mpad, kpad = -(-m // 16) * 16, -(-k // 16) * 16
    ld = kpad + pad
    nsplit = max(1, min(warps // (mpad // 16), kpad // 16))
    return -(-m * ld * elem // 32) * 32 + 16 * ld * elem + nsplit * mpad * 16 * 4


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("kind", ["tc_fwd", "tc_bwd"])
def test_tensor_core_plan_counts_the_row_padding(emulator, kind, cell):
    """The fit check includes the 8-element row padding and the cell's gate count: a budget that
    would hold the unpadded tiles but not the padded ones is refused (H = 768 bf16 on 132 SMs:
    6 units per block; the forward's A tile has G*6 rows, the backward's rows have G*768)."""
    G = CELLS[cell].gates
    m, k = (G * 6, 768) if kind == "tc_fwd" else (6, G * 768)
    need, unpadded = _tc_bytes(m, k, 2, 8), _tc_bytes(m, k, 2, 0)
    assert unpadded < need
    assert _plan(emulator, kind, 10, 16, 768, 2, 132, need, cell=cell) == \
        f"ok: 128 blocks x 6 units, bb 1, smem {need}"
    out = _plan(emulator, kind, 10, 16, 768, 2, 132, need - 1, cell=cell)
    assert out.startswith("unfit: the tensor-core layout needs") and str(need) in out, out


@pytest.mark.parametrize("cell", list(CELLS))
def test_fma_plan_keeps_the_cells_gate_rows(emulator, cell):
    """The FMA persistent forward keeps G*units rows of W_hh per block and stages rows of h in
    the rest; the backward keeps units rows of W_hh^T (G*H each) and stages rows of dhid (G*H
    float32): H = 768 bf16 on 132 SMs, 6 units per block, 64 KiB of shared memory."""
    G, smem = CELLS[cell].gates, 65536
    w_fwd, w_bwd = G * 6 * 768 * 2, 6 * G * 768 * 2
    bb_fwd = min(64, (smem - w_fwd) // (768 * 2))
    bb_bwd = min(64, (smem - w_bwd) // (G * 768 * 4))
    assert _plan(emulator, "fma_fwd", 10, 64, 768, 2, 132, smem, cell=cell) == \
        f"ok: 128 blocks x 6 units, bb {bb_fwd}, smem {w_fwd + bb_fwd * 768 * 2}"
    assert _plan(emulator, "fma_bwd", 10, 64, 768, 2, 132, smem, cell=cell) == \
        f"ok: 128 blocks x 6 units, bb {bb_bwd}, smem {w_bwd + bb_bwd * G * 768 * 4}"


def test_tensor_core_plan_needs_sm80(emulator):
    out = _plan(emulator, "tc_fwd", 10, 16, 768, 2, 132, 232448, cc=75)
    assert out == ("unfit: the tensor-core kernels need compute capability 8.0 or newer, "
                   "device 0 has 7.5")
    assert _plan(emulator, "fma_fwd", 10, 16, 768, 2, 132, 232448, cc=75).startswith("ok: ")
