"""Sampling: the CPU step against the ``reference`` backend (logits, state, greedy ids) for each
``--model`` (lstm, gru, rnn), the distribution of its random draws (chi-square), and the
sampler's options and errors."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import charlstm
from charlstm.charrnn import CharRNN, sample
from charlstm.charrnn import checkpoint as ckpt_io
from charlstm.charrnn.cpu_step import CpuStep, cpu_step_reason
from charlstm.charrnn.draw import filter_logits_, pick_next
from charlstm.charrnn.sample import generate, uses_cpu_step
from charlstm.cli import main

VOCAB = "\n .:abcdefghijklmnopqrstuvwxyz"     # 30 characters, sorted


MODELS = ["lstm", "gru", "rnn"]


def _models(L: int, H: int, V: int = len(VOCAB), seed: int = 0, sharpen: float = 1.0,
            recur: float = 1.0, cell: str = "lstm"):
    """The same weights as an ``auto`` model (CPU step) and a ``reference`` one.  ``sharpen``
    scales the decoder (the likeliest character leads by a clear margin) and ``recur`` the
    recurrent layer's weights (richer dynamics: greedy runs of an untrained model otherwise
    repeat one id).  GRU and RNN models get random biases too (char-rnn's init only draws them
    in +-0.08): a misplaced bias (b_hn outside the reset gate) must show."""
    torch.manual_seed(seed)
    m = CharRNN(V, H, L, cell=cell).eval()
    with torch.no_grad():
        m.decoder.weight.mul_(sharpen)
        for name, p in m.rnn.named_parameters():
            if name.startswith("weight"):
                p.mul_(recur)
            elif cell != "lstm":
                p.uniform_(-0.5, 0.5)
    ref = CharRNN(V, H, L, backend="reference", cell=cell).eval()
    ref.load_state_dict(m.state_dict())
    return m, ref


# ---------------------------------------------------------------- the step against the reference
@pytest.mark.parametrize("cell", MODELS)
@pytest.mark.parametrize("L,H,B", [(1, 32, 1), (2, 64, 3), (3, 48, 2)])
def test_cpu_step_logits_and_state_match_reference(L, H, B, cell):
    m, ref = _models(L, H, cell=cell)
    ids = torch.randint(len(VOCAB), (B, 25), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, state = ref(ids)
    step = CpuStep(m, B)
    got = np.stack([step.forward(ids[:, t].numpy()).copy() for t in range(ids.shape[1])], 1)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5)
    mine = step.state()
    assert len(mine) == len(state) == (2 if cell == "lstm" else 1)
    for a, b in zip(mine, state):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", MODELS)
def test_cpu_step_continues_from_a_loaded_state(cell):
    """A state loaded at batch 1 goes to every row, and stepping on from it equals the
    reference run over the whole sequence."""
    m, ref = _models(2, 40, cell=cell)
    ids = torch.randint(len(VOCAB), (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, state = ref(ids[:, :8])
        want, final = ref(ids)
    step = CpuStep(m, 2)
    step.load_state(*state)
    for t in range(8, 12):
        logits = step.forward(ids[0, t].repeat(2).numpy())
    torch.testing.assert_close(torch.from_numpy(logits), want[:, -1].expand(2, -1), rtol=1e-5,
                               atol=1e-5)
    for a, b in zip(step.state(), final):
        torch.testing.assert_close(a, b.expand(-1, 2, -1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="state has"):
        step.load_state(*state, *state)


@pytest.mark.parametrize("cell", MODELS)
@pytest.mark.parametrize("prime,n", [([3, 4, 5, 1], 1), ([7], 3), (None, 2)])
def test_greedy_ids_identical_to_reference(prime, n, cell):
    m, ref = _models(2, 64, sharpen=4.0, recur=5.0, cell=cell)
    prime = None if prime is None else torch.tensor(prime)
    a = generate(m, prime, 150, argmax=True, num_samples=n, cpu_step=True,
                 generator=torch.Generator().manual_seed(5))
    b = generate(ref, prime, 150, argmax=True, num_samples=n, cpu_step=False,
                 generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert len(torch.unique(a)) >= 8     # the run goes somewhere, not one id repeated


def test_auto_on_cpu_uses_the_cpu_step_and_a_named_backend_does_not(monkeypatch):
    m, ref = _models(1, 16)
    assert uses_cpu_step(m) and not uses_cpu_step(ref)
    with charlstm.use_backend("torch"):
        assert not uses_cpu_step(m)
    monkeypatch.setenv("CHARLSTM_BACKEND", "reference")
    assert not uses_cpu_step(m)
    monkeypatch.delenv("CHARLSTM_BACKEND")
    assert "float32" in cpu_step_reason(CharRNN(10, 8, 1).double())
    with pytest.raises(ValueError, match="CpuStep: the model is torch.float64"):
        CpuStep(CharRNN(10, 8, 1).double(), 1)
    relu = CharRNN(10, 8, 1, cell="rnn")
    relu.rnn = charlstm.RNN(8, 8, nonlinearity="relu", batch_first=True)
    assert cpu_step_reason(relu).startswith("the CPU step has no rnn_relu layer")
    assert not uses_cpu_step(relu)          # generate() then runs the model's own steps


def test_cpu_step_keeps_one_torch_thread_inside_and_restores_it():
    m, _ = _models(1, 16)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        generate(m, None, 10, cpu_step=True, chunk=4,
                 on_chunk=lambda ids: seen.append(torch.get_num_threads()))
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- distribution of the draws
def _chi2_critical(df: int, z: float = 3.09) -> float:
    """Upper 0.1% point of chi-square(df) (Wilson-Hilferty; z = 3.09 is the normal's 0.999)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def _chi2_fits(counts: np.ndarray, probs: np.ndarray) -> tuple[bool, float, float]:
    """Whether ``counts`` fit ``probs`` (chi-square at the 0.1% level); characters of zero
    probability must not appear at all."""
    assert counts[probs == 0].sum() == 0, "drew a character of probability 0"
    n = counts.sum()
    keep = probs > 0
    stat = float((((counts - n * probs) ** 2)[keep] / (n * probs[keep])).sum())
    crit = _chi2_critical(int(keep.sum()) - 1)
    return stat < crit, stat, crit


def _expected(logits: np.ndarray, T: float, top_k=None, top_p=None) -> np.ndarray:
    """The target distribution, computed here in float64 without the code under test."""
    z = logits.astype(np.float64) / T
    if top_k is not None:
        z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]
        keep = np.zeros_like(p, dtype=bool)
        keep[order[before < top_p]] = True
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    return p


