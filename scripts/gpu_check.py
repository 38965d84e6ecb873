#!/usr/bin/env python
"""Every GPU check of charlstm in one command, inside a time budget (docs/gpu_check.md).

    python scripts/gpu_check.py OUTDIR                  # the whole plan (default budget 540 s)
    python scripts/gpu_check.py OUTDIR --dry-run        # print the plan, run nothing
    python scripts/gpu_check.py OUTDIR --steps bench,fixtures   # rerun named steps only

The plan is a table of steps (:func:`plan`): a command, its environment, a budget in seconds, a
needs-a-GPU flag and a tier.  Tier 1 is what must come back from a 15-minute GPU lease, most
important first; its budgets add up to the plan's total (:data:`PLAN_S`, 9 minutes, the build
included).  Tier 2 runs afterwards with whatever time tier 1 left unused.

Each step runs in its own process group (``start_new_session``) with its output in its own log;
on timeout the whole group gets SIGTERM and, :data:`GRACE_S` later, SIGKILL, so a hung kernel
(or a compiler, or a ``compute-sanitizer`` child) cannot outlive its step.  Steps run whether
or not earlier ones failed.  After every step the summary (``summary.txt``, ``summary.json``) and
the archive (``results.tar.gz``) are rewritten, so a run cut short still leaves what it did.

Budgets: a step never runs longer than its budget.  When less time is left than the tier-1 steps
still ahead of it planned, each gets its budget scaled by (time left / planned); a tier-2 step
gets at most the time left; a step whose grant falls under :data:`MIN_STEP_S` is
``skipped: budget``.  ``load`` (the JIT fallback of ``build``) also inherits what ``build`` left
unused when ``build`` failed.

The canary steps run each spin-barrier kernel variant (:data:`BARRIER_VARIANTS`) in its own
process; a variant whose canary fails, hangs or could not be run is added to
``CHARLSTM_DISABLED_VARIANTS`` for every later step at once, so tests, benchmarks and the
backends' own choices avoid it (docs/gpu_check.md).

OUTDIR receives at most four flat files: summary.txt, summary.json, results.tar.gz (logs, JUnit
XML, benchmark JSON/MD/PNG, fixtures, the comparison against the committed baseline) and bench.md.
The work folder (``--work``, default ``$TMPDIR/charlstm-gpu-check``) keeps the results and the
state of the first run (the architecture list, the disabled variants, the step results) for a
rerun with ``--steps``.  Exit status: 1 if a step failed, else 0 (skips are not failures).

The ``--env-report``, ``--load-extension`` and ``--exec-with-variants`` modes are the helpers some
steps run as their command (in the step's own process).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import glob
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PLAN_S = 540  # 9 minutes: tier 1, build included, in a 10-minute command
GRACE_S = 5.0  # SIGTERM -> SIGKILL
MIN_STEP_S = 10  # a smaller grant is "skipped: budget"
SKIP_RC = 77  # a step's "cannot run here" (reason: its last output line)
LOG_CAP = 2 << 20  # bytes of one log kept in the archive (head + tail)
ARCHIVE_CAP = 15 << 20  # the device tool brings back files of up to 16 MiB
#: the kernel variants that synchronise through a spin barrier: their failure mode is a hang
BARRIER_VARIANTS = ("triton:persistent", "cuda:persistent", "cuda:persistent_tc")
#: charlstm's kernels (CUDA: fwd/bwd_{persistent,persistent_tc,step}_kernel; Triton: lstm_*_kernel),
#: the only ones compute-sanitizer instruments and ncu profiles
KERNEL_REGEX = "persistent|step_kernel|lstm_"
TOOLS = ("nvidia-smi", "nvcc", "ncu", "compute-sanitizer", "ninja")


@dataclasses.dataclass(frozen=True)
class Step:
    """One row of the plan.  ``argv`` items may hold ``{py}``, ``{res}`` (the results folder),
    ``{tag}`` (the bench file tag) and ``{kernels}``; an item that is exactly ``{xdist}`` becomes
    pytest-xdist's options when it is installed (else nothing).  ``{variants}`` is left for
    ``--exec-with-variants`` to fill in the step's own process."""

    name: str
    what: str
    argv: tuple
    budget: int
    tier: int = 1
    gpu: bool = True
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tools: tuple = ()  # executables it needs (else "skipped: X not found")
    skip_rc: tuple = (SKIP_RC,)  # exit codes that mean "skipped: <last line>"
    note: Optional[Callable[[str], str]] = None  # log text -> one line for the summary
    canary_for: Optional[str] = None  # a variant to disable when this step does not pass
    fallback_for: Optional[str] = None  # inherits that step's unused budget when it failed


