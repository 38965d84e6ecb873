"""charlstm viz: text properties, the cell finder (on a model built by hand so that one known cell
follows quote state, and on one without such a cell), recorded activations against a plain
forward, the self-contained page's data, the PNG, and the command line."""
import base64
import json
import os
import random
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from charlstm.charrnn import CharRNN
from charlstm.charrnn import checkpoint as ckpt_io
from charlstm.charrnn.data import Vocab
from charlstm.cli import main
from charlstm.viz import STRONG, best_match, find_cells, record, text_properties, visualize
from charlstm.viz.page import quantise

QUOTE_LAYER, QUOTE_CELL, DETECTOR, H = 1, 5, 3, 8


def digits(a) -> str:
    return "".join(str(int(v)) for v in a)


def test_text_properties_of_a_python_snippet():
    text = 'x = f("a#b", [1, (2)])  # c\n    s = """q\n"z"\n"""\n'
    p = text_properties(text)
    assert set(p) == {"quote", "column", "indent", "brackets", "comment", "newline"}
    assert all(v.shape == (len(text),) for v in p.values())
    line1 = slice(0, 28)
    # the opening quote is inside, the closing one is not; '#' inside a string is no comment
    assert digits(p["quote"][line1]) == "0000001111000000000000000000"
    assert digits(p["brackets"][line1]) == "0000011111111222233210000000"
    assert digits(p["comment"][line1]) == "0000000000000000000000001110"
    assert list(p["column"][line1]) == list(range(1, 28)) + [0]
    # line 2 opens a triple-quoted string that spans lines 3 and 4 (its '"z"' stays inside)
    assert digits(p["indent"][28:41]) == "1234444444440"
    assert digits(p["quote"][28:49]) == "00000000111111111110" + "0"
    assert digits(p["newline"]) == "".join("1" if c == "\n" else "0" for c in text)
    assert p["comment"][28:].sum() == 0 and p["brackets"][28:].sum() == 0
    # an escaped quote does not close; a single-quoted string ends at the end of its line
    p = text_properties("'a\\'b' 'open\nx")
    assert digits(p["quote"]) == "11111" "00" "11111" "00"


# ---------------------------------------------------------------- a model built by hand
def quote_text(n_lines: int, seed: int = 0) -> str:
    """Lines of words, some of them inside double quotes (balanced on every line), the same
    words inside and outside."""
    rng = random.Random(seed)
    words = ["ab", "cab", "bad", "dab", "a", "cd", "dc", "bbc"]
    lines = []
    for _ in range(n_lines):
        parts = []
        for _ in range(rng.randint(2, 6)):
            w = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
            parts.append(f'"{w}"' if rng.random() < 0.4 else w)
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def hand_built_model(vocab: Vocab, toggle: bool) -> CharRNN:
    """2 x 8 CharRNN, random small weights (char-rnn's init), except: layer 0 cell 3 detects the
    character '"' (h = +0.76 on it, -0.76 elsewhere) and, with ``toggle``, layer 1 cell 5 flips
    its c between +1 and -1 at every '"' (input gate open and forget gate shut only on a quote;
    the candidate is +1 when the cell's previous h is below 0.38, else -1): it follows the quote
    state.  Gate rows (torch's order i, f, g, o): gate k of cell j is row k * H + j."""
    torch.manual_seed(5)
    m = CharRNN(len(vocab), H, 2, backend="auto")
    q = vocab.chars.index('"')
    with torch.no_grad():
        m.embed.weight.mul_(0.5)
        m.embed.weight[:, 0] = 0.0
        m.embed.weight[q, 0] = 1.0                 # only '"' has input dimension 0
        r = m.rnn
        i, f, g, o = (k * H + DETECTOR for k in range(4))
        for row in (i, f, g, o):
            r.weight_ih_l0[row] = 0.0
            r.weight_hh_l0[row] = 0.0
            r.bias_hh_l0[row] = 0.0
        r.bias_ih_l0[i], r.bias_ih_l0[f], r.bias_ih_l0[o] = 20.0, -20.0, 20.0
        r.weight_ih_l0[g, 0], r.bias_ih_l0[g] = 20.0, -10.0
        if toggle:
            i, f, g, o = (k * H + QUOTE_CELL for k in range(4))
            for row in (i, f, g, o):
                r.weight_ih_l1[row] = 0.0
                r.weight_hh_l1[row] = 0.0
                r.bias_hh_l1[row] = 0.0
                r.bias_ih_l1[row] = 0.0
            d = 1 / np.tanh(1.0)                   # detector h = +-tanh(1)
            r.weight_ih_l1[i, DETECTOR], r.weight_ih_l1[f, DETECTOR] = 20 * d, -20 * d
            r.weight_hh_l1[g, QUOTE_CELL], r.bias_ih_l1[g] = -10.0, 3.8
            r.bias_ih_l1[o] = 20.0
    return m.eval()