LOGITS = np.array([2.0, 1.5, 1.0, 0.7, 0.3, 0.0, -0.4, -1.0, -2.0, -3.0], np.float32)
OPTIONS = [dict(T=1.0), dict(T=0.7), dict(T=1.6, top_k=4), dict(T=1.0, top_p=0.8),
           dict(T=0.9, top_k=6, top_p=0.7)]


def _cpu_draws(opts: dict, n: int, seed: int = 0) -> np.ndarray:
    """``n`` draws of :class:`CpuStep` from :data:`LOGITS`, ``n`` rows at once."""
    step = CpuStep(CharRNN(len(LOGITS), 4, 1), n, temperature=opts["T"],
                   top_k=opts.get("top_k"), top_p=opts.get("top_p"),
                   generator=torch.Generator().manual_seed(seed))
    return step.pick(torch.from_numpy(LOGITS).expand(n, -1))


def _model_path_draws(opts: dict, n: int, seed: int = 0) -> np.ndarray:
    ids = pick_next(torch.from_numpy(LOGITS).expand(n, -1), opts["T"], opts.get("top_k"),
                    generator=torch.Generator().manual_seed(seed), top_p=opts.get("top_p"))
    return ids.numpy()


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
@pytest.mark.parametrize("draws", [_cpu_draws, _model_path_draws], ids=["cpu-step", "model-path"])
def test_draws_follow_the_target_distribution(draws, opts):
    want = _expected(LOGITS, opts["T"], opts.get("top_k"), opts.get("top_p"))
    counts = np.bincount(draws(opts, 40_000), minlength=len(LOGITS))
    ok, stat, crit = _chi2_fits(counts, want)
    assert ok, f"chi-square {stat:.1f} >= {crit:.1f}: {counts} vs {want}"


def test_the_chi_square_check_can_fail():
    """The same check rejects draws from a neighbouring distribution (temperature 0.7 vs 1)."""
    counts = np.bincount(_cpu_draws(dict(T=0.7), 40_000), minlength=len(LOGITS))
    assert not _chi2_fits(counts, _expected(LOGITS, 1.0))[0]


