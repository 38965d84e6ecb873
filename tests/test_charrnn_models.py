"""``charlstm train --model lstm|gru|rnn``: each model learns, is recorded in its checkpoint and
comes back from it (``sample``, ``eval``, ``--resume`` bit-exact, ``--init-from``); ``--init-from``
across models and ``--resume`` with another ``--model`` are errors naming both; a checkpoint from
before ``--model`` loads as an LSTM; ``charlstm viz`` shows a GRU's / RNN's ``h`` (no ``tanh(c)``).
"""
import io
import json
import re

import pytest
import torch
from test_charrnn_train import SMALL, _cache, grammar_text, unigram_entropy  # noqa: F401

import charlstm
from charlstm.charrnn import checkpoint as ckpt_io
from charlstm.charrnn import evaluate, sample, train
from charlstm.cli import main
from charlstm.viz import record, visualize

LAYER = {"lstm": charlstm.LSTM, "gru": charlstm.GRU, "rnn": charlstm.RNN}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    text = grammar_text(400)
    (d / "g.txt").write_text(text)
    return d, text


@pytest.fixture(scope="module")
def trained(corpus):
    """A small GRU and a small RNN, trained on the grammar (about 1 s each)."""
    d, text = corpus
    out = {}
    for model in ("gru", "rnn"):
        res = train(str(d / "g.txt"), model=model, checkpoint_dir=str(d / model),
                    learning_rate=1e-2, max_iters=60, eval_val_every=30,
                    **dict(SMALL, seq_length=16))
        out[model] = res
    return out


@pytest.mark.parametrize("model", ["gru", "rnn"])
def test_each_model_learns_and_is_recorded_in_its_checkpoint(corpus, trained, model):
    d, text = corpus
    res = trained[model]
    assert res.best_val_loss < 0.75 * unigram_entropy(text), (model, res.best_val_loss)
    ck, path = ckpt_io.load(d / model)
    assert ck["config"]["cell"] == model and ck["train_args"]["model"] == model
    assert len(ck["hidden"]) == 1 and ck["hidden"][0].shape == (1, 8, 32)
    m, _ = ckpt_io.build_model(ck, path)
    assert type(m.rnn) is LAYER[model] and m.rnn.mode in ("GRU", "RNN_TANH")
    # sample (the CPU step of this model, then the model itself) and eval
    for backend in ("auto", "reference"):
        (s,) = sample(d / model, length=40, prime="the ", backend=backend)
        assert len(s) == 40 and set(s) <= set(text)
    r = evaluate(d / model, d / "g.txt", out=io.StringIO())
    assert r["loss"] < 0.8 * unigram_entropy(text)


def test_greedy_sampling_of_a_gru_checkpoint_agrees_across_step_kinds(corpus, trained):
    d, _ = corpus
    cpu = sample(d / "gru", length=60, prime="a dog ", argmax=True, backend="auto")
    ref = sample(d / "gru", length=60, prime="a dog ", argmax=True, backend="reference")
    assert cpu == ref


def test_gru_resume_is_bit_exact(corpus, tmp_path):
    d, _ = corpus
    kw = dict(SMALL, model="gru", rnn_size=16, num_layers=2, dropout=0.1, seq_length=8,
              batch_size=4, eval_val_every=10)
    full = train(str(d / "g.txt"), max_iters=30, checkpoint_dir=str(tmp_path / "a"), **kw)
    train(str(d / "g.txt"), max_iters=17, checkpoint_dir=str(tmp_path / "b"), **kw)
    ck, _ = ckpt_io.load(tmp_path / "b")
    assert len(ck["hidden"]) == 1 and ck["iteration"] == 17
    rest = train(max_iters=30, checkpoint_dir=str(tmp_path / "b"), resume=True, progress=False,
                 plot=False)
    assert rest.train_losses == full.train_losses[17:]      # exact float equality
    with pytest.raises(ValueError, match=r"--model 'lstm' conflicts with the value 'gru' stored"):
        train(checkpoint_dir=str(tmp_path / "b"), resume=True, model="lstm", progress=False)


def test_init_from_keeps_the_model_and_refuses_another(corpus, trained, tmp_path):
    d, _ = corpus
    res = train(str(d / "g.txt"), init_from=str(d / "rnn"), max_iters=3, eval_val_every=3,
                checkpoint_dir=str(tmp_path / "ft"), **dict(SMALL, seq_length=16))
    assert res.iterations == 3
    assert ckpt_io.load(tmp_path / "ft")[0]["config"]["cell"] == "rnn"
    with pytest.raises(ValueError, match=r"--model gru conflicts with .*rnn.*, a rnn model: "
                                         r"--init-from .* do not fit a gru model"):
        train(str(d / "g.txt"), init_from=str(d / "rnn"), model="gru", max_iters=1,
              checkpoint_dir=str(tmp_path / "x"), progress=False)
    with pytest.raises(ValueError, match="bad --model 'lstmm'"):
        train(str(d / "g.txt"), model="lstmm", max_iters=1, checkpoint_dir=str(tmp_path / "y"),
              progress=False)


