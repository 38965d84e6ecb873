"""The GPU check (scripts/gpu_check.py) and the throughput comparison (benchmarks/compare.py),
checked on the CPU.

Nothing here runs on a GPU: the real plan is run on this machine (every GPU step must report
``skipped: no GPU``), and the runner's mechanics -- process groups killed whole on timeout,
budgets, the summary rewritten after each step, the output limits, reruns, the canary's
disabled variants -- are proven with fake steps (shell commands that sleep, spawn children,
ignore SIGTERM).  The comparison is checked on synthetic result JSON.  About 40 s in all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from benchmarks import compare

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gc = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gc
_spec.loader.exec_module(gc)

NO_GPU = {"gpu": False, "why": "fake: the tests' runner"}
FAKE_GPU = {"gpu": True, "name": "Fake GPU", "capability": "9.0"}


def sh(name, script, budget=5, tier=1, gpu=False, **kw):
    return gc.Step(
        name, f"fake step {name}", ("sh", "-c", script), budget, tier=tier, gpu=gpu, **kw
    )


def run_fake(tmp_path, steps, *extra, gpu=NO_GPU):
    out, work = tmp_path / "out", tmp_path / "work"
    rc = gc.main([str(out), "--work", str(work), *extra], steps=steps, gpu=gpu)
    summary = json.loads((out / "summary.json").read_text())
    return rc, {r["step"]: r for r in summary["steps"]}, summary, out, work


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


# ----------------------------------------------------------------------------- the plan
def test_plan_tier1_fits_nine_minutes_most_important_first():
    steps = gc.plan()
    names = [s.name for s in steps]
    assert len(set(names)) == len(names)
    tier1 = [s for s in steps if s.tier == 1]
    assert sum(s.budget for s in tier1) == gc.tier_total(steps) == gc.PLAN_S <= 9 * 60
    assert [s.tier for s in steps] == sorted(s.tier for s in steps)  # tier 2 after tier 1
    assert all(s.budget >= gc.MIN_STEP_S for s in steps)
    assert names[:3] == ["env", "build", "load"] and not steps[0].gpu
    assert [s.canary_for for s in steps[3:6]] == list(gc.BARRIER_VARIANTS)
    for later in ("correctness", "racecheck", "synccheck", "bench", "compare", "fixtures"):
        assert gc.plan()[names.index(later)].tier == 1 and names.index(later) > 5
    assert names.index("compare") == names.index("bench") + 1
    assert names.index("racecheck") < names.index("bench") < names.index("fixtures")
    for tool, step in (("compute-sanitizer", "racecheck"), ("ncu", "ncu")):
        assert tool in steps[names.index(step)].tools
    # the sanitizers and the profiler look at charlstm's kernels only
    for step in ("racecheck", "synccheck", "memcheck", "ncu"):
        assert any("{kernels}" in a for a in steps[names.index(step)].argv), step


def test_dry_run_prints_each_step_budget_and_total(tmp_path):
    p = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "o"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    for s in gc.plan():
        assert re.search(
            rf"^\s*\d+\s+{re.escape(s.name)}\s+{s.tier}\s+{s.budget}s ", p.stdout, re.M
        ), s.name
        assert f"  {s.name}: " in p.stdout  # and its command
    assert f"tier 1 total: {gc.PLAN_S}s (9.0 min) of the 540s budget" in p.stdout
    assert "{variants}" in p.stdout and "TORCH_CUDA_ARCH_LIST" in p.stdout
    assert not (tmp_path / "o").exists()  # a dry run writes nothing
    p = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(tmp_path / "o"),
            "--dry-run",
            "--steps",
            "bench,compare",
            "--budget",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "tier 1 total: 90s (1.5 min) of the 60s budget -- OVER" in p.stdout
    assert " env " not in p.stdout.split("commands")[0]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the no-GPU run; on a GPU it runs for real"
)
def test_real_plan_without_gpu_skips_every_gpu_step(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(f.name for f in out.iterdir()) == [
        "results.tar.gz",
        "summary.json",
        "summary.txt",
    ]
    summary = json.loads((out / "summary.json").read_text())
    results = {s["step"]: s["result"] for s in summary["steps"]}
    assert list(results) == [s.name for s in gc.plan()]
    assert results.pop("env") == "pass"
    assert set(results.values()) == {"skipped: no GPU"}
    assert summary["running"] is None and summary["gpu"]["gpu"] is False
    assert "nothing was checked on a GPU" in (out / "summary.txt").read_text()
    with tarfile.open(out / "results.tar.gz") as tar:
        env_log = tar.extractfile("results/logs/env.log").read().decode()
    assert '"device_kind": "cpu-' in env_log and "compute-sanitizer" in env_log


# ----------------------------------------------------------------------------- processes
def test_hung_steps_are_killed_whole_on_time_and_later_steps_run(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "GRACE_S", 1.0)
    child = tmp_path / "child.pid"
    deaf = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); time.sleep(60)"
    )
    steps = [
        sh("first", "echo one"),
        sh("sleeper", "sleep 60", budget=1),
        sh("spawner", f"sleep 60 & echo $! > {child}; wait", budget=1),
        gc.Step("deaf", "ignores SIGTERM", (sys.executable, "-c", deaf), 2, gpu=False),
        sh("last", "echo done"),
    ]
    t0 = time.monotonic()
    rc, res, _, out, work = run_fake(tmp_path, steps)
    assert time.monotonic() - t0 < 20
    assert rc == 1
    assert res["first"]["result"] == "pass" and res["last"]["result"] == "pass"
    for name, budget in (("sleeper", 1), ("spawner", 1)):
        assert res[name]["result"] == f"failed: timeout after {budget}s"
        assert budget <= res[name]["seconds"] < budget + 1.0  # SIGTERM was enough
    # the child the step left sleeping died with its process group
    assert not alive(int(child.read_text()))
    # SIGTERM ignored: SIGKILL after the grace period
    assert res["deaf"]["result"].startswith("failed: timeout")
    assert 2 + 0.9 <= res["deaf"]["seconds"] < 2 + 1.0 + 1.5
    assert "ignoring SIGTERM" in (work / "results" / "logs" / "deaf.log").read_text()
    assert "--- sleeper: last lines of logs/sleeper.log" in (out / "summary.txt").read_text()


RUNNER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("gpu_check", {script!r})
gc = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gc
spec.loader.exec_module(gc)
steps = [gc.Step(n, n, ("sh", "-c", cmd), budget, gpu=False)
         for n, cmd, budget in json.loads({steps!r})]
sys.exit(gc.main({argv!r}, steps=steps, gpu={{"gpu": False}}))
"""


