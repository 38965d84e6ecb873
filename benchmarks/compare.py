"""Throughput regression check: a new ``bench_lstm`` run against the committed results.

    python benchmarks/compare.py NEW [NEW ...] [--baseline-dir DIR | --baseline FILE ...]
                                 [--threshold 0.10] [--sections row,latency]
                                 [--json REPORT.json] [--text REPORT.txt]

``NEW`` is a ``bench_lstm`` JSON file, a folder of them or a glob.  What is compared is each
row's speed-up over ``torch`` (cuDNN on a GPU) *measured in the same run* (``speedup_vs_torch``),
so a slower or busier machine of the same kind moves both sides and mostly cancels out; raw
milliseconds are never compared.

The baseline (see docs/benchmarks.md): every ``bench_lstm*.json`` under ``--baseline-dir``
(default ``benchmarks/results/``, searched recursively) whose ``environment.device_kind`` is the
new run's (e.g. ``nvidia-h200``); for each row (section, variant, dtype, B, T, H, layers, mode)
the newest file (``environment.date_utc``) that measured it without an error.  The new run's own
files are left out (same path, or same date and commit), so copying them into
``benchmarks/results/`` before comparing changes nothing.  ``--baseline FILE`` pins the files.

A row *regressed* when its speed-up fell below ``(1 - threshold)`` times the baseline's (default
10%), or when it now fails with an error where the baseline measured it.  Rows of the baseline
that the new run did not measure (a variant disabled by the GPU check's canary, say) are listed
as ``not measured``, not counted.

Exit status: 0 no regression; 1 at least one regressed row; 2 bad input (no file, no rows,
several GPU kinds); 3 nothing compared: no baseline exists for this GPU kind, or no new result
file (said plainly).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
THRESHOLD = 0.10
#: the headline rows of the GPU check come from ``--row`` and ``--latency`` (not the grid)
HEADLINE_SECTIONS = ("row", "latency")
KEY_FIELDS = ("section", "backend", "dtype", "batch", "seq", "hidden", "layers", "mode", "cell")
EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_NO_BASELINE = 0, 1, 2, 3


class InputError(Exception):
    """Bad input: reported on stderr, exit status 2."""


class NothingToCompare(Exception):
    """No new result files: said on stdout, exit status 3 (as with no baseline)."""


def expand(paths: Iterable[str], recursive: bool = False) -> list[Path]:
    """Files named directly, through a glob, or as a folder (its ``bench_lstm*.json``)."""
    out = []
    for p in paths:
        hits = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        for h in map(Path, hits):
            if h.is_dir():
                pattern = "**/bench_lstm*.json" if recursive else "bench_lstm*.json"
                out += sorted(h.glob(pattern))
            elif h.is_file():
                out.append(h)
    return out


def load(path: Path) -> dict:
    """One result file: ``{"path", "environment", "rows"}``; InputError when it is not one."""
    try:
        data = json.loads(path.read_text())
        env, rows = data["environment"], data["rows"]
        env["device_kind"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(
            f"{path}: not a bench_lstm result file ({type(e).__name__}: {e})"
        ) from None
    return {"path": path, "environment": env, "rows": rows}


def row_key(row: dict) -> tuple:
    """The row's identity; a row without a ``cell`` (files from before the GRU and RNN rows) is
    an LSTM row."""
    return tuple(row.get(k, "lstm" if k == "cell" else None) for k in KEY_FIELDS)


def _identity(result: dict) -> tuple:
    env = result["environment"]
    return env.get("date_utc"), env.get("git_commit")


def baseline_rows(candidates: Sequence[dict], kind: str, new: Sequence[dict]) -> dict:
    """``{row key: (row, file)}`` from the newest candidate of this kind that has each row."""
    new_paths = {r["path"].resolve() for r in new}
    new_ids = {_identity(r) for r in new}
    mine = [
        c
        for c in candidates
        if c["environment"].get("device_kind") == kind
        and c["path"].resolve() not in new_paths
        and _identity(c) not in new_ids
    ]
    best = {}
    for c in sorted(mine, key=lambda c: c["environment"].get("date_utc") or ""):
        for row in c["rows"]:
            if "error" not in row and row.get("speedup_vs_torch"):
                best[row_key(row)] = (row, c)  # later (newer) files overwrite older ones
    return best


def compare(
    new: Sequence[dict],
    base: dict,
    threshold: float = THRESHOLD,
    sections: Sequence[str] = HEADLINE_SECTIONS,
) -> list[dict]:
    """One entry per compared row: the key fields, ``base``, ``new``, ``change`` (new / base - 1),
    ``verdict`` (``ok``, ``REGRESSION``, ``error``, ``no baseline row``, ``not measured``) and
    ``regressed`` (bool)."""
    entries, seen = [], set()
    for result in new:
        for row in result["rows"]:
            if row.get("section") not in sections or row.get("backend") == "torch":
                continue
            key = row_key(row)
            seen.add(key)
            entry = dict(
                zip(KEY_FIELDS, key),
                base=None,
                new=row.get("speedup_vs_torch"),
                change=None,
                regressed=False,
            )
            if key in base:
                b_row, b_file = base[key]
                entry["base"] = b_row["speedup_vs_torch"]
                entry["baseline_file"] = str(b_file["path"])
            if "error" in row:
                entry["verdict"] = "error" if key in base else "error (no baseline row)"
                entry["regressed"] = key in base
                entry["error"] = row["error"]
            elif key not in base or entry["new"] is None:
                entry["verdict"] = "no baseline row"
            else:
                entry["change"] = entry["new"] / entry["base"] - 1.0
                entry["regressed"] = entry["new"] < (1.0 - threshold) * entry["base"]
                entry["verdict"] = "REGRESSION" if entry["regressed"] else "ok"
            entries.append(entry)
    for key, (b_row, b_file) in sorted(base.items(), key=lambda kv: str(kv[0])):
        if key not in seen and key[0] in sections and key[1] != "torch":
            entries.append(
                dict(
                    zip(KEY_FIELDS, key),
                    base=b_row["speedup_vs_torch"],
                    new=None,
                    change=None,
                    regressed=False,
                    verdict="not measured",
                    baseline_file=str(b_file["path"]),
                )
            )
    return entries


def _num(v, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def table(entries: Sequence[dict]) -> str:
    head = (
        "variant",
        "dtype",
        "B",
        "T",
        "H",
        "L",
        "mode",
        "section",
        "base x cuDNN",
        "new x cuDNN",
        "change",
        "verdict",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        cells = (
            e["backend"] + ("" if e["cell"] == "lstm" else f" ({e['cell']})"),
            e["dtype"],
            e["batch"],
            e["seq"],
            e["hidden"],
            e["layers"],
            e["mode"],
            e["section"],
            _num(e["base"], ".3f"),
            _num(e["new"], ".3f"),
            "n/a" if e["change"] is None else f"{e['change']:+.1%}",
            e["verdict"],
        )
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def run(
    new_paths: Sequence[str],
    baseline_dir: Path = RESULTS_DIR,
    baseline_files: Optional[Sequence[str]] = None,
    threshold: float = THRESHOLD,
    sections: Sequence[str] = HEADLINE_SECTIONS,
) -> tuple[int, dict, str]:
    """The whole comparison: ``(exit status, report dict, text to print)``."""
    files = expand(new_paths)
    if not files:
        raise NothingToCompare(
            f"no new bench_lstm result files in {list(new_paths)}: nothing was compared"
        )
    new = [load(p) for p in files]
    kinds = sorted({r["environment"]["device_kind"] for r in new})
    if len(kinds) != 1:
        raise InputError(
            f"the new results come from several GPU kinds {kinds}: compare one at a time"
        )
    kind = kinds[0]
    if not any(r.get("section") in sections for res in new for r in res["rows"]):
        raise InputError(f"the new results have no rows in the sections {list(sections)}")
    cand_paths = (
        expand(baseline_files) if baseline_files else expand([str(baseline_dir)], recursive=True)
    )
    candidates = []
    for p in cand_paths:
        try:
            candidates.append(load(p))
        except InputError as e:  # an unrelated JSON in the results folder is not fatal
            if baseline_files:
                raise
            print(f"compare: skipping {e}", file=sys.stderr)
    base = baseline_rows(candidates, kind, new)
    where = ", ".join(baseline_files) if baseline_files else str(baseline_dir)
    report = {
        "device_kind": kind,
        "threshold": threshold,
        "sections": list(sections),
        "new_files": [str(p) for p in files],
        "baseline_from": where,
    }
    if not base:
        report.update(
            verdict="no-baseline",
            rows=[],
            message=(
                f"no baseline: no committed bench_lstm results for GPU kind '{kind}' in {where}; "
                f"nothing was compared. Commit this run's results there to make them the baseline "
                f"(docs/benchmarks.md)."
            ),
        )
        return EXIT_NO_BASELINE, report, report["message"]
    entries = compare(new, base, threshold, sections)
    bad = [e for e in entries if e["regressed"]]
    used = sorted({e["baseline_file"] for e in entries if e.get("baseline_file")})
    checked = sum(e["verdict"] in ("ok", "REGRESSION", "error") for e in entries)
    if bad:
        message = (
            f"REGRESSION: {len(bad)} of {checked} rows lost more than {threshold:.0%} of "
            f"their speed-up over cuDNN against the baseline ({kind})"
        )
    else:
        message = (
            f"no regression: {checked} rows within {threshold:.0%} of the baseline's "
            f"speed-up over cuDNN ({kind})"
        )
    report.update(
        verdict="regression" if bad else "ok", rows=entries, baseline_files=used, message=message
    )
    header = (
        f"speed-up over cuDNN (same run) against the committed baseline, {kind}; "
        f"baseline files: {', '.join(used) or 'none'}"
    )
    text = "\n".join([header, "", table(entries), "", message])
    return (EXIT_REGRESSION if bad else EXIT_OK), report, text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "new", nargs="+", help="bench_lstm JSON files of the new run (files, folders or globs)"
    )
    ap.add_argument(
        "--baseline-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where the committed results are (default %(default)s; searched recursively)",
    )
    ap.add_argument(
        "--baseline",
        action="append",
        default=None,
        metavar="FILE",
        help="use these files as the baseline instead (repeatable)",
    )
    ap.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help="largest allowed loss of speed-up, as a fraction (default %(default)s)",
    )
    ap.add_argument(
        "--sections",
        default=",".join(HEADLINE_SECTIONS),
        help="bench_lstm sections to compare (default %(default)s; add grid for all)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    ap.add_argument("--text", type=Path, default=None, help="also write the printed text here")
    args = ap.parse_args(argv)
    try:
        code, report, text = run(
            args.new,
            args.baseline_dir,
            args.baseline,
            args.threshold,
            tuple(s for s in args.sections.split(",") if s),
        )
    except InputError as e:
        print(f"compare: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NothingToCompare as e:
        code, report, text = EXIT_NO_BASELINE, {"verdict": "nothing-to-compare"}, f"compare: {e}"
    print(text)
    for path, content in (
        (args.json, json.dumps(report, indent=1, default=str)),
        (args.text, text),
    ):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
