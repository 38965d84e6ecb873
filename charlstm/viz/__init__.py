"""``charlstm viz``: see inside a char-rnn model, as in the essay's cell pages.

:func:`visualize` runs a checkpoint over a text, keeping every layer's ``tanh(c)`` (LSTM) and
``h`` at every character (the layer's ``return_state_sequence``; a GRU or RNN model has ``h``
only) and the top next-character guesses, then writes one self-contained HTML page
(:mod:`.page`), optionally ranks the cells by how well they track simple properties of the text
(:mod:`.finder`, :mod:`.features`) and draws a static PNG of the view (:mod:`.figure`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, TextIO, Union

from .activations import Activations, record
from .features import PROPERTIES, text_properties
from .finder import STRONG, Match, best_match, find_cells, format_report

__all__ = ["visualize", "parse_cell", "record", "Activations", "find_cells", "best_match",
           "format_report", "text_properties", "PROPERTIES", "STRONG", "Match",
           "DEFAULT_MAX_CHARS"]

#: characters shown by default (about 2 * layers * hidden bytes each in the page, x 4/3)
DEFAULT_MAX_CHARS = 2000


def parse_cell(spec: str, layers: int, hidden: int) -> tuple[int, int]:
    """``"L:N"`` (layer and cell, both counted from 0) -> ``(L, N)``, checked against the model."""
    try:
        layer, cell = (int(p) for p in spec.split(":"))
    except ValueError:
        raise ValueError(f"--cell {spec!r}: expected LAYER:CELL, e.g. 1:57 (both from 0)") from None
    if not (0 <= layer < layers and 0 <= cell < hidden):
        raise ValueError(f"--cell {spec!r}: the model has layers 0..{layers - 1} and cells "
                         f"0..{hidden - 1}")
    return layer, cell


def visualize(checkpoint: Union[str, os.PathLike], text: Union[str, os.PathLike], *,
              out: Union[str, os.PathLike] = "viz.html", cell: Optional[str] = None,
              kind: Optional[str] = None, find: bool = False,
              png: Union[str, os.PathLike, None] = None,
              max_chars: int = DEFAULT_MAX_CHARS, device: str = "auto", backend: str = "auto",
              log: Optional[TextIO] = None) -> dict:
    """Write the page for ``checkpoint`` on the text file ``text`` (its first ``max_chars``
    characters; characters outside the vocabulary are removed, with a note).

    The page opens on ``cell`` (``"L:N"``), else on the best cell ``find`` found, else on
    layer 0 cell 0; ``kind`` ``"c"`` shows ``tanh(c)`` (an LSTM's only: a GRU or RNN has no
    cell state), ``"h"`` shows ``h``; None: ``"c"`` for an LSTM, ``"h"`` otherwise.  Returns
    ``{"out", "png", "layer", "cell", "kind", "chars", "found"}``."""
    from ..charrnn import checkpoint as ckpt_io
    from ..charrnn.data import describe_chars
    from ..charrnn.runtime import resolve_device
    log = sys.stderr if log is None else log
    from ..backends import validate_name
    validate_name(backend)                 # an unknown name: ValueError listing the choices
    if kind not in (None, "c", "h"):
        raise ValueError(f"--kind {kind!r}: expected c (tanh(c)) or h")
    if max_chars < 1:
        raise ValueError(f"--max-chars must be >= 1, got {max_chars}")
    ck, path = ckpt_io.load(checkpoint)
    model, vocab = ckpt_io.build_model(ck, path, backend=backend)
    if kind is None:
        kind = "c" if model.has_c else "h"
    if kind == "c" and not model.has_c:
        raise ValueError(f"--kind c: {path} is a {model.cell} model, which has no cell state c; "
                         "use --kind h")
    model.to(resolve_device(device))
    full = Path(text).read_text(encoding="utf-8")
    notes = []
    missing = vocab.missing(full)
    if missing:
        gone = set(missing)
        full = "".join(ch for ch in full if ch not in gone)
        notes.append(f"removed characters outside the vocabulary: {describe_chars(missing)}")
    if not full:
        raise ValueError(f"{text}: no text left to show")
    shown = full[:max_chars]
    notes.insert(0, f"showing {len(shown):,} of {len(full):,} characters" +
                 (f" (--max-chars {max_chars})" if len(full) > max_chars else ""))
    acts = record(model, vocab, shown)
    found = find_cells(shown, acts.cells) if find else {}
    if find:
        print(format_report(found, len(shown)), file=log)
    if cell is not None:
        layer, unit = parse_cell(cell, acts.layers, acts.hidden)
    elif best_match(found) is not None:
        best = best_match(found)
        layer, unit, kind = best.layer, best.cell, best.kind
    else:
        layer, unit = 0, 0
    cfg = ck["config"]
    trained = (f", iteration {ck['iteration']}" if "iteration" in ck else "") + (
        f", val loss {ck['val_loss']:.4f}" if ck.get("val_loss") is not None else "")
    title = (f"charlstm viz: {Path(path).name} ({cfg['num_layers']}x{cfg['rnn_size']}"
             f"{trained}) on {Path(text).name}")
    from .page import render_page
    firsts = [ms[0] for ms in found.values() if ms]
    page = render_page(acts, kind=kind, layer=layer, cell=unit, found=firsts, title=title,
                       note="; ".join(notes) + ". Hover over a character (click to pin it) "
                       "for the model's guesses for the next one.")
    out = Path(out)
    out.write_text(page, encoding="utf-8")
    print(f"charlstm viz: wrote {out} ({out.stat().st_size / 1e6:.2f} MB; {notes[0]}; opens on "
          f"layer {layer} cell {unit} {'tanh(c)' if kind == 'c' else 'h'})", file=log)
    png_written = None
    if png is not None:
        from .figure import write_png
        match = next((m for m in firsts if (m.kind, m.layer, m.cell) == (kind, layer, unit)),
                     None)
        label = f"layer {layer} cell {unit} {'tanh(c)' if kind == 'c' else 'h'}" + (
            f": {PROPERTIES[match.prop]}, r = {match.r:+.2f}" if match else "")
        skipped = write_png(png, shown, acts.cells[kind][layer, :, unit], label)
        if skipped:
            print(f"charlstm viz: {skipped}", file=log)
        else:
            png_written = str(png)
            print(f"charlstm viz: wrote {png}", file=log)
    return {"out": str(out), "png": png_written, "layer": layer, "cell": unit, "kind": kind,
            "chars": len(shown), "found": found}