def test_checkpoint_from_before_model_loads_as_lstm(corpus, tmp_path):
    """An LSTM checkpoint written before ``--model`` existed (no ``cell`` in its config, no
    ``model`` in its train_args) builds, samples, evaluates and resumes as an LSTM."""
    d, _ = corpus
    kw = dict(SMALL, rnn_size=16, seq_length=8, batch_size=4, eval_val_every=5)
    train(str(d / "g.txt"), max_iters=5, checkpoint_dir=str(tmp_path / "old"), **kw)
    path = tmp_path / "old" / ckpt_io.LATEST
    ck = torch.load(path, weights_only=True)
    del ck["config"]["cell"], ck["train_args"]["model"]
    torch.save(ck, path)
    m, _ = ckpt_io.build_model(*ckpt_io.load(path))
    assert type(m.rnn) is charlstm.LSTM and m.cell == "lstm"
    assert len(sample(path, length=5)[0]) == 5
    res = train(max_iters=8, checkpoint_dir=str(tmp_path / "old"), resume=True, progress=False,
                plot=False)
    assert res.iterations == 8
    assert ckpt_io.load(path)[0]["config"]["cell"] == "lstm"


def test_cli_train_model_gru_sample_eval(corpus, tmp_path, capsys):
    d, _ = corpus
    ck = tmp_path / "cli"
    assert main(["train", "--data", str(d / "g.txt"), "--model", "gru", "--rnn-size", "16",
                 "--num-layers", "1", "--seq-length", "8", "--batch-size", "4", "--max-iters",
                 "4", "--eval-val-every", "4", "--checkpoint-dir", str(ck), "--no-progress",
                 "--no-plot"]) == 0
    assert "model 1x16 gru" in capsys.readouterr().err
    assert ckpt_io.load(ck)[0]["config"]["cell"] == "gru"
    assert main(["sample", str(ck), "--length", "10", "--prime", "the"]) == 0
    assert main(["eval", str(ck), "--data", str(d / "g.txt"), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["loss"] > 0
    assert main(["train", "--data", str(d / "g.txt"), "--model", "lstm", "--init-from",
                 str(ck), "--checkpoint-dir", str(tmp_path / "z"), "--no-progress"]) == 2
    assert "--model lstm conflicts with" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["gru", "rnn"])
def test_viz_shows_h_of_a_gru_or_rnn(corpus, trained, tmp_path, model, capsys):
    """The page of a model without a cell state offers ``h`` only and opens on it; ``--kind c``
    is an error naming the model; ``--find`` ranks ``h`` cells; the recorded ``h`` equals the
    layer's plain forward."""
    d, text = corpus
    (tmp_path / "t.txt").write_text(text[:300])
    got = visualize(d / model, tmp_path / "t.txt", out=tmp_path / "p.html", find=True,
                    log=io.StringIO())
    assert got["kind"] == "h" and got["chars"] == 300
    page = (tmp_path / "p.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>',
                                page, re.S).group(1).replace("<\\/", "</"))
    assert data["kinds"] == {"h": "h"} and data["initial"]["kind"] == "h"
    assert all(m.kind == "h" for ms in got["found"].values() for m in ms)
    with pytest.raises(ValueError, match=rf"--kind c: .* is a {model} model, which has no cell "
                                         r"state c; use --kind h"):
        visualize(d / model, tmp_path / "t.txt", out=tmp_path / "q.html", kind="c",
                  log=io.StringIO())
    assert main(["viz", str(d / model), "--text", str(tmp_path / "t.txt"), "--out",
                 str(tmp_path / "r.html"), "--kind", "c"]) == 2
    assert "has no cell state c" in capsys.readouterr().err
    m, vocab = ckpt_io.build_model(*ckpt_io.load(d / model))
    acts = record(m, vocab, text[:300], chunk=128)
    assert set(acts.cells) == {"h"} and acts.cells["h"].shape == (1, 300, 32)
    with torch.no_grad():
        out, _ = m.rnn(m.embed(vocab.encode(text[:300]).long().view(1, -1)))
    torch.testing.assert_close(torch.from_numpy(acts.cells["h"][0]), out[0], atol=2e-6, rtol=0)