# ----------------------------------------------------------------------------- notes
def outcome(result: dict) -> str:
    """``pass``, ``failed``, ``skipped`` or ``stopped``: the first word of a step's result."""
    return re.split(r"[\s:(]", result["result"], maxsplit=1)[0]


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def pytest_note(text: str) -> str:
    """pytest's final count line, e.g. ``12 passed, 3 skipped in 40.1s``."""
    hits = re.findall(
        r"^=*\s*(\d+ (?:passed|failed|skipped|errors?|deselected|xfailed).*?)\s*=*$", text, re.M
    )
    return hits[-1] if hits else ""


# ----------------------------------------------------------------------------- the plan
def _pytest(*args: str, junit: str) -> tuple:
    return (
        "{py}",
        "-m",
        "pytest",
        *args,
        "{xdist}",
        "-v",
        "-rs",
        "--durations=15",
        "-p",
        "no:cacheprovider",
        f"--junitxml={{res}}/junit-{junit}.xml",
    )


def _with_variants(*argv: str) -> tuple:
    return ("{py}", "scripts/gpu_check.py", "--exec-with-variants", *argv)


def _sanitizer(tool: str, *variants: str, cells: str = "lstm") -> tuple:
    """compute-sanitizer ``tool`` on scripts/cuda_sanitize_case.py for ``variants`` (none:
    every available one) and ``cells`` (``--cells``)."""
    return (
        "compute-sanitizer",
        "--tool",
        tool,
        "--error-exitcode",
        "99",
        "--print-limit",
        "50",
        "--kernel-name",
        "regex={kernels}",
        "{py}",
        "scripts/cuda_sanitize_case.py",
        "--cells",
        cells,
        *variants,
    )


def _bench(*args: str) -> tuple:
    return (
        "benchmarks/bench_lstm.py",
        "--out",
        "{res}/bench",
        "--warmup",
        "5",
        "--reps",
        "20",
        *args,
    )


HEADLINE_ROWS = (
    "--row",
    "16,1024,768,float16",
    "--row",
    "16,1024,768,bfloat16",
    "--row",
    "64,1024,1024,bfloat16",
    "--latency",
    # the other cells at the second row's shape, against cuDNN's GRU / RNN (bench_lstm runs the
    # --row rows in this order, then --latency: cut short by the step's budget, the LSTM's rows
    # come back first)
    "--row",
    "16,1024,768,bfloat16,1,gru",
    "--row",
    "16,1024,768,bfloat16,1,rnn_tanh",
)