def test_first_draw_after_a_prime_follows_the_reference_model():
    """End to end through generate(): the character after the prime, over 20,000 samples,
    follows softmax(reference logits / T) restricted by top-k."""
    m, ref = _models(2, 32)
    prime = torch.tensor([4, 9, 2])
    with torch.no_grad():
        logits = ref(prime.view(1, -1))[0][0, -1].numpy()
    ids = generate(m, prime, 1, num_samples=20_000, temperature=0.8, top_k=12, cpu_step=True,
                   generator=torch.Generator().manual_seed(3))
    counts = np.bincount(ids[:, 0].numpy(), minlength=len(VOCAB))
    ok, stat, crit = _chi2_fits(counts, _expected(logits, 0.8, top_k=12))
    assert ok, f"chi-square {stat:.1f} >= {crit:.1f}"


def test_filter_logits_top_k_and_top_p():
    x = torch.tensor([[3.0, 1.0, 2.0, 0.0, 2.0]])
    assert torch.isinf(filter_logits_(x.clone(), top_k=2)).tolist() == [[False, True, False,
                                                                         True, False]]
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = ~torch.isinf(filter_logits_(p.clone(), top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert (~torch.isinf(filter_logits_(p.clone(), top_p=0.4))).sum() == 1   # the top one stays
    assert not torch.isinf(filter_logits_(p.clone(), top_k=9, top_p=1.0)).any()


@pytest.mark.parametrize("kw,msg", [(dict(temperature=-1), "temperature must be >= 0"),
                                    (dict(top_k=0), r"top_k must be >= 1"),
                                    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
                                    (dict(top_p=1.5), r"top_p must be in \(0, 1\]")])
def test_bad_draw_options_are_clear_errors(kw, msg):
    m, _ = _models(1, 8)
    with pytest.raises(ValueError, match=msg):
        generate(m, None, 5, **kw)


# ---------------------------------------------------------------- sample(): options and errors
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint of an untrained 2x32 model over :data:`VOCAB` (written by hand)."""
    torch.manual_seed(0)
    m = CharRNN(len(VOCAB), 32, 2)
    path = tmp_path_factory.mktemp("sample") / "m.pt"
    ckpt_io.save_atomic({"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION,
                         "config": m.config(), "vocab": VOCAB, "model": m.state_dict()}, path)
    return path


def test_stop_at_ends_each_sample_at_its_first_occurrence(ckpt):
    full = sample(ckpt, length=600, seed=4, num_samples=3)
    stop = full[0][62:65]           # across the 64-character chunk boundary of sample 0
    got = sample(ckpt, length=600, seed=4, num_samples=3, stop_at=stop)
    for f, g in zip(full, got):     # the others stop at their own first one, or run to the end
        at = f.find(stop)
        assert g == (f if at < 0 else f[:at + len(stop)])
    assert len(got[0]) <= 65


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_stop_rules_across_chunk_boundaries(chunk):
    from charlstm.charrnn.sample import _Stops
    text = "ab\ncd--x\nef--\ngh\n"
    for stop_at, lines, want in [("--", None, "ab\ncd--"), (None, 2, "ab\ncd--x\n"),
                                 ("--", 1, "ab\n"), ("f-", 3, "ab\ncd--x\nef-"),
                                 ("zz", None, text), (None, 9, text)]:
        stops = _Stops(1, stop_at, lines)
        fed = "".join(stops.feed(0, text[i:i + chunk]) for i in range(0, len(text), chunk))
        assert fed == stops.texts[0] == want and stops.done[0] == (want != text), (stop_at, lines)


def test_lines_ends_after_the_nth_newline_and_streams_what_it_returns(ckpt):
    out = io.StringIO()
    (text,) = sample(ckpt, length=3000, seed=1, lines=3, prime="ab", stream=out)
    assert text.count("\n") == 3 and text.endswith("\n")
    assert out.getvalue() == "ab" + text + "\n"
    (full,) = sample(ckpt, length=3000, seed=1, prime="ab")
    assert full.startswith(text)
    both = sample(ckpt, length=3000, seed=1, prime="ab", lines=3, stop_at=text[5:8])
    assert both[0] == text[:text.find(text[5:8]) + 3]      # whichever comes first


def test_prime_file_is_the_prime(ckpt, tmp_path):
    f = tmp_path / "prime.txt"
    f.write_text("hello world:\n", encoding="utf-8")
    out = io.StringIO()
    (a,) = sample(ckpt, length=40, seed=2, prime_file=f, stream=out)
    assert out.getvalue().startswith("hello world:\n")
    assert sample(ckpt, length=40, seed=2, prime="hello world:\n") == [a]


@pytest.mark.parametrize("make,msg", [
    (lambda d: dict(prime="x", prime_file=d / "p.txt"), "--prime TEXT or --prime-file FILE, not"),
    (lambda d: dict(prime_file=d / "missing.txt"), r"missing.txt: cannot read it"),
    (lambda d: dict(prime_file=d / "latin1.txt"), r"latin1.txt: not UTF-8 text"),
    (lambda d: dict(stop_at=""), "--stop-at needs a non-empty string"),
    (lambda d: dict(lines=0), "--lines must be >= 1, got 0"),
])
def test_sampler_option_errors(ckpt, tmp_path, make, msg):
    (tmp_path / "p.txt").write_text("abc")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=msg):
        sample(ckpt, length=5, **make(tmp_path))


def test_unknown_prime_characters_error_or_skip_with_a_note(ckpt):
    with pytest.raises(ValueError, match=r"not in the vocabulary.*'É' \(U\+00C9\).*--skip-unknown"):
        sample(ckpt, length=5, prime="cafÉ")
    note, out = io.StringIO(), io.StringIO()
    (a,) = sample(ckpt, length=30, seed=3, prime="caÉfÉ!", skip_unknown=True, note=note,
                  stream=out)
    assert note.getvalue() == ("note: skipped 3 characters of the prime that are not in the "
                               "vocabulary ('!' (U+0021), 'É' (U+00C9))\n")
    assert out.getvalue() == "caf" + a + "\n"
    assert sample(ckpt, length=30, seed=3, prime="caf") == [a]


def test_cli_sample_options(ckpt, tmp_path, capsys):
    f = tmp_path / "prime.txt"
    f.write_text("the ", encoding="utf-8")
    assert main(["sample", str(ckpt), "--prime-file", str(f), "--length", "2000", "--lines", "2",
                 "--top-p", "0.9", "--top-k", "20", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the ") and out.count("\n") == 3      # two lines, then the final one
    assert main(["sample", str(ckpt), "--prime", "É ", "--skip-unknown", "--length", "2000",
                 "--stop-at", "a"]) == 0
    cap = capsys.readouterr()
    assert "note: skipped 1 characters" in cap.err and cap.out.startswith(" ")
    assert cap.out.rstrip("\n").endswith("a") and cap.out.count("a") == 1


@pytest.mark.parametrize("command", ["sample", "eval", "train"])
@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "nonsense"])
def test_unusable_device_is_one_line_and_exit_2(ckpt, tmp_path, capsys, command, device):
    args = {"sample": ["sample", str(ckpt)], "eval": ["eval", str(ckpt), "--data", str(ckpt)],
            "train": ["train", "--data", str(ckpt), "--max-iters", "1", "--checkpoint-dir",
                      str(tmp_path / "ck"), "--no-progress"]}[command]
    assert main(args + ["--device", device]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--device {device!r}" in err and "Traceback" not in err


# ---------------------------------------------------------------- auto on a CPU
def test_auto_on_cpu_per_shape():
    """``auto`` on a CPU: ``reference`` for short calls of wide layers (measured faster; see
    ``charlstm.backends._cpu_auto``), ``torch`` for training / eval shapes, narrow layers,
    other dtypes and other devices."""
    from charlstm.backends import resolve
    cpu = torch.device("cpu")

    def auto(T, B, H, dtype=torch.float32, device=cpu):
        return resolve("auto", device, dtype, batch=B, hidden=H, seq_len=T)
    assert auto(1, 1, 512) == auto(16, 1, 512) == auto(1, 64, 1024) == "reference"
    assert auto(4, 1, 384) == "reference" and auto(16, 1, 384) == "torch"
    assert auto(64, 1, 512) == auto(4, 64, 512) == "torch"
    assert auto(50, 50, 128) == auto(50, 50, 512) == auto(1, 1, 128) == "torch"
    assert auto(1, 1, 512, torch.bfloat16) == "torch"
    assert auto(1, 1, 512, device=torch.device("cuda")) == "torch"
    assert resolve("auto", cpu, torch.float32) == "torch"          # no shape given
