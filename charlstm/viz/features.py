"""Simple properties of a text, one number per character, for finding the cells that track them.

Each property is the value *after reading* character ``t``, which is what a cell's state at step
``t`` can know: the opening quote of a string is already inside it, the closing one is not; a
newline has column 0.  The scanner is Python-flavoured (string prefixes are ignored, escapes and
triple quotes are understood, ``#`` starts a comment outside strings, single-quoted strings end
at a newline); on prose it still gives sensible quote, line and bracket values, except that an
apostrophe opens a "string" until the next one or the end of the line.

================  ==========================================================================
``quote``         1 inside a quote or string literal (``'...'``, ``"..."``, triple-quoted)
``column``        characters read so far in the current line (position in the line)
``indent``        leading spaces/tabs of the current line read so far (indentation depth)
``brackets``      depth of ``()``, ``[]``, ``{}`` outside strings and comments
``comment``       1 inside a ``#`` comment (from the ``#`` to the end of the line)
``newline``       1 on a newline character (the state right after a newline)
================  ==========================================================================
"""
from __future__ import annotations

import numpy as np

__all__ = ["PROPERTIES", "text_properties"]

#: property name -> what it measures (in the order reports list them)
PROPERTIES = {
    "quote": "inside a quote or string literal",
    "column": "position in the line",
    "indent": "indentation depth",
    "brackets": "bracket/paren depth",
    "comment": "inside a comment",
    "newline": "after a newline",
}

_OPEN, _CLOSE = "([{", ")]}"


def text_properties(text: str) -> dict[str, np.ndarray]:
    """Every property of :data:`PROPERTIES` for every character: ``{name: float32 [len(text)]}``."""
    n = len(text)
    out = {name: np.zeros(n, dtype=np.float32) for name in PROPERTIES}
    quote, column, indent, brackets, comment, newline = (out[k] for k in PROPERTIES)
    delim = None            # the open string's delimiter: ' " ''' """ or None
    delim_left = 0          # characters of a triple delimiter still to read (opening/closing)
    closing = False         # the delimiter being read closes the string
    escape = in_comment = False
    leading = True          # still in the line's leading whitespace
    col = ind = depth = 0
    for t, ch in enumerate(text):
        if ch == "\n":
            col = ind = 0
            leading, in_comment, escape = True, False, False
            if delim in ("'", '"'):     # a single-quoted string cannot span lines
                delim = None
            newline[t] = 1
        else:
            col += 1
            if leading and ch in " \t":
                ind += 1
            else:
                leading = False
            if delim_left:                       # inside a triple delimiter
                delim_left -= 1
                if delim_left == 0 and closing:
                    delim, closing = None, False
            elif in_comment:
                pass
            elif delim is not None:
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif text.startswith(delim, t):
                    if len(delim) == 3:
                        delim_left, closing = 2, True
                    else:
                        delim = None
            elif ch == "#":
                in_comment = True
            elif ch in "'\"":
                if text.startswith(ch * 3, t):
                    delim, delim_left = ch * 3, 2
                else:
                    delim = ch
            elif ch in _OPEN:
                depth += 1
            elif ch in _CLOSE:
                depth = max(0, depth - 1)
        quote[t] = delim is not None
        column[t], indent[t], brackets[t], comment[t] = col, ind, depth, in_comment
    return out