def plan() -> list:
    """The steps, in the order they run: tier 1 (must fit :data:`PLAN_S`), then tier 2."""
    canaries = [
        Step(
            f"canary-{v.replace(':', '-')}",
            f"{v}: small forward + backward (spin barrier)",
            ("{py}", "scripts/gpu_canary.py", v),
            30 if v.startswith("triton") else 20,
            note=last_line,
            canary_for=v,
        )
        for v in BARRIER_VARIANTS
    ]
    return [
        Step(
            "env",
            "versions, nvidia-smi, tools present",
            ("{py}", "scripts/gpu_check.py", "--env-report"),
            20,
            gpu=False,
        ),
        Step(
            "build",
            "pip install -e . for this GPU's one architecture (TORCH_CUDA_ARCH_LIST)",
            ("{py}", "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", "."),
            120,
            note=last_line,
        ),
        Step(
            "load",
            "load the extension once; JIT-build it if build failed (stale lock removed)",
            ("{py}", "scripts/gpu_check.py", "--load-extension"),
            55,
            note=last_line,
            fallback_for="build",
        ),
        *canaries,
        Step(
            "correctness",
            "every variant x dtype, forward + backward, small shapes; layer vs cuDNN",
            _pytest(
                "tests/test_core_contract.py",
                "tests/test_lstm_conformance.py",
                "-m",
                "not slow",
                "-k",
                # the GRU/RNN cells on one shape each (B=17, H=33, packed): fewer shapes per
                # cell, not a longer run; the whole contract test runs in pytest-gpu
                "core_contract and not variants_agree and (lstm or B17) or cudnn",
                junit="correctness",
            ),
            70,
            note=pytest_note,
        ),
        Step(
            "racecheck",
            "compute-sanitizer racecheck, barrier variants, one tiny case",
            _sanitizer("racecheck", *BARRIER_VARIANTS),
            45,
            tools=("compute-sanitizer",),
            note=last_line,
        ),
        Step(
            "synccheck",
            "compute-sanitizer synccheck, barrier variants, one tiny case",
            _sanitizer("synccheck", *BARRIER_VARIANTS),
            45,
            tools=("compute-sanitizer",),
            note=last_line,
        ),
        Step(
            "bench",
            "headline rows vs cuDNN, every variant, one run",
            _with_variants(
                "{py}", *_bench(*HEADLINE_ROWS, "--backends", "torch,{variants}", "--tag", "{tag}")
            ),
            80,
            note=last_line,
        ),
        Step(
            "compare",
            "speed-up over cuDNN vs the committed baseline (benchmarks/compare.py)",
            (
                "{py}",
                "benchmarks/compare.py",
                "{res}/bench/bench_lstm-*-{tag}.json",
                "--json",
                "{res}/compare.json",
                "--text",
                "{res}/compare.txt",
            ),
            10,
            note=last_line,
            skip_rc=(3, SKIP_RC),
        ),
        Step(
            "fixtures",
            "cuDNN fixtures (tests/cudnn_fixtures/generate.py --device cuda)",
            (
                "{py}",
                "tests/cudnn_fixtures/generate.py",
                "--device",
                "cuda",
                "--out",
                "{res}/fixtures",
            ),
            25,
            note=last_line,
        ),
        # tier 2: as time allows
        Step(
            "pytest-gpu",
            "the whole test suite on the GPU (pytest tests -m 'not slow')",
            _pytest("tests", "-m", "not slow", junit="gpu"),
            300,
            tier=2,
            note=pytest_note,
        ),
        Step(
            "fixture-tests",
            "tests/test_cudnn_fixtures.py against the new fixtures",
            _pytest("tests/test_cudnn_fixtures.py", junit="fixtures"),
            90,
            tier=2,
            env={"CHARLSTM_CUDNN_FIXTURES": "{res}/fixtures"},
            note=pytest_note,
        ),
        Step(
            "grid",
            "bench_lstm --quick grid, every variant",
            _with_variants(
                "{py}", *_bench("--quick", "--backends", "torch,{variants}", "--tag", "{tag}-grid")
            ),
            180,
            tier=2,
            note=last_line,
        ),
        Step(
            "train-bench",
            "char-rnn training characters/s per variant",
            _with_variants(
                "{py}",
                "benchmarks/bench_train.py",
                "--iters",
                "20",
                "--warmup-iters",
                "5",
                "--backends",
                "torch,{variants}",
                "--out",
                "{res}/bench",
                "--tag",
                "{tag}",
            ),
            60,
            tier=2,
            note=last_line,
        ),
        Step(
            "sample-bench",
            "char-rnn sampling characters/s per variant",
            _with_variants(
                "{py}",
                "benchmarks/bench_sample.py",
                "--length",
                "200",
                "--backends",
                "torch,{variants}",
                "--out",
                "{res}/bench",
                "--tag",
                "{tag}",
            ),
            60,
            tier=2,
            note=last_line,
        ),
        Step(
            "ncu",
            "Nsight Compute of the barrier variants, B=16 H=768 bf16 T=64",
            (
                "ncu",
                "--clock-control",
                "none",
                "--profile-from-start",
                "off",
                "--kernel-name",
                "regex:{kernels}",
                "--section",
                "SpeedOfLight",
                "--section",
                "LaunchStats",
                "--section",
                "Occupancy",
                "--section",
                "MemoryWorkloadAnalysis",
                "--section",
                "WarpStateStats",
                "{py}",
                "scripts/profile_case.py",
                *BARRIER_VARIANTS,
            ),
            120,
            tier=2,
            tools=("ncu",),
        ),
        Step(
            "triton-tuned",
            "headline row with Triton autotuning on",
            _with_variants(
                "{py}",
                *_bench(
                    "--row",
                    "16,1024,768,bfloat16",
                    "--backends",
                    "torch,{variants:triton}",
                    "--no-plot",
                    "--tag",
                    "{tag}-triton-tuned",
                ),
            ),
            120,
            tier=2,
            env={"CHARLSTM_TRITON_AUTOTUNE": "1"},
            note=last_line,
        ),
        Step(
            "memcheck",
            "compute-sanitizer memcheck, every variant and cell, one tiny case",
            _sanitizer("memcheck", cells="all"),
            120,
            tier=2,
            tools=("compute-sanitizer",),
            note=last_line,
        ),
    ]


def tier_total(steps: Sequence[Step], tier: int = 1) -> int:
    return sum(s.budget for s in steps if s.tier == tier)


def fill(item: str, res: Path, tag: str, py: str = PY) -> str:
    """A command item with ``{py}``, ``{res}``, ``{tag}`` and ``{kernels}`` filled in."""
    for key, value in (
        ("{py}", py),
        ("{res}", str(res)),
        ("{tag}", tag),
        ("{kernels}", KERNEL_REGEX),
    ):
        item = item.replace(key, value)
    return item


