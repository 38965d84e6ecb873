#!/usr/bin/env python
"""Mutation check: plant realistic bugs one at a time and make sure the tests catch each.

    python scripts/mutants.py                 # every mutant (~7 min on 2 CPU cores)
    python scripts/mutants.py --list          # the mutants, and whether each snippet still exists
    python scripts/mutants.py --only NAME     # one mutant (repeatable)
    python scripts/mutants.py --no-baseline   # skip the clean run of each test selection

The repository's files (tracked and untracked-but-not-ignored, as they are in the working tree
now) are copied once into a temporary folder; the working tree is never touched.  Each mutant
names a file, exact snippets to replace and their replacements, and a short pytest selection.
For each mutant the script plants the edits in the copy, runs its selection there (``-x``: the
first failure is enough), reports, and restores the file.  Before the mutants, each distinct
selection runs once on the unmutated copy (the baseline): a selection that fails without a
mutant proves nothing, so it is reported as an error.

Result per mutant: ``caught`` (a test failed, or the run hung past --timeout), ``NOT caught``
(every selected test passed), ``error`` (no test failed but pytest did not pass either:
collection or setup errors, no tests selected, a failing baseline).  The exit status is 1 when
any mutant is not caught or errors, 2 when a snippet is not found in its file ("pattern not
found": the code changed under the mutant -- update the snippet in MUTANTS below).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str                                  # relative to the repository root
    edits: tuple[tuple[str, str], ...]         # (exact snippet, replacement); each occurs once
    tests: tuple[str, ...]                     # pytest arguments (paths, -k expressions)
    bug: str                                   # what a developer would have got wrong


CONFORMANCE = "tests/test_lstm_conformance.py"
TRITON_CORE = ("tests/test_core_contract.py", "-k", "triton and f32 and packed")
EMULATOR = ("tests/test_cuda_emulator.py", "-k", "host_emulation")

MUTANTS = [
    # ---------------------------------------------------------------- the layer (charlstm/layer.py)
    Mutant("layer-h0-unsorted-indices", "charlstm/layer.py",
           (("h0 = h0.index_select(1, packed_input.sorted_indices)",
             "h0 = h0.index_select(1, packed_input.unsorted_indices)"),
            ("c0 = c0.index_select(1, packed_input.sorted_indices)",
             "c0 = c0.index_select(1, packed_input.unsorted_indices)")),
           (CONFORMANCE, "tests/test_triton_kernels.py", "-k", "unsorted or packed"),
           "packed input: h0/c0 put in sorted order with unsorted_indices"),
    Mutant("layer-hn-sorted-indices", "charlstm/layer.py",
           (("finals = [s.index_select(1, input.unsorted_indices) for s in finals]",
             "finals = [s.index_select(1, input.sorted_indices) for s in finals]"),),
           (CONFORMANCE, "-k", "unsorted"),
           "packed input: h_n/c_n put back in the caller's order with sorted_indices"),
    Mutant("layer-dropout-after-last-layer", "charlstm/layer.py",
           (("if self.dropout > 0 and self.training and layer < self.num_layers - 1:",
             "if self.dropout > 0 and self.training:"),),
           ("tests/test_lstm_api.py", "-k", "dropout"),
           "dropout also applied to the last layer's output"),
    Mutant("layer-dropout-scale", "charlstm/layer.py",
           (("layer_in = F.dropout(layer_in, p=self.dropout, training=True)",
             "layer_in = F.dropout(layer_in, p=self.dropout, training=True)"
             " * (1 - self.dropout)"),),
           ("tests/test_lstm_api.py", "-k", "dropout"),
           "inter-layer dropout without the 1/(1-p) rescaling"),
    Mutant("layer-reverse-whole-padded-length", "charlstm/layer.py",
           (("idx = torch.where(t < L, L - 1 - t, t)", "idx = torch.where(t < L, T - 1 - t, t)"),),
           (CONFORMANCE, "-k", "packed and bidir"),
           "reverse direction reverses the padded T steps, not each row's own length"),
    Mutant("layer-proj-h0-dropped", "charlstm/lstm.py",
           (("first = xproj[0] + h0 @ w_hh.t()", "first = xproj[0]"),),
           (CONFORMANCE, "-k", "proj"),
           "proj_size: the projected h0 never enters step 0"),
    # ---------------------------------------------------------------- reference core + contract
    Mutant("reference-cell-update", "charlstm/backends/reference.py",
           (("c_new = f * c + i * g", "c_new = i * c + f * g"),),
           (CONFORMANCE, "-k", "reference"),
           "cell update with the input and forget gates swapped"),
    Mutant("reference-lengths-off-by-one", "charlstm/backends/reference.py",
           (("(lengths > t).unsqueeze(1)", "(lengths >= t).unsqueeze(1)"),),
           (CONFORMANCE, "-k", "reference and packed"),
           "a packed row runs one step past its length"),
    Mutant("reference-backward-zero-c0", "charlstm/backends/reference.py",
           (("(cs[t - 1] if t > 0 else c0.to(A))",
             "(cs[t - 1] if t > 0 else torch.zeros_like(cs[0]))"),),
           (CONFORMANCE, "-k", "reference"),
           "backward's first step uses c[-1] = 0 instead of c0"),
    Mutant("contract-dwhh-unshifted-h", "charlstm/backends/contract.py",
           (("h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]], 0) if T > 1 else h0.unsqueeze(0)",
             "h_prev = hs"),),
           (CONFORMANCE, "-k", "reference"),
           "dW_hh from h[t] instead of h[t-1]"),
    # ---------------------------------------------------------------- Triton kernels
    Mutant("triton-gate-swap", "charlstm/backends/triton/forward.py",
           (("lstm_cell(z_i, z_f, z_g, z_o, c_prev)", "lstm_cell(z_f, z_i, z_g, z_o, c_prev)"),),
           TRITON_CORE,
           "forward kernel feeds the forget gate's pre-activation to the input gate"),
    Mutant("triton-lengths-off-by-one", "charlstm/backends/triton/forward.py",
           (("act = ((L > tv) & bmask)[:, None]", "act = ((L >= tv) & bmask)[:, None]"),),
           TRITON_CORE,
           "forward kernel runs a packed row one step past its length"),
    Mutant("triton-bwd-dropped-tanh-prime", "charlstm/backends/triton/common.py",
           (("dc = dc_next + dh * o * (1.0 - tc * tc)", "dc = dc_next + dh * o"),),
           TRITON_CORE,
           "backward kernel drops tanh'(c) from dc"),
    Mutant("triton-bwd-zero-c0", "charlstm/backends/triton/backward.py",
           (("+ tl.load(c0_ptr + off, mask=first_r & jm, other=0.0).to(tl.float32))",
             "+ 0.0 * tl.load(c0_ptr + off, mask=first_r & jm, other=0.0).to(tl.float32))"),),
           TRITON_CORE,
           "backward kernel's first step reads c[-1] = 0 instead of c0"),
    # ---------------------------------------------------------------- CUDA device code (emulated)
    Mutant("cuda-fwd-cell-uses-o", "csrc/cells.cuh",
           (("c.next = fg * c.prev + ig * gg;", "c.next = fg * c.prev + ig * og;"),),
           EMULATOR,
           "CUDA forward cell update with the output gate in place of g"),
    Mutant("cuda-bwd-c-prev-unshifted", "csrc/cells.cuh",
           (("const float cp = (s > 0) ? p.cs[(row - p.B) * H + j]",
             "const float cp = (s > 0) ? p.cs[row * H + j]"),),
           EMULATOR,
           "CUDA backward reads c[t] where the forget gate's gradient needs c[t-1]"),
    # ---------------------------------------------------------------- the GRU and RNN cells
    Mutant("layer-gru-b-hn-folded", "charlstm/rnn.py",
           (("return b_ih + torch.cat([b_hh[:2 * H], b_hh.new_zeros(H)]), b_hh[2 * H:]",
             "return b_ih + b_hh, None"),),
           (CONFORMANCE, "-k", "reference and gru"),
           "GRU: b_hn folded into the input side (outside the reset gate)"),
    Mutant("reference-gru-update-gate-swapped", "charlstm/backends/reference.py",
           (("return (1 - z) * n + z * h, None, torch.cat([r, z, n, hn], dim=1)",
             "return z * n + (1 - z) * h, None, torch.cat([r, z, n, hn], dim=1)"),),
           (CONFORMANCE, "-k", "reference and gru"),
           "GRU: the update gate weights the new state instead of the old one"),
    Mutant("contract-gru-dhid-unscaled", "charlstm/backends/contract.py",
           (("if cell.name != \"gru\":", "if True:"),),
           (CONFORMANCE, "-k", "reference and gru"),
           "GRU: dW_hh and db_hn from d xproj, without the reset gate's scaling of the n block"),
    Mutant("triton-gru-reset-outside", "charlstm/backends/triton/common.py",
           (("n = 2.0 / (1.0 + tl.exp(-2.0 * (x_n + r * hn))) - 1.0",
             "n = 2.0 / (1.0 + tl.exp(-2.0 * (r * (x_n + hn)))) - 1.0"),),
           ("tests/test_core_contract.py", "-k", "triton and gru and f32"),
           "Triton GRU: the reset gate scales the input side of n too"),
    Mutant("cuda-gru-dhid-unscaled", "csrc/cells.cuh",
           (("dhid[2] = dn * r;", "dhid[2] = dn;"),),
           ("tests/test_cuda_emulator.py", "-k", "host_emulation and gru"),
           "CUDA GRU backward: the recurrent operand's n block not scaled by r"),
    Mutant("reference-rnn-relu-derivative", "charlstm/backends/reference.py",
           (("dz = dh * (gates > 0).to(dh.dtype)", "dz = dh * (1 - gates * gates)"),),
           (CONFORMANCE, "-k", "reference and rnn_relu"),
           "RNN relu: tanh's derivative in the backward"),
    # ---------------------------------------------------------------- char-rnn
    Mutant("resume-skips-rng", "charlstm/charrnn/train.py",
           (('    torch.set_rng_state(rng["torch"])\n',
             "    pass  # mutant: torch RNG not restored\n"),),
           ("tests/test_charrnn_train.py", "-k", "resume"),
           "--resume restores everything but the torch RNG (dropout masks differ)"),
    Mutant("data-targets-not-shifted", "charlstm/charrnn/data.py",
           (("self.y = ids[1: batch_size * L + 1]", "self.y = ids[0: batch_size * L]"),),
           ("tests/test_charrnn_data.py", "-k", "stream_batcher"),
           "targets equal the inputs instead of the next character"),
]


# ------------------------------------------------------------------------------------ plumbing
def find_missing(m: Mutant, root: Path) -> list[str]:
    """The snippets of ``m`` that do not occur exactly once in its file under ``root``."""
    path = root / m.file
    if not path.is_file():
        return [f"{m.file}: file not found"]
    text = path.read_text()
    out = []
    for old, _ in m.edits:
        n = text.count(old)
        if n != 1:
            what = "pattern not found" if n == 0 else f"pattern found {n} times (must be unique)"
            out.append(f"{m.file}: {what}: {old!r}")
    return out


def copy_repo(dest: Path) -> None:
    """The working tree's files (tracked + untracked-not-ignored) into ``dest``."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], cwd=ROOT, check=True,
                               capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".git", "__pycache__", "build", "*.so"))
        return
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():                       # listed but deleted in the working tree: skip
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_pytest(root: Path, args: tuple[str, ...], timeout: float) -> tuple[int | None, str, float]:
    """(exit status or None on timeout, pytest's summary line, seconds)."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    env.pop("CHARLSTM_BACKEND", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o",
           "addopts=", *args]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s", time.perf_counter() - t0
    lines = [line for line in p.stdout.strip().splitlines() if line.strip()]
    summary = re.sub(r"^=+ | =+$", "", lines[-1]) if lines else ""
    summary = re.sub(r" in [\d.]+s( \(.*\))?$", "", summary)
    return p.returncode, summary, time.perf_counter() - t0


def classify(rc: int | None, summary: str) -> str:
    """A mutant is caught when a test fails (or hangs).  Tests that only *error* (a fixture or
    the emulator build broke, e.g. an unused variable under -Werror) say nothing about whether
    the tests check the behaviour: that is an error, and the mutant should be rewritten."""
    if rc is None or (rc == 1 and "failed" in summary):
        return "caught"
    return "NOT caught" if rc == 0 else "error"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", action="append", metavar="NAME", help="run only this mutant")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running each test selection on the unmutated copy first")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per pytest run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (path printed)")
    args = ap.parse_args(argv)

    names = [m.name for m in MUTANTS]
    if args.list:
        for m in MUTANTS:
            state = "; ".join(find_missing(m, ROOT)) or "ok"
            print(f"{m.name:36} {m.file:38} {state}\n    {m.bug}\n    pytest {shlex.join(m.tests)}")
        return 0
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        ap.error(f"unknown mutant(s) {unknown}; choose from: {', '.join(names)}")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    missing = [msg for m in chosen for msg in find_missing(m, ROOT)]
    if missing:
        print("mutants.py: the code changed under these mutants -- update MUTANTS:",
              file=sys.stderr)
        for msg in missing:
            print(f"  {msg}", file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="charlstm-mutants-"))
    try:
        copy_repo(tmp)
        baseline_ok: dict[tuple[str, ...], str] = {}
        if not args.no_baseline:
            for sel in dict.fromkeys(m.tests for m in chosen):
                rc, summary, secs = run_pytest(tmp, sel, args.timeout)
                print(f"baseline   pytest {shlex.join(sel)}: {summary} ({secs:.0f} s)", flush=True)
                if rc != 0:
                    baseline_ok[sel] = f"baseline fails: {summary}"
        rows = []
        for m in chosen:
            path = tmp / m.file
            original = path.read_text()
            text = original
            for old, new in m.edits:
                text = text.replace(old, new)
            path.write_text(text)
            try:
                if m.tests in baseline_ok:
                    result, summary, secs = "error", baseline_ok[m.tests], 0.0
                else:
                    rc, summary, secs = run_pytest(tmp, m.tests, args.timeout)
                    result = classify(rc, summary)
            finally:
                path.write_text(original)
            rows.append((m, result, summary, secs))
            print(f"{result:10} {m.name} ({secs:.0f} s): {summary}", flush=True)
    finally:
        if args.keep:
            print(f"copy kept at {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print("\n| mutant | file | tests run | result | pytest | s |")
    print("|---|---|---|---|---|---|")
    for m, result, summary, secs in rows:
        print(f"| {m.name} | {m.file} | `{shlex.join(m.tests)}` | {result} | {summary} "
              f"| {secs:.0f} |")
    bad = [m.name for m, result, _, _ in rows if result != "caught"]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} caught in {time.perf_counter() - t_start:.0f} s"
          + (f"; NOT caught or error: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