@pytest.fixture(scope="module")
def quote_setup(tmp_path_factory):
    text = quote_text(45)
    vocab = Vocab("".join(sorted(set(text))))
    d = tmp_path_factory.mktemp("viz")
    paths = {}
    torch.manual_seed(1)
    busy = CharRNN(len(vocab), H, 2)               # large weights: values all over [-1, 1]
    with torch.no_grad():
        for p in busy.rnn.parameters():
            p.uniform_(-1, 1)
    for key, m in ((True, hand_built_model(vocab, True)), (False, hand_built_model(vocab, False)),
                   ("busy", busy)):
        ck = {"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "config": m.config(),
              "vocab": vocab.chars, "model": m.state_dict()}
        paths[key] = d / f"{key}.pt"
        torch.save(ck, paths[key])
    (d / "text.txt").write_text(text)
    acts = {t: record(hand_built_model(vocab, t), vocab, text) for t in (True, False)}
    return text, vocab, paths, acts, d


def test_finder_finds_the_hand_built_quote_cell(quote_setup):
    text, _, _, acts, _ = quote_setup
    found = find_cells(text, acts[True].cells)
    best = found["quote"][0]
    assert (best.layer, best.cell) == (QUOTE_LAYER, QUOTE_CELL), found["quote"]
    assert best.r > 0.95 and best.strong
    # and the page opens on it: it is the strongest match of any property
    assert (best_match(found).layer, best_match(found).cell) == (QUOTE_LAYER, QUOTE_CELL)
    assert found["comment"] == [] and found["indent"] == []        # absent from this text


def test_finder_reports_no_quote_cell_when_there_is_none(quote_setup):
    text, _, _, acts, _ = quote_setup
    found = find_cells(text, acts[False].cells)
    # (the detector cell is there, but it tracks "is a quote character", not quote state)
    assert not found["quote"][0].strong and abs(found["quote"][0].r) < STRONG, found["quote"]