# ----------------------------------------------------------------------------- processes
class Interrupted(Exception):
    """The runner itself got SIGTERM/SIGINT: stop the running step, write what we have."""


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs.  Zombies do not count: an orphan that
    died waits for init to reap it, which can take a while in a container."""
    try:
        pids = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:  # no /proc: ask the kernel (zombies count there)
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


def kill_group(
    pgid: int, grace: float = GRACE_S, reap: Callable[[], object] = lambda: None
) -> None:
    """SIGTERM to the whole process group, then SIGKILL to whatever is left after ``grace``.
    ``reap`` (the leader's ``poll``) keeps an exited leader from lingering as a zombie member."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap()
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    timeout: float,
    grace: float = GRACE_S,
    on_start: Callable[[int], None] = lambda pid: None,
) -> tuple:
    """Run ``argv`` in a new process group, output to ``log``; ``(exit code or None on timeout,
    seconds)``.  The group is killed whole on timeout, on an interruption, and after a normal
    exit too (a daemon left behind by the step dies with it)."""
    t0 = time.monotonic()
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=dict(env),
                start_new_session=True,
            )
        except OSError as e:
            out.write(f"gpu_check: cannot start {argv[0]}: {e}\n".encode())
            return 127, time.monotonic() - t0
        on_start(proc.pid)
        rc = None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            # exit, timeout or the runner interrupted: nothing of the step outlives it
            kill_group(proc.pid, grace if proc.poll() is None else 0.0, proc.poll)
            proc.wait()
    return rc, time.monotonic() - t0


def remove_stale_build_locks() -> list:
    """Delete torch's JIT build lock of the cuda extension: a build killed mid-way leaves it, and
    every later load then waits on it.  Called only when no charlstm process runs (the runner
    killed every step's process group), so no owner check is needed; the runner itself imports
    neither torch nor charlstm (it runs before the package is installed), which is why it does
    not call ``charlstm.backends.cuda.build.clear_stale_lock`` (the JIT build's own check)."""
    roots = (
        [os.environ.get("TORCH_EXTENSIONS_DIR")] if os.environ.get("TORCH_EXTENSIONS_DIR") else []
    )
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    roots.append(os.path.join(cache, "torch_extensions", "*"))
    removed = []
    for root in roots:
        for lock in glob.glob(os.path.join(root, "charlstm_cuda_ext", "lock")):
            try:
                os.remove(lock)
                removed.append(lock)
            except OSError:
                pass
    return removed


# ----------------------------------------------------------------------------- the runner
def grant(step: Step, remaining: float, planned_rest: float, inherited: float = 0.0) -> float:
    """Seconds a step may run: its budget (plus ``inherited``), scaled down for tier 1 when less
    time is left than the tier-1 steps still ahead planned, never more than what is left."""
    budget = step.budget + inherited
    if step.tier == 1 and planned_rest > remaining > 0:
        budget *= remaining / planned_rest
    return max(0.0, min(budget, remaining))