def start_runner(tmp_path, steps):
    out, work = tmp_path / "out", tmp_path / "work"
    code = RUNNER.format(
        script=str(SCRIPT), steps=json.dumps(steps), argv=[str(out), "--work", str(work)]
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def running():
        try:
            s = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            return None
        return (
            s
            if s["running"] and s["running"].get("pid") and s["running"]["step"] == "hang"
            else None
        )

    return proc, wait_for(running), out


def test_summary_is_written_before_and_after_each_step_so_a_killed_runner_leaves_it(tmp_path):
    proc, summary, out = start_runner(
        tmp_path, [["first", "echo one", 5], ["hang", "sleep 60", 60]]
    )
    pid = summary["running"]["pid"]
    try:
        assert [s["step"] for s in summary["steps"]] == ["first"]
        assert summary["steps"][0]["result"] == "pass"
        proc.kill()  # SIGKILL: the runner cannot clean up
        proc.wait(timeout=10)
        text = (out / "summary.txt").read_text()
        assert "first" in text and f"running: hang (pid {pid}" in text
        assert (out / "results.tar.gz").is_file()  # the archive of the steps done so far
    finally:
        os.killpg(pid, signal.SIGKILL)  # the orphaned step's group


def test_runner_stopped_with_sigterm_kills_the_step_group_and_writes_the_summary(tmp_path):
    proc, summary, out = start_runner(
        tmp_path, [["first", "echo one", 5], ["hang", "sleep 60", 60]]
    )
    pid = summary["running"]["pid"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 1
    final = json.loads((out / "summary.json").read_text())
    assert final["running"] is None
    assert {s["step"]: s["result"] for s in final["steps"]} == {
        "first": "pass",
        "hang": "failed: interrupted (SIGTERM)",
    }
    assert "the runner got SIGTERM" in final["state"]["interrupted"]
    wait_for(lambda: not alive(pid), timeout=10)


# ----------------------------------------------------------------------------- budgets
def test_grant_scales_tier1_and_caps_tier2():
    t1, t2 = sh("a", "", budget=100), sh("b", "", budget=300, tier=2)
    assert gc.grant(t1, remaining=600, planned_rest=540) == 100
    assert gc.grant(t1, remaining=270, planned_rest=540) == 50  # half the time: half each
    assert gc.grant(t2, remaining=40, planned_rest=0) == 40
    assert gc.grant(t2, remaining=-3, planned_rest=0) == 0
    assert gc.grant(t1, remaining=500, planned_rest=300, inherited=80) == 180


def test_budget_scales_down_then_skips(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "GRACE_S", 0.5)
    monkeypatch.setattr(gc, "MIN_STEP_S", 2)  # the plan's steps: 10 s
    steps = [
        sh("eat", "sleep 30", budget=3),
        sh("next", "echo hi", budget=2),
        sh("extra", "sleep 30", budget=30, tier=2),
    ]
    rc, res, *_ = run_fake(tmp_path, steps, "--budget", "4")
    # 4 s for 5 s of tier-1 budgets: "eat" gets 3 * 4/5 s; then "next" would get 2 * 1.5/2 s,
    # under the minimum, and so would "extra"
    assert re.fullmatch(
        r"failed: timeout after 2s \(budget 3s scaled to 2s\)", res["eat"]["result"]
    )
    assert res["next"]["result"].startswith("skipped: budget")
    assert res["extra"]["result"].startswith("skipped: budget")
    monkeypatch.setattr(gc, "MIN_STEP_S", 1)
    rc, res, *_ = run_fake(tmp_path, [sh("extra", "sleep 30", budget=30, tier=2)], "--budget", "2")
    assert re.fullmatch(r"stopped: budget after 2s \(of its 30s\)", res["extra"]["result"])
    assert rc == 0  # cut by the total budget: not a failure


def test_fallback_step_inherits_the_unused_budget_of_a_failed_build(tmp_path):
    load = sh("load", "echo loaded", budget=1, fallback_for="build")
    _, res, *_ = run_fake(tmp_path, [sh("build", "exit 1", budget=8), load])
    assert res["build"]["result"] == "failed (exit 1)" and res["load"]["granted"] > 8
    _, res, *_ = run_fake(tmp_path, [sh("build", "true", budget=8), load])
    assert res["load"]["granted"] == 1


# ----------------------------------------------------------------------------- outputs
def test_outputs_stay_within_eight_flat_files_and_the_archive_cap(tmp_path, monkeypatch):
    fill = (
        "mkdir -p {res}/bench {res}/deep/a/b && for i in $(seq 30); do echo table $i > "
        "{res}/bench/t$i.md; done && echo x > {res}/deep/a/b/c.txt && "
        "head -c 3000000 /dev/zero | tr '\\0' 'x' > {res}/logs/big.log && "
        "echo 'speed-up table' > {res}/compare.txt"
    )
    *_, out, _ = run_fake(tmp_path, [sh("many", fill), sh("after", "echo ok")])
    files = list(out.rglob("*"))
    assert len(files) <= 8 and all(f.is_file() and f.parent == out for f in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in files)
    assert sorted(f.name for f in files) == [
        "bench.md",
        "results.tar.gz",
        "summary.json",
        "summary.txt",
    ]
    assert (out / "bench.md").read_text().count("table") == 30
    assert (
        "speed-up table" in (out / "summary.txt").read_text()
    )  # compare's table is in the summary
    with tarfile.open(out / "results.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "results/deep/a/b/c.txt" in members and "results/bench/t7.md" in members
    assert members["results/logs/big.log"].size <= gc.LOG_CAP + 100
    # over the archive cap: the biggest non-log files are left out, and listed
    monkeypatch.setattr(gc, "ARCHIVE_CAP", 100_000)
    res_dir = tmp_path / "work" / "results"
    (res_dir / "bench" / "noise.bin").write_bytes(os.urandom(300_000))
    with tarfile.open(fileobj=__import__("io").BytesIO(gc.archive(res_dir))) as tar:
        names = tar.getnames()
        left = tar.extractfile("results/LEFT_OUT").read().decode()
    assert "results/bench/noise.bin" not in names and "bench/noise.bin" in left


# ----------------------------------------------------------------------------- canary and reruns
def test_canary_failures_disable_their_variant_for_later_steps_and_reruns_keep_the_state(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(gc, "GRACE_S", 0.5)
    for var in ("CHARLSTM_DISABLED_VARIANTS", "TORCH_CUDA_ARCH_LIST"):
        monkeypatch.delenv(var, raising=False)
    show = 'echo "disabled=[$CHARLSTM_DISABLED_VARIANTS] arch=$TORCH_CUDA_ARCH_LIST"'
    steps = [
        sh("canary-a", f"{show}; exit 1", gpu=True, canary_for="x:a"),
        sh("canary-b", f"{show}; sleep 30", budget=1, gpu=True, canary_for="x:b"),
        sh(
            "canary-c",
            "echo 'x:c cannot run here: no such unit'; exit 77",
            gpu=True,
            canary_for="x:c",
        ),
        sh("canary-d", show, gpu=True, canary_for="x:d"),
        sh("after", show, gpu=True),
    ]
    rc, res, summary, out, work = run_fake(tmp_path, steps, gpu=FAKE_GPU)
    assert rc == 1  # canary-a and canary-b failed
    logs = work / "results" / "logs"
    assert "disabled=[x:a] arch=9.0" in (logs / "canary-b.log").read_text()  # as each finishes
    assert res["canary-c"]["result"] == "skipped: x:c cannot run here: no such unit"
    assert res["canary-d"]["result"] == "pass"
    assert "disabled=[x:a x:b] arch=9.0" in (logs / "after.log").read_text()
    assert set(summary["state"]["disabled"]) == {"x:a", "x:b"}
    assert "timeout" in summary["state"]["disabled"]["x:b"]
    assert "disabled for later steps: x:a" in (out / "summary.txt").read_text()
    # a rerun of named steps on the same work folder: the first run's arch and disabled variants
    _, res, summary, out, work = run_fake(
        tmp_path, steps, "--steps", "after", gpu=dict(FAKE_GPU, capability="8.0")
    )
    assert "disabled=[x:a x:b] arch=9.0" in (logs / "after.log").read_text()
    assert summary["rerun"] == ["after"] and list(res) == [s.name for s in steps]
    assert res["canary-a"]["result"] == "failed (exit 1)"  # the first run's result, kept
    # a canary that passes on a rerun takes its variant off the list; it never sees itself disabled
    steps[0] = sh("canary-a", show, gpu=True, canary_for="x:a")
    run_fake(tmp_path, steps, "--steps", "canary-a,after", gpu=FAKE_GPU)
    assert "disabled=[x:b] arch=9.0" in (logs / "canary-a.log").read_text()
    assert "disabled=[x:b] arch=9.0" in (logs / "after.log").read_text()
    with pytest.raises(SystemExit, match="unknown step.*nope.*the steps are: canary-a"):
        run_fake(tmp_path, steps, "--steps", "nope")


def test_rerun_reads_the_state_from_a_summary_brought_back(tmp_path):
    _, _, _, out, _ = run_fake(
        tmp_path,
        [sh("canary-a", "exit 1", gpu=True, canary_for="x:a"), sh("after", "true", gpu=True)],
        gpu=FAKE_GPU,
    )
    state = gc.load_state(tmp_path / "elsewhere", out / "summary.json")
    assert state["arch"] == "9.0" and "x:a" in state["disabled"]
    assert [r["step"] for r in state["results"]] == ["canary-a", "after"]
    assert gc.load_state(tmp_path / "elsewhere", None) is None


def test_exec_with_variants_fills_in_the_available_variants(monkeypatch):
    from types import SimpleNamespace as V

    from charlstm import backends

    fake = [
        V(name="reference", available=True),
        V(name="triton:persistent", available=True),
        V(name="triton:step", available=False),
        V(name="cuda:persistent", available=True),
    ]
    monkeypatch.setattr(backends, "kernel_variants", lambda *a, **k: fake, raising=False)
    seen = []
    monkeypatch.setattr(os, "execvp", lambda f, argv: seen.append(argv))
    gc.exec_with_variants(["prog", "--backends", "torch,{variants}", "--only", "{variants:triton}"])
    assert seen == [
        [
            "prog",
            "--backends",
            "torch,triton:persistent,cuda:persistent",
            "--only",
            "triton:persistent",
        ]
    ]
    with pytest.raises(SystemExit, match="no available kernel variant for {variants:rocm}"):
        gc.exec_with_variants(["prog", "{variants:rocm}"])


def test_stale_build_lock_is_removed(tmp_path, monkeypatch):
    lock = tmp_path / "ext" / "charlstm_cuda_ext" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    other = tmp_path / "ext" / "other_ext" / "lock"
    other.parent.mkdir(parents=True)
    other.write_text("")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert gc.remove_stale_build_locks() == [str(lock)]
    assert not lock.exists() and other.exists()


# ----------------------------------------------------------------------------- compare.py
def bench_json(
    path: Path,
    kind: str,
    date: str,
    speedups: dict,
    commit: str = "c0ffee",
    section: str = "row",
    errors: dict = (),
) -> Path:
    """A bench_lstm result file: one torch row and one row per ``(variant, mode): speed-up``."""
    shape = dict(section=section, dtype="bfloat16", batch=16, seq=1024, hidden=768, layers=1)
    rows = [dict(shape, backend="torch", mode="fwd", median_ms=2.0, speedup_vs_torch=1.0)]
    for (variant, mode), s in speedups.items():
        rows.append(dict(shape, backend=variant, mode=mode, median_ms=2.0 / s, speedup_vs_torch=s))
    for (variant, mode), err in dict(errors).items():
        rows.append(dict(shape, backend=variant, mode=mode, error=err))
    env = {"device_kind": kind, "date_utc": date, "git_commit": commit, "cudnn": 91000}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": env, "config": {}, "rows": rows}))
    return path


BASE = {
    ("cuda:persistent", "fwd"): 2.0,
    ("cuda:persistent", "fwd+bwd"): 1.5,
    ("triton:persistent", "fwd"): 1.2,
}


def test_compare_flags_a_15_percent_loss(tmp_path):
    bench_json(
        tmp_path / "results" / "bench_lstm-nvidia-h200-gpu-check-20260101.json",
        "nvidia-h200",
        "2026-01-01T00:00:00Z",
        BASE,
    )
    new = bench_json(
        tmp_path / "new" / "bench_lstm-nvidia-h200-gpu-check.json",
        "nvidia-h200",
        "2026-02-01T00:00:00Z",
        {**BASE, ("cuda:persistent", "fwd"): 1.7},
    )
    code, report, text = compare.run([str(new)], tmp_path / "results")
    assert code == compare.EXIT_REGRESSION and report["verdict"] == "regression"
    bad = [r for r in report["rows"] if r["regressed"]]
    assert [(r["backend"], r["mode"]) for r in bad] == [("cuda:persistent", "fwd")]
    assert bad[0]["change"] == pytest.approx(-0.15)
    assert (
        "| cuda:persistent | bfloat16 | 16 | 1024 | 768 | 1 | fwd | row | 2.000 | 1.700 "
        "| -15.0% | REGRESSION |"
        in text
    )
    assert "REGRESSION: 1 of 3 rows lost more than 10%" in text


def test_compare_passes_a_5_percent_loss_and_writes_json(tmp_path):
    bench_json(
        tmp_path / "results" / "h200" / "bench_lstm-a.json",
        "nvidia-h200",
        "2026-01-01T00:00:00Z",
        BASE,
    )
    bench_json(
        tmp_path / "new" / "bench_lstm-x.json",
        "nvidia-h200",
        "2026-02-01T00:00:00Z",
        {k: v * 0.95 for k, v in BASE.items()},
    )
    out = tmp_path / "report.json"
    code = compare.main(
        [str(tmp_path / "new"), "--baseline-dir", str(tmp_path / "results"), "--json", str(out)]
    )
    assert code == compare.EXIT_OK
    report = json.loads(out.read_text())
    assert report["verdict"] == "ok" and [r["verdict"] for r in report["rows"]] == ["ok"] * 3
    assert all(r["change"] == pytest.approx(-0.05) for r in report["rows"])


def test_compare_says_plainly_when_no_baseline_exists_for_the_gpu_kind(tmp_path, capsys):
    bench_json(
        tmp_path / "results" / "bench_lstm-h100.json",
        "nvidia-h100-80gb-hbm3",
        "2026-01-01T00:00:00Z",
        BASE,
    )
    new = bench_json(
        tmp_path / "new" / "bench_lstm-h200.json", "nvidia-h200", "2026-02-01T00:00:00Z", BASE
    )
    code = compare.main([str(new), "--baseline-dir", str(tmp_path / "results")])
    assert code == compare.EXIT_NO_BASELINE
    assert (
        "no baseline: no committed bench_lstm results for GPU kind 'nvidia-h200'"
        in capsys.readouterr().out
    )
    assert compare.main([str(tmp_path / "none-*.json")]) == compare.EXIT_NO_BASELINE


def test_compare_uses_the_newest_baseline_but_never_the_new_run_itself(tmp_path):
    res = tmp_path / "results"
    bench_json(res / "bench_lstm-k-1.json", "k", "2026-01-01T00:00:00Z", {("v", "fwd"): 3.0})
    bench_json(res / "bench_lstm-k-2.json", "k", "2026-02-01T00:00:00Z", {("v", "fwd"): 2.0})
    # the new run already copied into the results folder, and a copy of it elsewhere
    new = bench_json(
        res / "bench_lstm-k-3.json", "k", "2026-03-01T00:00:00Z", {("v", "fwd"): 1.9}, commit="new"
    )
    copy = bench_json(
        tmp_path / "bench_lstm-k-copy.json",
        "k",
        "2026-03-01T00:00:00Z",
        {("v", "fwd"): 1.9},
        commit="new",
    )
    for path in (new, copy):
        code, report, _ = compare.run([str(path)], res)
        assert code == compare.EXIT_OK, report
        assert report["rows"][0]["base"] == 2.0 and report["baseline_files"] == [
            str(res / "bench_lstm-k-2.json")
        ]


def test_compare_counts_a_new_error_and_lists_rows_not_measured(tmp_path):
    bench_json(tmp_path / "r" / "bench_lstm-b.json", "k", "2026-01-01T00:00:00Z", BASE)
    new = bench_json(
        tmp_path / "bench_lstm-n.json",
        "k",
        "2026-02-01T00:00:00Z",
        {("cuda:persistent", "fwd"): 2.0},
        errors={("cuda:persistent", "fwd+bwd"): "RuntimeError: launch failed"},
    )
    code, report, _ = compare.run([str(new)], tmp_path / "r")
    verdicts = {(r["backend"], r["mode"]): r["verdict"] for r in report["rows"]}
    assert verdicts == {
        ("cuda:persistent", "fwd"): "ok",
        ("cuda:persistent", "fwd+bwd"): "error",
        ("triton:persistent", "fwd"): "not measured",
    }
    assert code == compare.EXIT_REGRESSION
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert compare.main([str(bad)]) == compare.EXIT_BAD_INPUT


def test_compare_keeps_cells_apart_and_reads_old_files_as_lstm(tmp_path):
    """A GRU row of the same shape as an LSTM row is another row (its own baseline, shown with
    its cell); rows of a baseline written before rows had a cell are the LSTM's."""
    bench_json(tmp_path / "r" / "bench_lstm-old.json", "k", "2026-01-01T00:00:00Z", BASE)
    new = bench_json(tmp_path / "bench_lstm-n.json", "k", "2026-02-01T00:00:00Z", BASE)
    data = json.loads(new.read_text())
    for r in list(data["rows"]):
        r["cell"] = "lstm"
        if r["backend"] == "cuda:persistent" and r["mode"] == "fwd":
            data["rows"].append(dict(r, cell="gru", speedup_vs_torch=0.5))
    new.write_text(json.dumps(data))
    code, report, text = compare.run([str(new)], tmp_path / "r")
    verdicts = {(r["backend"], r["mode"], r["cell"]): r["verdict"] for r in report["rows"]}
    assert verdicts[("cuda:persistent", "fwd", "lstm")] == "ok"          # the old row: an LSTM's
    assert verdicts[("cuda:persistent", "fwd", "gru")] == "no baseline row"
    assert code == compare.EXIT_OK
    assert "| cuda:persistent (gru) | bfloat16 | 16 | 1024 | 768 | 1 | fwd | row |" in text


def test_docs_plan_table_matches_the_plan():
    """docs/gpu_check.md's plan table lists every step with its budget and tier, in order."""
    rows = re.findall(
        r"^\| (\d+) \| `([\w-]+)` \| .* \| (\d+) s \| ([12]) \|$",
        (ROOT / "docs" / "gpu_check.md").read_text(),
        re.M,
    )
    assert [(name, int(budget), int(tier)) for _, name, budget, tier in rows] == [
        (s.name, s.budget, s.tier) for s in gc.plan()
    ]


def test_kernel_filter_matches_every_charlstm_kernel_and_nothing_of_torchs():
    """The sanitizer and ncu steps instrument only kernels whose name matches KERNEL_REGEX: a
    renamed kernel must not silently drop out of racecheck/synccheck/memcheck.  Every
    ``__global__`` kernel of csrc/ and every ``@triton.jit`` kernel launched by the triton
    backend must match; a few of torch's and cuDNN's kernel names must not."""
    csrc = "".join(p.read_text() for p in (ROOT / "csrc").glob("*.cu*"))
    cuda = re.findall(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(", csrc)
    triton_src = "".join((ROOT / "charlstm" / "backends" / "triton" / f).read_text()
                         for f in ("forward.py", "backward.py"))
    triton = re.findall(r"@triton\.jit\s+def\s+(\w+_kernel)\s*\(", triton_src)
    assert len(cuda) >= 6 and len(triton) == 2, (cuda, triton)
    pattern = re.compile(gc.KERNEL_REGEX)
    assert [k for k in cuda + triton if not pattern.search(k)] == []
    torch_kernels = ["void at::native::vectorized_elementwise_kernel",
                     "ampere_sgemm_128x64_nn", "cudnn::rnn::RNN_blockPersist_fp_LSTM"]
    assert [k for k in torch_kernels if pattern.search(k)] == []
