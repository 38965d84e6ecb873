"""``python -m charlstm train|sample|eval|info`` end to end, in subprocesses, on the bundled corpus."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charlstm.charrnn import checkpoint as ckpt_io
from charlstm.charrnn.data import CACHE_ENV
from charlstm.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env, check=True):
    p = subprocess.run([sys.executable, "-m", "charlstm", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"charlstm {args[0]} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e[CACHE_ENV] = str(tmp_path / "cache")
    e["OMP_NUM_THREADS"] = "1"
    e.pop("CHARLSTM_BACKEND", None)
    return e


def test_train_sample_eval_on_bundled_corpus(tmp_path, env):
    ck = tmp_path / "ck"
    p = run("train", "--max-iters", "20", "--stdlib-cap", "120000", "--rnn-size", "32",
            "--num-layers", "1", "--batch-size", "8", "--seq-length", "32",
            "--eval-val-every", "10", "--checkpoint-dir", str(ck), "--no-progress",
            "--print-every", "10", env=env)
    assert "bundled corpus" in p.stderr and "stdlib" in p.stderr
    assert re.search(r"iter 20/20 \(epoch [\d.]+\): train loss \d", p.stderr)
    assert re.search(r"iter 20 \(epoch [\d.]+\): val loss \d", p.stderr)
    assert {"latest.pt", "best.pt", "metrics.jsonl", "loss_curve.png"} <= {
        f.name for f in ck.iterdir()}
    recs = [json.loads(l) for l in (ck / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in recs if r.get("split") == "train"] == list(range(1, 21))

    s = run("sample", str(ck), "--length", "40", "--prime", "def ", "--seed", "3", env=env)
    text = s.stdout[:-1]
    assert text.startswith("def ") and len(text) == 44
    # --cuda-graph is accepted everywhere; on a CPU it changes nothing
    g = run("sample", str(ck), "--length", "40", "--prime", "def ", "--seed", "3",
            "--cuda-graph", env=env)
    if not torch.cuda.is_available():
        assert g.stdout == s.stdout
    txt = tmp_path / "probe.txt"
    txt.write_text("def f(x):\n    return x + 1  # €\n" * 20, encoding="utf-8")
    e = run("eval", str(ck), "--data", str(txt), env=env)
    last = e.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"loss (\d+\.\d{4}) nats, (\d+\.\d{4}) bits/char, (\d+) chars", last)
    assert m, e.stdout
    if "€" in ckpt_io.load(ck)[0]["vocab"]:
        assert int(m.group(3)) == len(txt.read_text(encoding="utf-8")) - 1
    else:
        assert "skipped 20 out-of-vocabulary characters" in e.stdout
        assert int(m.group(3)) == len(txt.read_text(encoding="utf-8")) - 20 - 1
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes((ck / "latest.pt").read_bytes()[:1000])
    t = run("eval", str(trunc), env=env, check=False)
    assert t.returncode == 2 and "trunc.pt" in t.stderr and "truncated" in t.stderr
    assert "Traceback" not in t.stderr


def test_info_subcommand_delegates(capsys):
    assert main(["info"]) == 0
    assert "torch" in capsys.readouterr().out.lower()


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "missing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--optimizer", "sgd"])