class Run:
    """One invocation: the steps to run, the clock, the state, the outputs."""

    def __init__(
        self,
        steps: Sequence[Step],
        out: Path,
        work: Path,
        budget_s: float,
        gpu: dict,
        rerun: bool = False,
        tag: Optional[str] = None,
        state: Optional[dict] = None,
        plan_total: int = PLAN_S,
        t0: Optional[float] = None,
    ):
        self.steps, self.out, self.work, self.budget_s = list(steps), out, work, budget_s
        self.res, self.gpu, self.plan_total = work / "results", gpu, plan_total
        self.t0 = time.monotonic() if t0 is None else t0  # the budget counts from here
        self.started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.state = dict(state or {})
        self.state.setdefault("disabled", {})
        self.state.pop("interrupted", None)  # a rerun's own interruption is what counts
        self.state.setdefault("results", [])
        if gpu.get("capability") and not self.state.get("arch"):  # a rerun keeps the first run's
            self.state["arch"] = gpu["capability"]
        self.state.setdefault("tag", tag or "gpu-check-" + self.started[:10].replace("-", ""))
        self.rerun = [s.name for s in steps] if rerun else []
        self.running: Optional[dict] = None
        (self.res / "logs").mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)

    # -- context of the commands
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def env(self, step: Step) -> dict:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["CHARLSTM_TRITON_AUTOTUNE"] = "0"  # one fixed configuration unless a step says so
        if self.state.get("arch"):
            env["TORCH_CUDA_ARCH_LIST"] = self.state["arch"]
        disabled = env.pop("CHARLSTM_DISABLED_VARIANTS", "").replace(",", " ").split()
        disabled += [v for v in self.state["disabled"] if v not in disabled]
        disabled = [v for v in disabled if v != step.canary_for]  # the canary tries it anyway
        if disabled:
            env["CHARLSTM_DISABLED_VARIANTS"] = " ".join(disabled)
        env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
        env.update({k: self.fill(v) for k, v in step.env.items()})
        return env

    def fill(self, item: str) -> str:
        return fill(item, self.res, self.state["tag"])

    def argv(self, step: Step) -> list:
        out = []
        for item in step.argv:
            if item == "{xdist}":
                out += ["-n", "8"] if importlib.util.find_spec("xdist") else []
            else:
                out.append(self.fill(item))
        return out

    # -- one step
    def result_of(self, name: str) -> Optional[dict]:
        return next((r for r in self.state["results"] if r["step"] == name), None)

    def record(self, result: dict) -> None:
        """A rerun's result takes the place of the first run's; a new one goes last."""
        results = self.state["results"]
        for i, r in enumerate(results):
            if r["step"] == result["step"]:
                results[i] = result
                return
        results.append(result)

    def run_step(self, step: Step, planned_rest: float) -> dict:
        log = self.res / "logs" / (step.name.replace(":", "-") + ".log")
        result = {
            "step": step.name,
            "tier": step.tier,
            "budget": step.budget,
            "seconds": 0,
            "log": f"logs/{log.name}",
        }
        missing = [t for t in step.tools if shutil.which(t) is None]
        inherited = 0.0
        if step.fallback_for:
            prev = self.result_of(step.fallback_for)
            if prev and outcome(prev) != "pass":
                inherited = max(0.0, prev.get("granted", 0) - prev["seconds"])
        remaining = self.budget_s - self.elapsed()
        granted = grant(step, remaining, planned_rest, inherited)
        if step.gpu and not self.gpu.get("gpu"):
            result["result"] = "skipped: no GPU"
        elif missing:
            result["result"] = f"skipped: {', '.join(missing)} not found"
        elif granted < min(MIN_STEP_S, step.budget):
            result["result"] = (
                f"skipped: budget ({max(0, remaining):.0f}s left of {self.budget_s:.0f}s)"
            )
        else:
            result["granted"] = round(granted, 1)
            try:
                self.execute(step, log, granted, step.budget + inherited, result)
            except Interrupted as e:
                result["result"] = f"failed: interrupted ({e})"
                self.record(result)
                raise
        if step.canary_for:
            # failed, hung, or not run for lack of time: later steps keep away from it
            if (
                outcome(result) == "pass"
                or result.get("cannot_run_here")
                or result["result"] == "skipped: no GPU"
            ):
                self.state["disabled"].pop(step.canary_for, None)
            else:
                self.state["disabled"][step.canary_for] = f"{step.name}: {result['result']}"
        self.record(result)
        return result

    def execute(self, step: Step, log: Path, granted: float, full: float, result: dict) -> None:
        argv, env = self.argv(step), self.env(step)
        with open(log, "w") as f:
            f.write(f"$ {shlex.join(argv)}\n# granted {granted:.0f}s (budget {full:.0f}s)\n")
        self.running = {"step": step.name, "since": self.elapsed(), "granted": round(granted, 1)}

        def started(pid):
            self.running["pid"] = pid
            self.write_outputs()

        t0 = time.monotonic()
        try:
            rc, secs = spawn(argv, env, log, granted, GRACE_S, started)
        finally:
            self.running = None
            result["seconds"] = round(time.monotonic() - t0, 1)
        text = log.read_text(errors="replace")
        result["seconds"] = round(secs, 1)
        note = step.note(text) if step.note else ""
        if rc is None:
            remove_stale_build_locks()  # a build killed mid-way must not block later loads
            if step.tier == 2 and granted < full:
                result["result"] = f"stopped: budget after {secs:.0f}s (of its {full:.0f}s)"
            else:
                cut = f" (budget {full:.0f}s scaled to {granted:.0f}s)" if granted < full else ""
                result["result"] = f"failed: timeout after {secs:.0f}s{cut}"
        elif rc == 0:
            result["result"] = "pass" + (f": {note}" if note else "")
        elif rc in step.skip_rc:
            result["result"] = f"skipped: {last_line(text) or f'exit {rc}'}"
            result["cannot_run_here"] = True
        else:
            result["result"] = f"failed (exit {rc})" + (f": {note}" if note else "")
        result["rc"] = rc

    # -- the whole run
    def run(self) -> int:
        old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.write_outputs()
            for i, step in enumerate(self.steps):
                planned = sum(
                    s.budget
                    for s in self.steps[i:]
                    if s.tier == 1 and (self.gpu.get("gpu") or not s.gpu)
                )
                r = self.run_step(step, planned)
                print(f"   {step.name:<26} {r['result'][:90]}  ({r['seconds']:.0f}s)", flush=True)
                self.write_outputs()
        except Interrupted as e:
            self.state["interrupted"] = f"the runner got {e} at {self.elapsed():.0f}s"
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        self.write_outputs()
        print((self.out / "summary.txt").read_text())
        failed = any(outcome(r) == "failed" for r in self.state["results"])
        return 1 if failed or self.state.get("interrupted") else 0

    # -- outputs
    def summary(self) -> dict:
        return {
            "started_utc": self.started,
            "elapsed_s": round(self.elapsed(), 1),
            "budget_s": self.budget_s,
            "plan_tier1_s": self.plan_total,
            "commit": _git_commit(),
            "gpu": self.gpu,
            "rerun": self.rerun,
            "state": {k: v for k, v in self.state.items() if k != "results"},
            "running": self.running,
            "steps": self.state["results"],
        }

    def summary_text(self, s: dict) -> str:
        gpu = s["gpu"]
        lines = [
            f"charlstm gpu_check  {s['started_utc']}  commit {s['commit']}"
            + (f"  (rerun of {', '.join(s['rerun'])})" if s["rerun"] else ""),
            "device: "
            + (
                f"{gpu.get('name')} (capability {gpu.get('capability')}), "
                f"TORCH_CUDA_ARCH_LIST={s['state'].get('arch')}"
                if gpu.get("gpu")
                else f"no GPU ({gpu.get('why', 'torch.cuda.is_available() is False')})"
            ),
            (
                f"budget {s['budget_s']:.0f}s (plan tier 1: {s['plan_tier1_s']}s), "
                f"elapsed {s['elapsed_s']:.0f}s; bench tag {s['state']['tag']}"
            ),
        ]
        for v, why in s["state"]["disabled"].items():
            lines.append(f"disabled for later steps: {v} ({why})")
        lines.append(f"{'step':<26} {'tier':>4} {'budget':>6} {'secs':>6}  result")
        counts = {"pass": 0, "failed": 0, "skipped": 0, "stopped": 0}
        for r in s["steps"]:
            lines.append(
                f"{r['step']:<26} {r['tier']:>4} {r['budget']:>6} {r['seconds']:>6.0f}  "
                f"{r['result'][:100]}"
            )
            counts[outcome(r)] = counts.get(outcome(r), 0) + 1
        lines.append("total: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
        if s["running"]:
            lines.append(
                f"running: {s['running']['step']} (pid {s['running'].get('pid')}, "
                f"since {s['running']['since']:.0f}s, granted {s['running']['granted']:.0f}s)"
            )
        if s["state"].get("interrupted"):
            lines.append(f"interrupted: {s['state']['interrupted']}")
        if not gpu.get("gpu"):
            lines.append(
                "no GPU: every step that needs one was skipped (nothing was checked on a GPU)"
            )
        compare = self.res / "compare.txt"
        if compare.is_file():
            lines += [
                "--- compare: speed-up over cuDNN against the committed baseline",
                compare.read_text().rstrip(),
            ]
        for r in s["steps"]:
            if r["result"].startswith("failed") and r.get("log"):
                tail = (
                    (self.res / r["log"]).read_text(errors="replace").splitlines()[-6:]
                    if (self.res / r["log"]).is_file()
                    else []
                )
                lines += [f"--- {r['step']}: last lines of {r['log']}"] + [t[:160] for t in tail]
        lines.append(
            "details: results.tar.gz (results/logs, junit-*.xml, bench/, fixtures/, compare.*)"
        )
        return "\n".join(lines) + "\n"

    def write_outputs(self) -> None:
        """summary.txt/json (always), results.tar.gz and bench.md: each through a rename."""
        s = self.summary()
        (self.work / "state.json").write_text(json.dumps(self.state, indent=1) + "\n")
        _write(self.out / "summary.json", json.dumps(s, indent=1, default=str) + "\n")
        _write(self.out / "summary.txt", self.summary_text(s))
        if self.running is None:
            _write_bytes(self.out / "results.tar.gz", archive(self.res))
            md = sorted(self.res.glob("bench/*.md"))
            if md:
                _write(self.out / "bench.md", "\n\n".join(p.read_text() for p in md))


def _write(path: Path, text: str) -> None:
    _write_bytes(path, text.encode())


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def archive(res: Path) -> bytes:
    """``results/...`` as tar.gz; each log clipped to :data:`LOG_CAP` (head and tail); the
    largest other files left out (and listed in ``results/LEFT_OUT``) if it would exceed
    :data:`ARCHIVE_CAP`."""
    files = sorted(p for p in res.rglob("*") if p.is_file())
    left_out = []
    while True:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for p in files:
                data = p.read_bytes()
                if p.suffix == ".log" and len(data) > LOG_CAP:
                    data = (
                        data[: LOG_CAP // 4]
                        + b"\n... [clipped by gpu_check] ...\n"
                        + data[-(LOG_CAP - LOG_CAP // 4) :]
                    )
                _add(tar, "results/" + p.relative_to(res).as_posix(), data)
            if left_out:
                _add(tar, "results/LEFT_OUT", "\n".join(left_out).encode() + b"\n")
        if buf.tell() <= ARCHIVE_CAP or not files:
            return buf.getvalue()
        biggest = max(
            (p for p in files if p.suffix != ".log"),
            key=lambda p: p.stat().st_size,
            default=max(files, key=lambda p: p.stat().st_size),
        )
        files.remove(biggest)
        left_out.append(f"{biggest.relative_to(res)} ({biggest.stat().st_size} bytes)")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty else "")


def probe_gpu(timeout: float = 90.0) -> dict:
    """Whether torch sees a GPU, its name and capability -- asked in a child process, so the
    runner itself never holds a CUDA context."""
    code = (
        "import json, torch\nd = {'gpu': torch.cuda.is_available()}\n"
        "if d['gpu']:\n    d['name'] = torch.cuda.get_device_name(0)\n"
        "    d['capability'] = '%d.%d' % torch.cuda.get_device_capability(0)\n"
        "print(json.dumps(d))\n"
    )
    try:
        p = subprocess.run(
            [PY, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            start_new_session=True,
        )
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        return {"gpu": False, "why": f"the GPU probe failed: {type(e).__name__}: {e}"[:200]}


# ----------------------------------------------------------------------------- dry run
def plan_table(steps: Sequence[Step], budget_s: float) -> str:
    lines = [
        (
            f"charlstm gpu_check plan: budget {budget_s:.0f}s; tier 1 must fit it, tier 2 runs "
            f"with what tier 1 leaves"
        ),
        f"{'#':>2}  {'step':<26} {'tier':>4} {'budget':>7} {'GPU':>4}  what",
    ]
    for i, s in enumerate(steps, 1):
        lines.append(
            f"{i:>2}  {s.name:<26} {s.tier:>4} {s.budget:>6}s {'yes' if s.gpu else 'no':>4}"
            f"  {s.what}"
        )
    t1, t2 = tier_total(steps, 1), tier_total(steps, 2)
    lines.append(
        f"tier 1 total: {t1}s ({t1 / 60:.1f} min) of the {budget_s:.0f}s budget"
        f"{'' if t1 <= budget_s else ' -- OVER: tier 1 steps will be scaled down'}; "
        f"tier 2 total: {t2}s (only with time left over)"
    )
    return "\n".join(lines)


def dry_run(steps: Sequence[Step], budget_s: float, out: Path, work: Path) -> str:
    res, tag = work / "results", "gpu-check-YYYYMMDD"
    cmds = [
        "",
        (
            f"commands, run from the repository root with python = {PY} ({{variants}} is "
            f"filled in by the step from charlstm.backends.kernel_variants(); "
            f"TORCH_CUDA_ARCH_LIST, CHARLSTM_DISABLED_VARIANTS and CHARLSTM_TRITON_AUTOTUNE=0 "
            f"are exported to every step; pytest gets -n 8 when pytest-xdist is installed):"
        ),
    ]
    for s in steps:
        env = " ".join(f"{k}={fill(v, res, tag, 'python')}" for k, v in s.env.items())
        argv = (fill(a, res, tag, "python") for a in s.argv if a != "{xdist}")
        cmds.append(f"  {s.name}: {(env + ' ') if env else ''}{shlex.join(argv)}")
    return plan_table(steps, budget_s) + "\n" + "\n".join(cmds) + f"\noutputs: {out}\n"


# ----------------------------------------------------------------------------- step helpers
def env_report() -> int:
    """The ``env`` step: versions, the GPU, the tools this plan uses."""
    print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}  commit: {_git_commit()}")
    print(f"python: {sys.version.split()[0]} at {sys.executable}")
    for var in ("TORCH_CUDA_ARCH_LIST", "CHARLSTM_DISABLED_VARIANTS", "CUDA_HOME", "MAX_JOBS"):
        print(f"{var}={os.environ.get(var, '')}")
    for tool in TOOLS:
        print(f"{tool:<18} {shutil.which(tool) or 'not found'}")
    for mod in ("setuptools", "ninja", "xdist", "triton"):
        print(
            f"python module {mod:<11} {'present' if importlib.util.find_spec(mod) else 'missing'}"
        )
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import environment, pick_device

    print(json.dumps(environment(pick_device("auto")), indent=1))
    for cmd in (["nvidia-smi"], ["nvcc", "--version"]):
        if shutil.which(cmd[0]):
            sys.stdout.flush()
            subprocess.run(cmd, timeout=30)
    return 0


def load_extension() -> int:
    """The ``load`` step: the extension built by ``build``, or a JIT build of it (after removing
    a stale lock), then the kernel variants this GPU can run."""
    for lock in remove_stale_build_locks():
        print(f"removed a stale torch extension lock: {lock}")
    import torch

    from charlstm import backends
    from charlstm.backends.cuda import build

    how = "the prebuilt charlstm._C" if build.prebuilt_available() else "a JIT build"
    print(
        f"loading the cuda extension from {how} (TORCH_CUDA_ARCH_LIST="
        f"{os.environ.get('TORCH_CUDA_ARCH_LIST', '')})",
        flush=True,
    )
    build.load_extension(verbose=True)
    variants = backends.variants(torch.device("cuda"))
    for v in variants:
        print(f"  {v.name:<22} {'available' if v.available else 'unavailable: ' + str(v.reason)}")
    ok = sum(v.available for v in variants)
    print(f"extension loaded ({how}); {ok} of {len(variants)} variants available on this GPU")
    return 0


def exec_with_variants(argv: Sequence[str]) -> int:
    """Replace ``{variants}`` (every available kernel variant but ``reference``) and
    ``{variants:BACKEND}`` (only that backend's) in ``argv`` and exec it: the variant list is
    asked of charlstm at run time, in the step's environment (so the canary's disabled variants
    are left out)."""
    import torch

    from charlstm import backends

    names = [
        v.name
        for v in backends.kernel_variants(torch.device("cuda"))
        if v.available and v.name != "reference"
    ]

    def names_for(m):
        chosen = [n for n in names if m.group(1) is None or n.split(":")[0] == m.group(1)]
        if not chosen:
            raise SystemExit(
                f"gpu_check: no available kernel variant for {m.group(0)} "
                f"(available: {names or 'none'})"
            )
        return ",".join(chosen)

    argv = [re.sub(r"\{variants(?::(\w+))?\}", names_for, a) for a in argv]
    print(
        f"gpu_check: variants from charlstm.backends.kernel_variants(): {', '.join(names)}\n"
        f"$ {shlex.join(argv)}",
        flush=True,
    )
    os.execvp(argv[0], argv)
    return 127  # not reached


HELPERS = {
    "--env-report": lambda rest: env_report(),
    "--load-extension": lambda rest: load_extension(),
    "--exec-with-variants": exec_with_variants,
}


# ----------------------------------------------------------------------------- main
def select(steps: Sequence[Step], names: Optional[str]) -> list:
    if not names:
        return list(steps)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {s.name for s in steps}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(
            f"gpu_check: unknown step(s) {', '.join(unknown)}; the steps are: "
            f"{', '.join(s.name for s in steps)}"
        )
    return [s for s in steps if s.name in wanted]


def load_state(work: Path, state_file: Optional[Path]) -> Optional[dict]:
    """The first run's state for ``--steps``: ``--state FILE`` (a state.json, or a summary.json
    brought back from the first run), else the work folder's state.json."""
    path = state_file or work / "state.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if "steps" in data and "state" in data:  # a summary.json
        return dict(data["state"], results=data["steps"])
    return data


def main(argv=None, steps: Optional[Sequence[Step]] = None, gpu: Optional[dict] = None) -> int:
    """``steps`` and ``gpu`` replace the plan and the GPU probe (the CPU tests use fake steps)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in HELPERS:
        return HELPERS[argv[0]](argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path, help="where the summary and the archive go")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument(
        "--steps",
        default=None,
        help="comma-separated steps to (re)run, reusing the "
        "first run's state (architecture list, disabled variants, results)",
    )
    ap.add_argument(
        "--budget", type=float, default=PLAN_S, help="total seconds (default %(default)s)"
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "charlstm-gpu-check",
        help="work folder kept between a run and its reruns (default %(default)s)",
    )
    ap.add_argument(
        "--state",
        type=Path,
        default=None,
        help="with --steps: the first run's summary.json, when the work folder is gone",
    )
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    steps = plan() if steps is None else list(steps)
    chosen = select(steps, args.steps)
    if args.dry_run:
        print(dry_run(chosen, args.budget, args.outdir, args.work))
        return 0
    state = None
    if args.steps:
        state = load_state(args.work, args.state)
        if state is None:
            print(
                f"gpu_check: no state of a first run in {args.work} (or --state): the "
                f"architecture comes from this GPU, no variant is disabled, and the extension "
                f"is whatever is installed (add build to --steps if none is)",
                file=sys.stderr,
            )
    elif (args.work / "results").exists():
        shutil.rmtree(args.work / "results")
    gpu = probe_gpu() if gpu is None else gpu
    run = Run(
        chosen,
        args.outdir,
        args.work,
        args.budget,
        gpu,
        rerun=bool(args.steps),
        state=state,
        plan_total=tier_total(steps),
        t0=t0,
    )
    if not args.steps:
        for lock in remove_stale_build_locks():
            print(f"gpu_check: removed a stale torch extension lock: {lock}")
    return run.run()


if __name__ == "__main__":
    sys.exit(main())
