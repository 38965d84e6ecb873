"""``python -m charlstm train|sample|eval|info`` end to end, in subprocesses, on the bundled
corpus."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charlstm.charrnn import checkpoint as ckpt_io
from charlstm.charrnn import data as D
from charlstm.charrnn.data import CACHE_ENV
from charlstm.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env, check=True):
    p = subprocess.run([sys.executable, "-m", "charlstm", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"charlstm {args[0]} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def cli_env(cache: Path) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e[CACHE_ENV] = str(cache)
    e["OMP_NUM_THREADS"] = "1"
    e.pop("CHARLSTM_BACKEND", None)
    return e


#: The learning check's budget, about 6 s of CPU on one thread: a 1x128 model, 200 iterations of
#: 16 streams x 64 characters on the first 300 kB of the bundled corpus (well under one epoch).
STDLIB_CAP = 300_000
LEARN_ARGS = ["--max-iters", "200", "--stdlib-cap", str(STDLIB_CAP), "--rnn-size", "128",
              "--num-layers", "1", "--batch-size", "16", "--seq-length", "64",
              "--learning-rate", "5e-3", "--eval-val-every", "100", "--print-every", "100",
              "--seed", "1", "--no-progress"]
#: Final val loss measured with LEARN_ARGS (seeds 1-4; torch 2.13.0+cpu, Python 3.11 stdlib):
#: 1.946, 1.923, 1.918, 1.929 nats.  On the same split a unigram model scores 3.11 nats, a
#: bigram model 2.43 (the test recomputes the bigram figure for this Python's stdlib).  Above:
#: the worst seed + 0.1.  Below: the 2x128 model reaches 1.32 only after 300 s (README), so a
#: loss under 1.3 after 6 s means the targets leaked into the inputs.
VAL_LOSS_MAX, VAL_LOSS_MIN = 2.05, 1.3


@pytest.fixture(scope="module")
def trained_cli(tmp_path_factory):
    """One CLI training run on the bundled corpus, shared: (checkpoint dir, process, env)."""
    d = tmp_path_factory.mktemp("cli")
    e = cli_env(d / "cache")
    ck = d / "ck"
    p = run("train", *LEARN_ARGS, "--checkpoint-dir", str(ck), env=e)
    return ck, p, e


def bigram_val_cross_entropy(cap: int) -> float:
    """Cross-entropy (nats/char) on the val split of a bigram model fitted to the train split
    (add-one smoothing): what a model that uses one character of context gets."""
    corpus = D.load_corpus(None, stdlib_cap=cap, use_cache=False)
    train_ids, val_ids, _ = D.split(corpus.ids.long(), 0.95, 0.05)
    V = len(corpus.vocab)
    counts = torch.ones(V, V, dtype=torch.float64)
    counts.index_put_((train_ids[:-1], train_ids[1:]), torch.ones(len(train_ids) - 1,
                                                                  dtype=torch.float64),
                      accumulate=True)
    logp = (counts / counts.sum(1, keepdim=True)).log()
    return -logp[val_ids[:-1], val_ids[1:]].mean().item()


def test_cli_training_learns_the_bundled_corpus(trained_cli):
    """Real text: the CLI run reaches a stated validation loss, well below a bigram model's."""
    ck, _, _ = trained_cli
    recs = [json.loads(line) for line in (ck / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in recs if r.get("split") == "val"]
    assert [r["iter"] for r in val] == [100, 200]
    bigram = bigram_val_cross_entropy(STDLIB_CAP)
    assert VAL_LOSS_MAX < bigram - 0.2, f"bound {VAL_LOSS_MAX} too close to bigram {bigram:.3f}"
    assert VAL_LOSS_MIN < val[-1]["loss"] < VAL_LOSS_MAX, (val[-1]["loss"], bigram)
    assert val[-1]["loss"] < val[0]["loss"]


def test_train_sample_eval_on_bundled_corpus(tmp_path, trained_cli):
    ck, p, env = trained_cli
    assert "bundled corpus" in p.stderr and "stdlib" in p.stderr
    assert re.search(r"iter 200/200 \(epoch [\d.]+\): train loss \d", p.stderr)
    assert re.search(r"iter 200 \(epoch [\d.]+\): val loss \d", p.stderr)
    assert {"latest.pt", "best.pt", "metrics.jsonl", "loss_curve.png"} <= {
        f.name for f in ck.iterdir()}
    recs = [json.loads(line) for line in (ck / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in recs if r.get("split") == "train"] == list(range(1, 201))

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
