"""Shared helpers for the benchmark scripts: timing, environment metadata, result files.

Nothing here knows about a particular benchmark.  The scripts (``bench_lstm``, ``bench_train``,
``bench_sample``) and ``tests/cudnn_fixtures/generate.py`` import it so that timing, the
environment record and the output format are written once.

Timing rules
------------
* CUDA: ``warmup`` untimed calls, then ``reps`` calls each bracketed by CUDA events; the result is
  the median (and min / max) in milliseconds.  Peak memory is ``torch.cuda.max_memory_allocated``
  over one extra call after a reset of the peak counter, minus what was allocated before it.
* CPU: the same with ``time.perf_counter``; peak memory is reported as ``None`` ("n/a").
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"


def ensure_importable() -> None:
    """Make ``import charlstm`` work when a script is run from a checkout without installing it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def set_interpreter_if_no_gpu() -> None:
    """Switch on the Triton interpreter when there is no CUDA GPU, before charlstm is imported.

    ``TRITON_INTERPRET`` must be set before ``triton.jit`` decorates the kernels; an existing value
    in the environment is kept.
    """
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


# ----------------------------------------------------------------------------- dtypes, devices
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16", "float64": "float64"}


def parse_dtype(name: str):
    """``"bf16"``/``"bfloat16"``/... -> ``torch.bfloat16``; a clear error for anything else."""
    import torch
    key = DTYPES.get(str(name).lower())
    if key is None:
        names = ", ".join(sorted(set(DTYPES.values())))
        raise ValueError(f"unknown dtype {name!r}: expected one of {names}")
    return getattr(torch, key)


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def pick_device(name: str = "auto"):
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``."""
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA GPU")
    return dev


def device_name(device) -> str:
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model() or platform.processor() or "cpu"


def device_kind(device) -> str:
    """A short, file-name-safe label of the machine kind, e.g. ``nvidia-h100-80gb-hbm3`` or ``cpu``.

    Used to name result files and pytest-benchmark baselines: timings are only comparable
    between runs with the same kind.
    """
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return f"cpu-{os.cpu_count()}core"


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _run(cmd: Sequence[str], timeout: float = 10.0) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> Optional[str]:
    """``<sha>`` of HEAD, with ``+dirty`` when tracked files under charlstm/ or csrc/ differ."""
    sha = _run(["git", "rev-parse", "HEAD"])
    if sha is None:
        return None
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", "charlstm", "csrc"])
    return sha + ("+dirty" if dirty else "")


def environment(device) -> dict:
    """Everything needed to interpret a number later: device, driver, library versions, commit,
    date."""
    import torch
    env = {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "device": str(device),
        "device_name": device_name(device),
        "device_kind": device_kind(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": None,
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        # the triton backend's launch setting (charlstm.backends.triton.common.choose_launch)
        "triton_autotune": os.environ.get("CHARLSTM_TRITON_AUTOTUNE", "1") != "0",
        # kernel paths no backend's own choice may pick (the GPU check's canary sets it)
        "disabled_variants": os.environ.get("CHARLSTM_DISABLED_VARIANTS") or None,
        "driver": None,
        "charlstm": None,
        # a busy machine skews timings, CPU ones most: recorded so a reader can tell
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception:  # noqa: BLE001  (triton missing or broken: recorded as None)
        pass
    try:
        import charlstm
        env["charlstm"] = charlstm.__version__
    except Exception:  # noqa: BLE001
        pass
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        env["capability"] = f"{props.major}.{props.minor}"
        env["sm_count"] = props.multi_processor_count
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["driver"] = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
                              f"--id={idx}"])
        env.update(tf32_settings())
    return env


def tf32_settings() -> dict:
    """TF32 state of cuDNN's RNN and of matmuls: the new per-operator ``fp32_precision`` settings
    (torch >= 2.9) where they exist, else the legacy ``allow_tf32`` flags.  Never raises (torch
    refuses to read the legacy flag after a mix of old and new settings)."""
    import torch
    out = {}
    for key, get in (("cudnn_rnn_fp32_precision", lambda: torch.backends.cudnn.rnn.fp32_precision),
                     ("matmul_fp32_precision", lambda: torch.backends.cuda.matmul.fp32_precision),
                     ("cudnn_allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
                     ("matmul_allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32)):
        try:
            out[key] = get()
        except Exception:  # noqa: BLE001
            out[key] = None
    return out


# ----------------------------------------------------------------------------- timing
def synchronize(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device, *, warmup: int = 3, reps: int = 10,
            measure_memory: bool = True) -> dict:
    """Median time of ``fn()`` after ``warmup`` calls; CUDA events on GPU, perf_counter on CPU.

    Returns ``{"median_ms", "min_ms", "max_ms", "reps", "timer", "peak_mem_mib"}``;
    ``peak_mem_mib`` is None on CPU (not measured) and the extra memory one call needs on CUDA.
    """
    import torch
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
        timer = "cuda-events"
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        timer = "perf_counter"
    peak = None
    if measure_memory and device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "reps": reps, "timer": timer, "peak_mem_mib": peak}


def rnn_flops(seq: int, batch: int, input_size: int, hidden: int, layers: int = 1,
              directions: int = 1, backward: bool = False, gates: int = 4) -> float:
    """FLOPs of a recurrent layer with ``gates`` gate blocks (LSTM 4, GRU 3, RNN 1: the
    contract's ``Cell.gates``): ``2*T*B*G*H*(I+H)`` per layer and direction forward (the two
    matrix products; the pointwise work is left out); backward ~ 2x forward.

    Layers above the first see ``directions * H`` inputs.  ``backward=True`` returns forward +
    backward (3x forward).
    """
    total = 0.0
    for layer in range(layers):
        i = input_size if layer == 0 else directions * hidden
        total += directions * 2.0 * seq * batch * gates * hidden * (i + hidden)
    return total * (3.0 if backward else 1.0)


# ----------------------------------------------------------------------------- backends
def select_backends(requested: Optional[Iterable[str]], device, dtype, *,
                    variants: bool = False, cell: str = "lstm") -> tuple[list, dict]:
    """Which backends to run: ``(names, skipped)`` where ``skipped`` maps name -> reason.

    ``variants=False`` (the char-rnn benchmarks): backend names, each kernel backend running its
    own choice of variant.  ``variants=True`` (``bench_lstm``): every concrete kernel path of
    ``charlstm.backends.variants()`` (``triton:step``, ``cuda:persistent``, ...); a bare backend
    name among ``requested`` stands for all its variants.

    Default (``requested`` None): everything registered that can run here, except ``triton`` on
    a CPU (the interpreter is a correctness tool, not a performance target) and ``reference`` on a
    GPU (a Python loop of small kernels: the full grid would take hours); name them to include them.
    ``torch`` always comes first because every ratio is taken against it.  A backend that does
    not implement ``cell`` is skipped with the registry's reason.
    """
    from charlstm import backends as B
    explicit = requested is not None
    names = [B.validate_name(n) for n in requested] if explicit else list(B.BACKENDS)
    if variants:   # a bare backend name -> its concrete names
        names = [c for n in names for c in (
            [v for v in B.NAMES if v.startswith(n + ":")] if n in B.SELECTORS else [n])]
    if "torch" in names:
        names.remove("torch")
    names.insert(0, "torch")
    run, skipped = [], {}
    for n in names:
        backend = B.parse_name(n)[0]
        if backend == "triton" and device.type == "cpu" and not explicit:
            skipped["triton"] = ("Triton interpreter on CPU (slow); pass --backends ...,triton to "
                                 "include it")
            continue
        if n == "reference" and device.type == "cuda" and not explicit:
            skipped[n] = ("the specification (a Python loop of small ops), not a performance "
                          "target on a GPU; pass --backends ...,reference to include it")
            continue
        why = B.unavailable_reason(n, device, dtype, cell)
        if why:
            skipped[n] = why
        else:
            run.append(n)
    return run, skipped


def ran_differently(name: str) -> Optional[str]:
    """``charlstm.backends.last_run()`` as text when a kernel path other than ``name`` ran
    (a bare name's own choice, or a documented fallback such as ``cuda:persistent_tc`` running
    ``cuda:persistent`` for float32); None when ``name`` itself ran, or for ``torch``."""
    from charlstm import backends as B
    ran = B.last_run()
    if not B.is_core(name) or not ran or set(ran.values()) == {name}:
        return None
    return ", ".join(f"{k}: {v}" for k, v in ran.items())


# ----------------------------------------------------------------------------- results
def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub Markdown table; ``columns`` is ``[(key, header), ...]``; missing values are n/a."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def environment_markdown(env: dict) -> str:
    keys = ["date_utc", "device_name", "device_kind", "driver", "torch", "cuda", "cudnn", "triton",
            "triton_interpret", "triton_autotune", "disabled_variants", "git_commit", "python",
            "cpu_count", "torch_threads", "loadavg_1m",
            "loadavg_1m_end"]
    return "\n".join(f"- {k}: {fmt(env.get(k))}" for k in keys)


def write_results(out_dir, name: str, env: dict, config: dict, rows: Sequence[dict],
                  columns: Sequence[tuple[str, str]], title: str,
                  notes: Sequence[str] = ()) -> dict:
    """Write ``<name>.json`` (environment, config, rows) and ``<name>.md`` (a table) into
    ``out_dir``.

    Returns ``{"json": path, "md": path}``.  A CPU run is labelled as such in the title and
    the file name is expected to carry the device kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "environment": env, "config": config, "rows": list(rows),
               "notes": list(notes)}
    jpath = out / f"{name}.json"
    _write_atomic(jpath, json.dumps(payload, indent=1, default=str) + "\n")
    cpu = env.get("device", "").startswith("cpu")
    label = "CPU run: not GPU numbers" if cpu else env.get("device_name")
    md = [f"# {title} ({label})", "", environment_markdown(env), ""]
    md += [f"> {n}" for n in notes]
    if notes:
        md.append("")
    md += [markdown_table(rows, columns), ""]
    mpath = out / f"{name}.md"
    _write_atomic(mpath, "\n".join(md))
    return {"json": str(jpath), "md": str(mpath)}


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: a run killed mid-write (gpu_check's
    timeouts) leaves the previous complete file, never a truncated one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> None:
    print(markdown_table(rows, columns), flush=True)


