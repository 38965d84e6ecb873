"""The benchmark scripts and the GPU check's canary keep working (smoke tests; nothing here
times anything).

Run with ``pytest benchmarks/test_scripts.py`` (about 30 s on a 2-core CPU).  Each script runs
end to end on tiny sizes into a temporary folder, and the files it promises are checked: JSON
with the environment and rows, the Markdown table, the PNG.  ``scripts/gpu_check.py`` itself is
tested in ``tests/test_gpu_check.py``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import bench_lstm, bench_sample, bench_train, common

GPU = torch.cuda.is_available()


def test_rnn_flops_formula():
    # 2*T*B*G*H*(I+H) per layer and direction (G = 4 for the LSTM); layer 2 sees D*H inputs;
    # fwd+bwd = 3x fwd
    assert common.rnn_flops(10, 2, 3, 5) == 2 * 10 * 2 * 4 * 5 * (3 + 5)
    two = 2 * (2 * 10 * 2 * 4 * 5 * (3 + 5)) + 2 * (2 * 10 * 2 * 4 * 5 * (10 + 5))
    assert common.rnn_flops(10, 2, 3, 5, layers=2, directions=2) == two
    assert common.rnn_flops(10, 2, 3, 5, backward=True) == 3 * common.rnn_flops(10, 2, 3, 5)
    assert common.rnn_flops(10, 2, 3, 5, gates=3) == 2 * 10 * 2 * 3 * 5 * (3 + 5)     # GRU


def test_parse_row_and_dtype_errors():
    assert bench_lstm.parse_row("16,1024,768,bf16") == dict(batch=16, seq=1024, hidden=768,
                                                            layers=1, dtype="bfloat16",
                                                            cell="lstm")
    assert bench_lstm.parse_row("1,2,3,float32,3")["layers"] == 3
    assert bench_lstm.parse_row("1,2,3,float32,1,gru")["cell"] == "gru"
    for bad in ("16,1024,768", "a,2,3,float32", "1,2,3,int8", "1,2,3,float32,1,lstmm",
                "1,2,3,float32,1,gru,x"):
        with pytest.raises(Exception, match="--row"):
            bench_lstm.parse_row(bad)
    with pytest.raises(ValueError, match="unknown dtype"):
        common.parse_dtype("float8")


def test_select_backends_puts_torch_first_and_explains_skips(monkeypatch):
    cpu = torch.device("cpu")
    names, skipped = common.select_backends(None, cpu, torch.float32)
    assert names[0] == "torch" and "reference" in names
    assert "triton" in skipped and "interpreter" in skipped["triton"].lower()
    names, _ = common.select_backends(["reference"], cpu, torch.float32)
    assert names == ["torch", "reference"]
    with pytest.raises(ValueError):
        common.select_backends(["nope"], cpu, torch.float32)
    names, skipped = common.select_backends(["Triton", "reference"], cpu, torch.float32,
                                            variants=True)   # a bare name: all its variants
    assert names[0] == "torch" and names[-1] == "reference"
    assert set(names[1:-1]) | set(skipped) == {"triton:persistent", "triton:sequence",
                                               "triton:step"}
    # a backend without the cell is skipped with the registry's reason
    from charlstm import backends
    monkeypatch.setitem(backends._REGISTRY, "reference", dataclasses.replace(
        backends._REGISTRY["reference"], cells=("lstm",)))
    names, skipped = common.select_backends(["reference"], cpu, torch.float32, cell="gru")
    assert names == ["torch"] and "does not implement the gru cell" in skipped["reference"]


def test_time_fn_counts_reps():
    calls = []
    r = common.time_fn(lambda: calls.append(1), torch.device("cpu"), warmup=2, reps=4)
    assert len(calls) == 6 and r["reps"] == 4 and r["timer"] == "perf_counter"
    assert 0 <= r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["peak_mem_mib"] is None


def _load(out, prefix):
    js = sorted(out.glob(f"{prefix}*.json"))
    assert len(js) == 1, list(out.iterdir())
    data = json.loads(js[0].read_text())
    assert js[0].with_suffix(".md").is_file()
    env = data["environment"]
    for key in ("device_name", "torch", "date_utc", "git_commit", "device_kind"):
        assert key in env
    return data, js[0]


def test_bench_lstm_end_to_end(tmp_path):
    argv = ["--batch", "1", "2", "--hidden", "8", "16", "--seq", "3", "--layers", "1",
            "--dtypes", "float32", "--row", "2,4,8,float32,2", "--row", "2,4,8,float32,1,gru",
            "--latency", "--latency-seq", "4",
            "--warmup", "0", "--reps", "1", "--backends", "torch,reference",
            "--device", "cuda" if GPU else "cpu", "--out", str(tmp_path), "--tag", "t"]
    assert bench_lstm.main(argv) == 0
    data, path = _load(tmp_path, "bench_lstm")
    rows = data["rows"]
    assert {r["section"] for r in rows} == {"grid", "row", "latency"}
    # B x H x backends x modes
    assert len([r for r in rows if r["section"] == "grid"]) == 2 * 2 * 2 * 2
    # the GRU row: its torch row is nn.GRU, its FLOPs those of 3 gates
    gru = {(r["backend"], r["mode"]): r for r in rows if r["cell"] == "gru"}
    assert set(gru) == {(b, m) for b in ("torch", "reference") for m in ("fwd", "fwd+bwd")}
    assert {r["cell"] for r in rows if r["section"] != "row"} == {"lstm"}
    r = gru["reference", "fwd"]
    assert r["tflops"] * r["median_ms"] * 1e-3 * 1e12 == pytest.approx(
        common.rnn_flops(4, 2, 8, 8, gates=3))
    for r in rows:
        assert "error" not in r, r
        assert r["median_ms"] > 0 and r["tflops"] > 0
        if r["backend"] == "torch":
            assert r["speedup_vs_torch"] == 1.0
    assert path.with_suffix(".png").is_file()


def test_bench_lstm_killed_run_keeps_what_it_measured(tmp_path, monkeypatch):
    """A run stopped after two of its four configurations (gpu_check.py's timeouts kill hung runs)
    leaves JSON + Markdown with those rows, marked partial; a finished run has no marker."""
    real, calls = bench_lstm.measure, []

    def measure_then_die(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt   # stands in for the SIGTERM/SIGKILL of `timeout`
        return real(*a, **k)

    monkeypatch.setattr(bench_lstm, "measure", measure_then_die)
    argv = ["--batch", "1", "2", "--hidden", "8", "16", "--seq", "3", "--layers", "1",
            "--dtypes", "float32", "--warmup", "0", "--reps", "1", "--modes", "fwd",
            "--backends", "torch", "--device", "cuda" if GPU else "cpu", "--out", str(tmp_path),
            "--tag", "t", "--no-plot"]
    with pytest.raises(KeyboardInterrupt):
        bench_lstm.main(argv)
    data, path = _load(tmp_path, "bench_lstm")
    assert data["config"]["partial"] == "2 of 4 configurations measured"
    assert len(data["rows"]) == 2 and "PARTIAL" in path.with_suffix(".md").read_text()
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(bench_lstm, "measure", real)
    assert bench_lstm.main(argv) == 0
    data, _ = _load(tmp_path, "bench_lstm")
    assert "partial" not in data["config"] and len(data["rows"]) == 4


def test_bench_train_and_sample_end_to_end(tmp_path):
    dev = ["--device", "cuda" if GPU else "cpu", "--out", str(tmp_path),
           "--backends", "torch,reference"]
    assert bench_train.main(["--rnn-size", "8", "--num-layers", "1", "--batch", "2", "--seq", "4",
                             "--iters", "2", "--warmup-iters", "0", "--dtypes", "float32"]
                            + dev) == 0
    data, _ = _load(tmp_path, "bench_train")
    assert [r["backend"] for r in data["rows"]] == ["torch", "reference"]
    assert all(r["chars_per_s"] > 0 and "error" not in r for r in data["rows"])
    # both backends start from the same seed and weights: the same first loss
    assert data["rows"][0]["loss_first"] == pytest.approx(data["rows"][1]["loss_first"], rel=1e-4)
    assert bench_sample.main(["--rnn-size", "8", "--num-layers", "1", "--batches", "1", "3",
                              "--length", "3", "--reps", "1", "--dtypes", "float32"] + dev) == 0
    data, _ = _load(tmp_path, "bench_sample")
    names = {(r["backend"], r["batch"]) for r in data["rows"] if "error" not in r}
    rows = ("plain-nn.LSTM", "torch", "reference") + (
        () if GPU else ("plain-nn.LSTM@1thread", "charlstm-sample"))
    assert names == {(b, n) for b in rows for n in (1, 3)}


def test_gpu_canary_script_runs_under_the_interpreter():
    """scripts/gpu_canary.py (the GPU check's canary steps) on triton:persistent under the
    interpreter, so the script itself cannot rot; on a CPU the barrier has one program per
    batch tile or runs one launch per step, so this checks the script, not the barrier."""
    if GPU:
        pytest.skip("on a GPU the canary steps of scripts/gpu_check.py run it for real")
    pytest.importorskip("charlstm.testing", reason="the canary is written against the variants "
                        "API (charlstm.testing, backends.variants()) of issue 14")
    env = dict(os.environ, TRITON_INTERPRET="1")
    canary = str(common.ROOT / "scripts" / "gpu_canary.py")
    p = subprocess.run([sys.executable, canary, "triton:persistent", "--device", "cpu",
                        "--shape", "4,5,24"], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    want = "triton:persistent float32 T=4 B=5 H=24: ran triton:persistent/triton:persistent"
    assert want in p.stdout
    assert "within the 2x rule" in p.stdout
    p = subprocess.run([sys.executable, canary, "cuda:persistent"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 77, p.stdout + p.stderr   # no GPU: "cannot run here", not a failure
    assert p.stdout.strip().splitlines()[-1].startswith("cuda:persistent cannot run here: ")


def test_gpu_canary_and_sanitizer_take_a_cell():
    """The canary runs a GRU through the same check (the reference core here: every backend's
    cells are the registry's business); the sanitizer case script parses --cells and, without a
    GPU, says it cannot run (77)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    scripts = common.ROOT / "scripts"
    p = subprocess.run([sys.executable, str(scripts / "gpu_canary.py"), "reference", "--device",
                        "cpu", "--shape", "3,4,8", "--cell", "gru"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "reference gru float32 T=3 B=4 H=8: ran reference/reference" in p.stdout
    assert "within the 2x rule" in p.stdout
    p = subprocess.run([sys.executable, str(scripts / "cuda_sanitize_case.py"), "--cells",
                        "gru,nope"], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2 and "--cells 'gru,nope': expected 'all' or names" in p.stderr
    if not GPU:
        p = subprocess.run([sys.executable, str(scripts / "cuda_sanitize_case.py"), "--cells",
                            "all", "cuda:persistent"], capture_output=True, text=True,
                           timeout=120, env=env)
        assert p.returncode == 77 and "no CUDA GPU" in p.stdout


def test_finish_without_matplotlib_skips_the_plot_with_a_note(tmp_path, monkeypatch, capsys):
    """A plot needing matplotlib, which is not installed: the results are written, the plot is
    skipped with a note, the exit code is 0 (bench_lstm used to end in ModuleNotFoundError)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # `import matplotlib` now fails

    def plot(png):
        import matplotlib  # noqa: F401
        return True

    env = common.environment(torch.device("cpu"))
    rc = common.finish("t", None, tmp_path, env, torch.device("cpu"), {}, [{"a": 1}],
                       [("a", "a")], title="t", plot=plot)
    assert rc == 0 and list(tmp_path.glob("t-*.json")) and list(tmp_path.glob("t-*.md"))
    assert not list(tmp_path.glob("*.png"))
    assert "no plot: matplotlib is not installed" in capsys.readouterr().out


def test_bench_cpu_auto_end_to_end(tmp_path):
    """The script behind the CPU ``auto`` rule runs and records both backends and the pick."""
    from benchmarks import bench_cpu_auto
    assert bench_cpu_auto.main(["--seq", "1", "--batch", "1", "--hidden", "8", "512",
                                "--modes", "fwd", "--threads-list", "1", "--reps", "1",
                                "--out", str(tmp_path)]) == 0
    data, _ = _load(tmp_path, "bench_cpu_auto")
    assert [(r["hidden"], r["auto"]) for r in data["rows"]] == [(8, "torch"), (512, "reference")]
    assert all(r["torch_ms"] > 0 and r["reference_ms"] > 0 for r in data["rows"])
