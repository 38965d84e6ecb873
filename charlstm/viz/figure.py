"""``charlstm viz --png``: the page's view as a static figure (matplotlib, Agg, no display).

The text, one monospace cell per character, each background coloured by one cell's value on the
page's diverging scale, with a colour bar; at most ``max_lines`` lines of ``max_cols`` columns
(a line that is longer is cut, marked with a grey ellipsis).  Like the essay's cell figures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .page import SCALE

__all__ = ["write_png", "MATPLOTLIB_MISSING"]

MATPLOTLIB_MISSING = "matplotlib is not installed: no --png figure (pip install matplotlib)"


def _lines(text: str, values: np.ndarray, max_lines: int, max_cols: int):
    """``[(line characters, their values, cut)]``: newlines become a visible mark at the end."""
    out, start = [], 0
    for line in text.split("\n"):
        n = len(line) + (start + len(line) < len(text))        # the newline, if there is one
        chars = list(line.replace("\t", " ")) + (["\u21b5"] if n > len(line) else [])
        out.append((chars[:max_cols], values[start:start + n][:max_cols], len(chars) > max_cols))
        start += n
        if len(out) == max_lines or start >= len(text):
            break
    return out


def write_png(path, text: str, values: np.ndarray, title: str, *, max_lines: int = 40,
              max_cols: int = 100, dpi: int = 100) -> Optional[str]:
    """Write the figure; returns a note instead when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import LinearSegmentedColormap, Normalize
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError:
        return MATPLOTLIB_MISSING
    rows = _lines(text, values, max_lines, max_cols)
    cols = max(len(chars) for chars, _, _ in rows)
    cmap = LinearSegmentedColormap.from_list("charlstm", [tuple(c / 255 for c in rgb)
                                                          for rgb in SCALE])
    norm = Normalize(-1.0, 1.0)
    cw, lh = 0.085, 0.19                          # inches per character and per line
    width, height = max(4.0, cols * cw + 0.3), len(rows) * lh + 1.0   # + title, colour bar
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.15 / width, 0.6 / height, cols * cw / width, len(rows) * lh / height))
    ax.set_xlim(0, cols)
    ax.set_ylim(len(rows), 0)
    ax.axis("off")
    for y, (chars, vals, cut) in enumerate(rows):
        for x, (ch, v) in enumerate(zip(chars, vals)):
            ax.add_patch(Rectangle((x, y), 1, 1, color=cmap(norm(v)), linewidth=0))
            if not ch.isspace():
                ax.text(x + 0.5, y + 0.55, ch, ha="center", va="center", family="monospace",
                        fontsize=8.5, color="white" if abs(v) > 0.6 else "#111",
                        alpha=0.6 if ch == "\u21b5" else 1.0)
        if cut:
            ax.text(len(chars) + 0.1, y + 0.55, "\u2026", va="center", fontsize=8.5, color="#888")
    fig.text(0.15 / width, 1 - 0.12 / height, title, va="top", fontsize=10)
    cax = fig.add_axes((0.15 / width, 0.3 / height, min(3.0, cols * cw) / width, 0.1 / height))
    bar = fig.colorbar(ScalarMappable(norm, cmap), cax=cax, orientation="horizontal")
    bar.set_ticks([-1, 0, 1])
    bar.ax.tick_params(labelsize=8)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)
    return None