# ----------------------------------------------------------------------------- corpus
CORPORA = [ROOT.parent / "shared" / "corpora", Path("/work/shared/corpora")]


def find_corpus(name: str = "tinyshakespeare.txt") -> Optional[Path]:
    """The shared corpus file if present (``../shared/corpora/`` from the repo root), else None."""
    for d in CORPORA:
        p = d / name
        if p.is_file():
            return p
    return None


def corpus_tokens(max_chars: int = 1_000_000, seed: int = 0, vocab_if_synthetic: int = 65):
    """``(tokens LongTensor, vocab_size, source)`` from the shared corpus, or synthetic text.

    Synthetic text (uniform random tokens) is only for timing; the source string says which.
    """
    import torch
    path = find_corpus()
    if path is not None:
        text = path.read_text(encoding="utf-8", errors="replace")[:max_chars]
        chars = sorted(set(text))
        index = {c: i for i, c in enumerate(chars)}
        toks = torch.tensor([index[c] for c in text], dtype=torch.long)
        return toks, len(chars), str(path)
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, vocab_if_synthetic, (max_chars,), generator=g)
    return toks, vocab_if_synthetic, "synthetic (no corpus found)"


def default_out_dir(arg: Optional[str]) -> Path:
    return Path(arg) if arg else RESULTS_DIR


