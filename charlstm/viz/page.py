"""The self-contained HTML page of ``charlstm viz``: no network, scripts and styles inline.

The text is shown with every character's background coloured by one cell's value (``tanh(c)``
or ``h``, layer and cell chosen in the page) on a diverging scale (blue -1, white 0, red +1) with
its legend; hovering over a character, or clicking it (which pins it), shows the model's top
guesses for the next character with their probabilities and the probability it gave the
character that actually follows.  The URL fragment can set the view: ``#select=N`` (pin
character N), ``cell=L:N``, ``kind=c|h``, e.g. ``page.html#select=120&cell=1:57&kind=h``.

Storage (the page stays small for long texts): every (kind, layer) is one base64 string of int8
values, ``round(127 * value)``, cell-major (``[H, T]``: one cell's sequence is contiguous); the
top guesses are uint16 vocabulary ids and uint16 probabilities in units of 1/10000, the
probability of the actual next character likewise (65535: none).  About ``2 * L * H`` bytes per
character before base64 (4/3).
"""
from __future__ import annotations

import base64
import html
import json

import numpy as np

from .activations import Activations
from .finder import KIND_LABELS, Match

__all__ = ["render_page", "quantise"]

#: the diverging scale, shared with the PNG figure: colour at -1, 0, +1 (ColorBrewer RdBu ends)
SCALE = ((33, 102, 172), (247, 247, 247), (178, 24, 43))
#: colour of the probability bars in the top-guesses box
BAR = (46, 139, 87)


def quantise(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] as int8 ``round(127 * v)``."""
    return np.clip(np.rint(values * 127.0), -127, 127).astype(np.int8)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _u16(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).astype("<u2")


def page_data(acts: Activations, *, kind: str, layer: int, cell: int, found: list[Match],
              title: str, note: str) -> dict:
    """Everything the page's script reads (JSON-serialisable)."""
    probs = np.rint(np.nan_to_num(acts.top_probs, nan=0.0) * 10000)
    nxt = np.where(np.isnan(acts.next_prob), 65535, np.rint(np.nan_to_num(acts.next_prob) * 10000))
    return {
        "title": title, "note": note, "text": acts.text, "vocab": acts.vocab,
        "layers": acts.layers, "hidden": acts.hidden, "top_k": int(acts.top_ids.shape[1]),
        "kinds": {k: KIND_LABELS[k] for k in acts.cells},
        "acts": {k: [_b64(quantise(v[layer_].T)) for layer_ in range(v.shape[0])]
                 for k, v in acts.cells.items()},
        "top_ids": _b64(_u16(acts.top_ids)), "top_probs": _b64(_u16(probs)),
        "next_prob": _b64(_u16(nxt)),
        "initial": {"kind": kind, "layer": layer, "cell": cell},
        "found": [{"label": m.prop, "kind": m.kind, "layer": m.layer, "cell": m.cell,
                   "r": round(m.r, 3)} for m in found],
        "scale": SCALE, "bar": BAR,
    }


def render_page(acts: Activations, *, kind: str, layer: int, cell: int, found: list[Match],
                title: str, note: str) -> str:
    data = page_data(acts, kind=kind, layer=layer, cell=cell, found=found, title=title,
                     note=note)
    blob = json.dumps(data, ensure_ascii=True).replace("</", "<\\/")
    return (_TEMPLATE.replace("__TITLE__", html.escape(title))
            .replace("__BAR__", "rgb({},{},{})".format(*BAR))
            .replace("__GRADIENT__", ", ".join("rgb({},{},{})".format(*c) for c in SCALE))
            .replace("__DATA__", blob))


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
body { font-family: sans-serif; margin: 12px 16px; color: #222; background: #fff; }
h1 { font-size: 17px; margin: 0 0 4px 0; }
#note { font-size: 13px; color: #555; margin-bottom: 8px; }
#controls { font-size: 14px; margin-bottom: 6px; display: flex; flex-wrap: wrap; gap: 14px;
            align-items: center; }
#controls input { width: 5em; }
#legend { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; }
#legend .bar { width: 160px; height: 12px; border: 1px solid #999;
               background: linear-gradient(to right, __GRADIENT__); }