def test_recorded_activations_match_a_plain_forward(quote_setup):
    text, vocab, _, acts, _ = quote_setup
    model = hand_built_model(vocab, True)
    a = acts[True]
    T = len(text)
    assert a.cells["c"].shape == a.cells["h"].shape == (2, T, H)
    assert a.top_ids.shape == a.top_probs.shape == (T, 5)
    n = 300
    with torch.no_grad():
        logits, _ = model(vocab.encode(text[:n]).view(1, -1).long())   # the torch backend
        probs = torch.softmax(logits[0], -1)
    np.testing.assert_allclose(a.top_probs[:n], probs.topk(5, -1).values.numpy(), atol=1e-5)
    ids = vocab.encode(text[:n]).long()
    np.testing.assert_allclose(a.next_prob[:n - 1], probs[torch.arange(n - 1), ids[1:]].numpy(),
                               atol=1e-5)
    assert np.isnan(a.next_prob[-1]) and not np.isnan(a.next_prob[:-1]).any()
    # chunks of 7 characters with the state carried give the same as one pass
    small = record(model, vocab, text[:60], chunk=7)
    np.testing.assert_allclose(small.cells["c"], a.cells["c"][:, :60], atol=1e-6)
    np.testing.assert_allclose(small.cells["h"], a.cells["h"][:, :60], atol=1e-6)
    # tanh(c) and h are consistent: |h| = o * |tanh(c)| <= |tanh(c)|
    assert np.all(np.abs(a.cells["h"]) <= np.abs(a.cells["c"]) + 1e-6)


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_page_is_self_contained_and_holds_the_activations(quote_setup, tmp_path, capsys):
    text, _, paths, acts, d = quote_setup
    res = visualize(paths[True], d / "text.txt", out=tmp_path / "p.html", find=True,
                    png=tmp_path / "p.png", max_chars=200)
    assert (res["layer"], res["cell"], res["kind"]) == (QUOTE_LAYER, QUOTE_CELL, "c")
    html = (tmp_path / "p.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)     # nothing to fetch
    assert "<link" not in html and "@import" not in html
    data = page_data(html)
    assert data["text"] == text[:200] and data["initial"] == {"kind": "c", "layer": 1, "cell": 5}
    assert f"showing 200 of {len(text):,} characters" in data["note"]
    q = np.frombuffer(base64.b64decode(data["acts"]["c"][1]), dtype=np.int8).reshape(H, 200)
    np.testing.assert_array_equal(q, quantise(acts[True].cells["c"][1, :200].T))
    assert np.abs(q / 127 - acts[True].cells["c"][1, :200].T).max() <= 0.5 / 127 + 1e-6
    ids = np.frombuffer(base64.b64decode(data["top_ids"]), dtype="<u2").reshape(200, 5)
    np.testing.assert_array_equal(ids, acts[True].top_ids[:200])
    assert {f["label"] for f in data["found"]} == {"quote", "column", "newline"}   # present
    err = capsys.readouterr().err
    assert re.search(r"inside a quote or string literal\s+layer 1 cell 5 tanh\(c\)\s+r = \+0\.9",
                     err), err
    if res["png"] is not None:
        assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in err


def test_viz_command_line(quote_setup, tmp_path, capsys):
    _, _, paths, _, d = quote_setup
    out = tmp_path / "v.html"
    assert main(["viz", str(paths[False]), "--text", str(d / "text.txt"), "--out", str(out),
                 "--cell", "0:3", "--kind", "h", "--max-chars", "50"]) == 0
    assert page_data(out.read_text())["initial"] == {"kind": "h", "layer": 0, "cell": 3}
    assert "opens on layer 0 cell 3 h" in capsys.readouterr().err
    assert main(["viz", str(paths[False]), "--text", str(d / "text.txt"), "--out", str(out),
                 "--cell", "2:0"]) == 2
    assert "--cell '2:0': the model has layers 0..1 and cells 0..7" in capsys.readouterr().err
    assert main(["viz", str(paths[False]), "--text", str(d / "text.txt"), "--backend",
                 "cudnn"]) == 2
    assert "unknown charlstm backend 'cudnn'" in capsys.readouterr().err
    (tmp_path / "odd.txt").write_text('ab "Zc" €')
    assert main(["viz", str(paths[False]), "--text", str(tmp_path / "odd.txt"), "--out",
                 str(out)]) == 0
    assert "removed characters outside the vocabulary: 'Z' (U+005A), '€'" in \
        page_data(out.read_text())["note"]


# ---------------------------------------------------------------- in a real browser
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
REQUIRE_ENV = "CHARLSTM_REQUIRE_BROWSER"


def chromium() -> str:
    """The Chromium executable ($CHARLSTM_CHROMIUM, else chromium / chromium-browser on PATH).
    Missing: the test fails when $CHARLSTM_REQUIRE_BROWSER=1 (scripts/test.sh sets it after
    installing Debian's chromium), else it is skipped."""
    found = os.environ.get("CHARLSTM_CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")
    if not found:
        msg = ("no Chromium found (install Debian's `chromium` package, or set CHARLSTM_CHROMIUM "
               "to a Chromium/Chrome executable)")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{msg}; {REQUIRE_ENV}=1 (scripts/test.sh) requires the browser test")
        pytest.skip(msg)
    return found


def screenshot(page, fragment: str, tmp_path, name: str):
    """The page as Chromium draws it at 1200 x 900, as an RGB array."""
    from PIL import Image
    png = tmp_path / f"{name}.png"
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / ('profile-' + name)}",
           f"--screenshot={png}", "--window-size=1200,900", page.as_uri() + fragment]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and png.is_file(), (run.returncode, run.stderr[-2000:])
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def colour_count(pixels, rgb) -> int:
    return int(np.all(pixels == np.array(rgb), axis=-1).sum())


def test_page_in_headless_chromium(quote_setup, tmp_path):
    from charlstm.viz.page import BAR
    _, _, paths, _, d = quote_setup
    page = tmp_path / "page.html"
    visualize(paths["busy"], d / "text.txt", out=page, max_chars=700, cell="0:0")
    # a cell with values spread over the scale, and character 40's top-5 box pinned
    shot = screenshot(page, "#select=40", tmp_path, "selected")
    text_area = shot[110:, :760]
    colours, counts = np.unique(text_area.reshape(-1, 3), axis=0, return_counts=True)
    tinted = [(tuple(c), n) for c, n in zip(colours, counts)
              if n >= 40 and c.max() - c.min() > 20]             # backgrounds, not grey glyphs
    assert len(tinted) >= 12, tinted
    red = (text_area[..., 0] > text_area[..., 2] + 40).sum()
    blue = (text_area[..., 2] > text_area[..., 0] + 40).sum()
    assert red > 2000 and blue > 2000, (red, blue)
    assert (text_area.sum(-1) < 150).sum() > 1000                 # dark glyphs: the text
    box_border = colour_count(shot, (240, 160, 0))
    bars = colour_count(shot, BAR)
    assert box_border > 500 and bars > 100, (box_border, bars)
    # without a selection or a hover the box is hidden: the same pixel checks see no box
    plain = screenshot(page, "", tmp_path, "plain")
    assert colour_count(plain, (240, 160, 0)) == 0 and colour_count(plain, BAR) == 0