def load_charrnn():
    """``CharRNN`` from ``charlstm.charrnn.model``, or SystemExit saying it is not there yet."""
    ensure_importable()
    try:
        from charlstm.charrnn.model import CharRNN
    except ImportError as e:
        raise SystemExit(f"charlstm.charrnn.model.CharRNN is not importable ({e}); "
                         f"this benchmark needs the char-rnn model") from None
    return CharRNN


def add_common_args(ap) -> None:
    """Arguments every script shares: device, backends, output folder, tag."""
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda or cpu")
    ap.add_argument("--backends", type=lambda s: s.split(","), default=None,
                    help="comma-separated backends (default: all available here; torch always "
                         "runs)")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results/)")
    ap.add_argument("--tag", default=None, help="suffix for the output file names")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op CPU threads (default: torch's); 1 steadies timings on a "
                         "busy machine; recorded as torch_threads")


def apply_threads(args) -> None:
    import torch
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def result_name(script: str, env: dict, tag: Optional[str]) -> str:
    return f"{script}-{env['device_kind']}" + (f"-{tag}" if tag else "")


def cpu_notes(device, env: Optional[dict] = None) -> list:
    """Warnings that belong next to the numbers: a CPU run, a busy machine.

    Call it at the end of a run with the ``environment`` taken at its start: the load average is
    compared at both ends (and stored in ``env["loadavg_1m_end"]``).
    """
    notes = []
    if device.type == "cpu":
        notes.append("Measured on a CPU: these are not GPU numbers; they only show that the script "
                     "runs and how the backends compare on this CPU.")
    end = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0
    start = (env or {}).get("loadavg_1m") or 0.0
    if env is not None:
        env["loadavg_1m_end"] = end
    cores = os.cpu_count() or 1
    if max(start, end) > cores:
        notes.append(f"The machine was busy (1-minute load average {start:.0f} at the start, "
                     f"{end:.0f} at the end, on {cores} cores): these timings are unreliable.")
    return notes