#found { font-size: 13px; margin-bottom: 8px; }
#found button { margin: 2px 4px 2px 0; font-size: 12px; }
#found button.on { outline: 2px solid #333; }
#main { display: flex; align-items: flex-start; gap: 16px; }
#text { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 14px;
        line-height: 1.45; white-space: pre-wrap; word-break: break-all; flex: 1 1 auto;
        max-width: 96ch; }
#text span { cursor: pointer; padding: 0.14em 0; }   /* the background fills the line box:
                                                         an underscore stays on it */
#text span.nl { color: #999; }
#text span.sel { outline: 2px solid #000; }
#box { position: sticky; top: 8px; min-width: 250px; border: 3px solid #f0a000;
       border-radius: 4px; padding: 8px 10px; font-size: 13px; background: #fffdf5;
       display: none; }
#box table { border-collapse: collapse; margin-top: 6px; }
#box td { padding: 2px 4px; }
#box td.ch { font-family: monospace; font-size: 14px; text-align: center; min-width: 2em;
             background: #eee; }
#box td.ch.actual { background: #ffe08a; }
#box .pbar { height: 10px; background: __BAR__; display: inline-block; }
</style>
</head>
<body>
<h1 id="title"></h1>
<div id="note"></div>
<div id="controls">
  <label>show <select id="kind"></select></label>
  <label>layer <select id="layer"></select></label>
  <label>cell <button id="prev" title="previous cell">&#9664;</button>
    <input id="cell" type="number" min="0" step="1">
    <button id="next" title="next cell">&#9654;</button></label>
  <span id="legend"><span>-1</span><span class="bar"></span><span>+1</span></span>
  <span id="value"></span>
</div>
<div id="found"></div>
<div id="main"><div id="text"></div><div id="box"></div></div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
function bytes(s) {
  const bin = atob(s), u = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
  return u.buffer;
}
const chars = Array.from(D.text), T = chars.length, vocab = Array.from(D.vocab), K = D.top_k;
const acts = {};
for (const k of Object.keys(D.acts)) acts[k] = D.acts[k].map(s => new Int8Array(bytes(s)));
const topIds = new Uint16Array(bytes(D.top_ids)), topP = new Uint16Array(bytes(D.top_probs));
const nextP = new Uint16Array(bytes(D.next_prob));
const view = {kind: D.initial.kind, layer: D.initial.layer, cell: D.initial.cell,
              selected: null, hovered: null};

function colour(v) {
  const [neg, mid, pos] = D.scale, end = v < 0 ? neg : pos, a = Math.min(1, Math.abs(v));
  return "rgb(" + [0, 1, 2].map(i => Math.round(mid[i] + (end[i] - mid[i]) * a)).join(",") + ")";
}
function shown(ch) {
  return ch === " " ? "\\u2423" : ch === "\\n" ? "\\u21b5" : ch === "\\t" ? "\\u21e5" : ch;
}
function value(i) { return acts[view.kind][view.layer][view.cell * T + i] / 127; }

const textEl = document.getElementById("text"), spans = [];
const frag = document.createDocumentFragment();
chars.forEach((ch, i) => {
  const s = document.createElement("span");
  s.dataset.i = i;
  if (ch === "\\n") { s.textContent = "\\u21b5"; s.className = "nl"; }
  else s.textContent = ch;
  frag.appendChild(s);
  spans.push(s);
  if (ch === "\\n") frag.appendChild(document.createTextNode("\\n"));
});
textEl.appendChild(frag);

