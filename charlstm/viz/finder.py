"""``--find``: rank every cell by how well it tracks each property of the text.

A candidate is one (kind, layer, cell): ``kind`` is ``"c"`` (the cell's ``tanh(c)``) or ``"h"``.
Its score for a property is the Pearson correlation ``r`` between its value at every character
and the property's value there (:mod:`.features`); the ranking is by ``|r|`` (a cell may track
a property with either sign).  A property that is constant over the text (no comment in it, say)
has no correlation and is reported as absent.  ``|r| >= STRONG`` is reported as a cell that
tracks the property; below it, as "no cell tracks this" with the best ``r`` found.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .features import PROPERTIES, text_properties

__all__ = ["Match", "STRONG", "KIND_LABELS", "find_cells", "best_match", "format_report"]

#: ``|r|`` from which a cell is said to track a property
STRONG = 0.5
KIND_LABELS = {"c": "tanh(c)", "h": "h"}


@dataclass(frozen=True)
class Match:
    prop: str          # a key of PROPERTIES
    kind: str          # "c" (tanh(c)) or "h"
    layer: int
    cell: int
    r: float

    @property
    def strong(self) -> bool:
        return abs(self.r) >= STRONG

    def where(self) -> str:
        return f"layer {self.layer} cell {self.cell} {KIND_LABELS[self.kind]}"


def _correlations(values: np.ndarray, prop: np.ndarray) -> np.ndarray:
    """Pearson r of every row of ``values`` [N, T] with ``prop`` [T] (0 for a constant row)."""
    v = values.astype(np.float64) - values.mean(axis=1, keepdims=True)
    p = prop.astype(np.float64) - prop.mean()
    denom = np.sqrt((v * v).sum(axis=1)) * np.sqrt((p * p).sum())
    num = v @ p
    return np.divide(num, denom, out=np.zeros_like(num), where=denom > 0)


def find_cells(text: str, cells: dict, top: int = 3) -> dict[str, list[Match]]:
    """``{property: best matches, strongest first}`` (an empty list for a property that is
    constant over ``text``).  ``cells``: ``{"c": tanh(c), "h": h}``, each ``[L, T, H]`` with
    ``T == len(text)``."""
    props = text_properties(text)
    names, rows = [], []
    for kind, arr in cells.items():
        L, T, H = arr.shape
        if T != len(text):
            raise ValueError(f"find_cells: {kind} has {T} steps for a text of {len(text)} "
                             "characters")
        rows.append(arr.transpose(0, 2, 1).reshape(L * H, T))        # [L*H, T], cell-major
        names += [(kind, layer, cell) for layer in range(L) for cell in range(H)]
    values = np.concatenate(rows)
    found = {}
    for prop, series in props.items():
        if series.min() == series.max():
            found[prop] = []
            continue
        r = _correlations(values, series)
        best = np.argsort(-np.abs(r), kind="stable")[:top]
        found[prop] = [Match(prop, *names[i], float(r[i])) for i in best]
    return found


def best_match(found: dict[str, list[Match]]) -> Optional[Match]:
    """The strongest match over all properties (None when every property is absent)."""
    firsts = [m[0] for m in found.values() if m]
    return max(firsts, key=lambda m: abs(m.r)) if firsts else None


def format_report(found: dict[str, list[Match]], chars: int) -> str:
    """The ``--find`` report: one line per property, best cell first."""
    width = max(len(v) for v in PROPERTIES.values())
    lines = [f"cells that track properties of the text (Pearson r over {chars} characters; "
             f"|r| >= {STRONG} counts as tracking):"]
    for prop, label in PROPERTIES.items():
        ms = found.get(prop, [])
        if not ms:
            lines.append(f"  {label:<{width}}  absent from the text")
            continue
        m = ms[0]
        head = (f"{m.where()}  r = {m.r:+.3f}" if m.strong else
                f"no cell tracks this (best: {m.where()}, r = {m.r:+.3f})")
        rest = ", ".join(f"{o.layer}:{o.cell} {KIND_LABELS[o.kind]} {o.r:+.2f}" for o in ms[1:])
        lines.append(f"  {label:<{width}}  {head}" + (f"  (next: {rest})" if rest else ""))
    return "\n".join(lines)