def finish(script: str, tag, out_dir, env: dict, device, config: dict, rows: Sequence[dict],
           columns: Sequence[tuple[str, str]], title: str, notes: Sequence[str] = (),
           plot=None) -> int:
    """The common end of every benchmark script: write JSON + Markdown (+ PNG through
    ``plot(path) -> bool``), print the table, the notes and the files written.

    Returns the script's exit code: 1 when every row failed, else 0.
    """
    notes = cpu_notes(device, env) + list(notes)
    out = default_out_dir(out_dir)
    name = result_name(script, env, tag)
    paths = write_results(out, name, env, config, rows, columns, title=title, notes=notes)
    if plot is not None:
        png = out / f"{name}.png"
        try:
            if plot(png):
                paths["png"] = str(png)
        except ModuleNotFoundError as e:   # matplotlib is optional (the `plot` extra)
            if (e.name or "").split(".")[0] != "matplotlib":
                raise
            notes.append(f"no plot: matplotlib is not installed ({e}); pip install matplotlib")
    print_table(rows, columns)
    for n in notes:
        print(n)
    print("wrote " + ", ".join(paths.values()))
    errors = [r for r in rows if "error" in r]
    if errors:
        print(f"{len(errors)} row(s) failed; see the 'error' column", file=sys.stderr)
    return 1 if errors and len(errors) == len(rows) else 0


def write_partial(script: str, tag, out_dir, env: dict, config: dict, rows: Sequence[dict],
                  columns: Sequence[tuple[str, str]], title: str, done: int, total: int) -> None:
    """Write the results so far under the final names, marked partial (``config["partial"]``
    and a note), so that a run killed before :func:`finish` still leaves its measurements;
    :func:`finish` overwrites them.  Quiet: prints nothing."""
    part = dict(config, partial=f"{done} of {total} configurations measured")
    write_results(default_out_dir(out_dir), result_name(script, env, tag), env, part, rows,
                  columns, title=title,
                  notes=[f"PARTIAL: the run stopped or is still running after {done} of {total} "
                         f"configurations"])


def setup_charrnn_run(args):
    """The shared start of the char-rnn benchmarks: device, threads, interpreter mode, and the
    ``CharRNN`` class.  Returns ``(device, CharRNN)``."""
    ensure_importable()
    device = pick_device(args.device)
    apply_threads(args)
    set_interpreter_if_no_gpu()
    return device, load_charrnn()