function paint() {
  for (let i = 0; i < T; i++) {
    const v = value(i);
    spans[i].style.background = colour(v);
    spans[i].style.color = Math.abs(v) > 0.6 ? "#fff" : "#111";
  }
  document.getElementById("kind").value = view.kind;
  document.getElementById("layer").value = view.layer;
  document.getElementById("cell").value = view.cell;
  document.querySelectorAll("#found button").forEach(b => b.classList.toggle("on",
      b.dataset.kind === view.kind && +b.dataset.layer === view.layer &&
      +b.dataset.cell === view.cell));
  showBox();
}
function showBox() {
  const i = view.hovered !== null ? view.hovered : view.selected;
  const box = document.getElementById("box");
  if (i === null) { box.style.display = "none"; return; }
  const follows = i + 1 < T ? chars[i + 1] : null;
  let rows = "";
  for (let k = 0; k < K; k++) {
    const id = topIds[i * K + k], p = topP[i * K + k] / 100, ch = vocab[id];
    rows += "<tr><td class='ch" + (ch === follows ? " actual" : "") + "'>" + esc(shown(ch)) +
      "</td><td><span class='pbar' style='width:" + Math.max(1, Math.round(p * 1.6)) +
      "px'></span></td><td>" + p.toFixed(1) + "%</td></tr>";
  }
  const np = nextP[i];
  box.innerHTML = "<b>after " + esc(shown(chars[i])) + "</b> (character " + i + ")<br>" +
    cellLabel() + " = " + value(i).toFixed(2) + "<br>top " + K + " guesses for the next:" +
    "<table>" + rows + "</table>" + (follows === null ? "" : "next in the text: <b>" +
    esc(shown(follows)) + "</b> " + (np === 65535 ? "" : (np / 100).toFixed(1) + "%"));
  box.style.display = "block";
}
function cellLabel() {
  return "layer " + view.layer + " cell " + view.cell + " " + D.kinds[view.kind];
}
function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
function select(i) {
  if (view.selected !== null) spans[view.selected].classList.remove("sel");
  view.selected = i;
  if (i !== null) spans[i].classList.add("sel");
  showBox();
}
function setCell(c) { view.cell = Math.max(0, Math.min(D.hidden - 1, c | 0)); paint(); }

document.getElementById("title").textContent = D.title;
document.getElementById("note").textContent = D.note;
const kindSel = document.getElementById("kind"), layerSel = document.getElementById("layer");
for (const k of Object.keys(D.kinds)) kindSel.add(new Option(D.kinds[k], k));
for (let l = 0; l < D.layers; l++) layerSel.add(new Option(String(l), String(l)));
document.getElementById("cell").max = D.hidden - 1;
kindSel.onchange = () => { view.kind = kindSel.value; paint(); };
layerSel.onchange = () => { view.layer = +layerSel.value; paint(); };
document.getElementById("cell").onchange = e => setCell(+e.target.value);
document.getElementById("prev").onclick = () => setCell(view.cell - 1);
document.getElementById("next").onclick = () => setCell(view.cell + 1);
const foundEl = document.getElementById("found");
if (D.found.length) foundEl.appendChild(document.createTextNode("found (--find): "));
for (const f of D.found) {
  const b = document.createElement("button");
  b.textContent = f.label + ": " + f.layer + ":" + f.cell + " " + D.kinds[f.kind] + " r=" +
    (f.r > 0 ? "+" : "") + f.r.toFixed(2);
  Object.assign(b.dataset, {kind: f.kind, layer: f.layer, cell: f.cell});
  b.onclick = () => { Object.assign(view, {kind: f.kind, layer: f.layer, cell: f.cell}); paint(); };
  foundEl.appendChild(b);
}
textEl.addEventListener("mouseover", e => {
  if (e.target.dataset.i !== undefined) { view.hovered = +e.target.dataset.i; showBox(); }
});
textEl.addEventListener("mouseleave", () => { view.hovered = null; showBox(); });
textEl.addEventListener("click", e => {
  if (e.target.dataset.i !== undefined) select(+e.target.dataset.i);
});

const params = new URLSearchParams(location.hash.slice(1));
if (params.has("kind") && D.kinds[params.get("kind")]) view.kind = params.get("kind");
if (params.has("cell")) {
  const [l, c] = params.get("cell").split(":").map(Number);
  if (l >= 0 && l < D.layers) view.layer = l;
  if (c >= 0 && c < D.hidden) view.cell = c;
}
paint();
if (params.has("select")) {
  const i = +params.get("select");
  if (i >= 0 && i < T) { select(i); spans[i].scrollIntoView({block: "nearest"}); }
}
</script>
</body>
</html>
"""
