"""Generate the stored cuDNN fixtures (LSTM, GRU, RNN) that the CPU tests check the kernels
against.

Usage (from the repository root)::

    python tests/cudnn_fixtures/generate.py                 # on a GPU: torch.nn.LSTM via cuDNN
    python tests/cudnn_fixtures/generate.py --device cpu    # CPU stand-in (torch's native CPU LSTM)
    python tests/cudnn_fixtures/generate.py --out DIR       # write elsewhere (default: this folder)

For every case of :data:`CASES` and every dtype (float32, float16, bfloat16) it stores:

* ``inputs``: ``x`` (padded ``[T, B, I]``), ``lengths`` (packed cases; packed with
  ``enforce_sorted=False``), ``h0``/``c0`` (or None: "no initial state"; ``c0`` always None for
  the cells without a cell state), every parameter by its torch name, and the fixed upstream
  gradients ``dy`` (padded, zero past each length), ``dh_n``, ``dc_n`` (LSTM; else None);
* ``outputs``: ``y`` (padded, zeros past each length), ``h_n``, ``c_n`` (LSTM) from torch's layer
  of the case's cell (``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` tanh or relu);
* ``grads``: of ``sum(y*dy) + sum(h_n*dh_n) [+ sum(c_n*dc_n)]`` with respect to ``x``, ``h0``,
  ``c0`` and each parameter.

Most cases are LSTM cases; the GRU and RNN cells have a few each (:data:`CASES`' ``cell``): the
same time budget on a GPU, fewer shapes per cell.

A case that raises on the device is stored with ``"error"`` instead of outputs (the other cases
are kept) and the script exits 1; the tests skip that case and the consistency test fails.

All inputs are drawn on the CPU in float32 from a per-case seed and then rounded to the dtype,
so every machine stores exactly the same inputs; only the outputs and gradients depend on the
device.  TF32 is switched off while generating so the float32 fixtures are true float32.

Files: ``<family>_<dtype>.pt`` per family of cells (``lstm``, ``gru``, ``rnn``: :data:`FAMILIES`;
``torch.load(..., weights_only=True)`` loads them) and ``metadata.json`` (the same metadata,
readable).  ``metadata["source"]`` says where the numbers came from: ``"cudnn"``, ``"torch-cpu
(stand-in for cuDNN)"``, or -- should torch not call cuDNN for a family and dtype on the GPU,
which the generator checks with the profiler -- ``"torch-cuda without cuDNN ..."``
(``metadata.json["sources"]`` has it per file, ``<family>_<dtype>``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FORMAT = 2     # 2: a cell per case, one file per family of cells (1: LSTM only)
DTYPES = ("float32", "float16", "bfloat16")
SOURCE_CUDNN = "cudnn"
SOURCE_CPU = "torch-cpu (stand-in for cuDNN)"
SOURCE_CUDA_NATIVE = "torch-cuda without cuDNN (cuDNN did not run for this dtype)"
SOURCES = {SOURCE_CUDNN: "cudnn", SOURCE_CPU: "cpu-standin", SOURCE_CUDA_NATIVE: "cuda-native"}

#: The case list.  Shapes are small on purpose (H <= 48, B <= 4): the files stay well under
#: 5 MB and the Triton interpreter can run every case on a CPU.  A case's seed is 1000 + its
#: index: new cases go at the end.
CASES = [
    dict(name="odd_hidden", input_size=10, hidden=37, layers=1, batch=3, seq=7, init_state=True),
    dict(name="batch1", input_size=8, hidden=32, layers=1, batch=1, seq=9, init_state=False),
    dict(name="seq1", input_size=12, hidden=24, layers=1, batch=4, seq=1, init_state=True),
    dict(name="long_seq", input_size=6, hidden=16, layers=1, batch=2, seq=512, init_state=True),
    dict(name="multilayer", input_size=9, hidden=20, layers=3, batch=3, seq=6, init_state=True),
    dict(name="multilayer_no_state", input_size=9, hidden=20, layers=2, batch=2, seq=5,
         init_state=False),
    dict(name="bidirectional", input_size=7, hidden=18, layers=2, batch=3, seq=6,
         bidirectional=True, init_state=True),
    dict(name="proj", input_size=8, hidden=24, layers=2, batch=2, seq=5, proj_size=8,
         init_state=True),
    dict(name="packed", input_size=5, hidden=16, layers=1, batch=4, seq=7,
         lengths=[5, 7, 1, 3], init_state=True),
    dict(name="packed_bidir_no_state", input_size=5, hidden=20, layers=2, batch=4, seq=6,
         bidirectional=True, lengths=[2, 6, 4, 1], init_state=False),
    dict(name="packed_proj_bidir", input_size=6, hidden=48, layers=1, batch=3, seq=5,
         bidirectional=True, proj_size=12, lengths=[4, 5, 2], init_state=True),
    # the cells without a cell state: an odd hidden size with a state, unsorted packed
    # bidirectional layers with a state (lengths sorted by [1, 2, 0, 3], a 3-cycle: not its own
    # inverse), several layers without one
    dict(name="gru_odd_hidden", cell="gru", input_size=10, hidden=37, layers=1, batch=3, seq=7,
         init_state=True),
    dict(name="gru_packed_bidir", cell="gru", input_size=5, hidden=20, layers=2, batch=4, seq=6,
         bidirectional=True, lengths=[2, 6, 4, 1], init_state=True),
    dict(name="gru_multilayer_no_state", cell="gru", input_size=9, hidden=20, layers=3, batch=2,
         seq=5, init_state=False),
    dict(name="rnn_tanh_odd_hidden", cell="rnn_tanh", input_size=10, hidden=37, layers=1,
         batch=3, seq=7, init_state=True),
    dict(name="rnn_tanh_packed_bidir", cell="rnn_tanh", input_size=5, hidden=20, layers=2,
         batch=4, seq=6, bidirectional=True, lengths=[2, 6, 4, 1], init_state=True),
    dict(name="rnn_relu_multilayer", cell="rnn_relu", input_size=9, hidden=20, layers=2, batch=3,
         seq=6, init_state=True),
]
_DEFAULTS = dict(cell="lstm", bidirectional=False, proj_size=0, lengths=None)
#: fixture files: family -> its cells (a case's file is its cell's family)
FAMILIES = {"lstm": ("lstm",), "gru": ("gru",), "rnn": ("rnn_tanh", "rnn_relu")}


def family_of(cell: str) -> str:
    """The fixture file family of a cell: ``rnn_tanh`` -> ``rnn``."""
    return next(f for f, cells in FAMILIES.items() if cell in cells)


def family_cases(family: str) -> list:
    """``(seed, config)`` of the cases stored in ``family``'s files, in :data:`CASES` order."""
    return [(1000 + i, case_config(c)) for i, c in enumerate(CASES)
            if family_of(case_config(c)["cell"]) == family]


def case_config(case: dict) -> dict:
    cfg = dict(_DEFAULTS)
    cfg.update(case)
    return cfg


def build_module(cfg: dict, backend=None, **kwargs) -> torch.nn.RNNBase:
    """The case's layer (weights uninitialised in meaning: load them after): torch's own
    (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) when ``backend`` is None, else charlstm's on
    ``backend``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from charlstm.family import make_layer
    if cfg["proj_size"]:
        kwargs["proj_size"] = cfg["proj_size"]
    if backend is not None:
        kwargs["backend"] = backend
    return make_layer(cfg["cell"], cfg["input_size"], cfg["hidden"], plain=backend is None,
                      num_layers=cfg["layers"], bidirectional=cfg["bidirectional"], **kwargs)


def make_inputs(cfg: dict, seed: int, dtype: torch.dtype) -> dict:
    """Seeded inputs drawn on the CPU in float32, rounded to ``dtype`` (identical on every
    machine)."""
    g = torch.Generator().manual_seed(seed)
    T, B, H, I = cfg["seq"], cfg["batch"], cfg["hidden"], cfg["input_size"]  # noqa: E741
    D = 2 if cfg["bidirectional"] else 1
    h_out = cfg["proj_size"] or H
    has_c = cfg["cell"] == "lstm"
    shapes = build_module(cfg, device="meta")
    k = 1.5 / H ** 0.5        # a little wider than torch's init so the gates are not all linear
    params = {name: ((torch.rand(p.shape, generator=g) * 2 - 1) * k).to(dtype)
              for name, p in shapes.named_parameters()}

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    x = randn(T, B, I)
    dy = randn(T, B, D * h_out)
    lengths = cfg["lengths"]
    if lengths is not None:
        if len(lengths) != B or max(lengths) != T or min(lengths) < 1:
            raise ValueError(f"case {cfg['name']}: lengths {lengths} must have {B} entries in "
                             f"1..{T} with max {T}")
        pad = torch.arange(T).unsqueeze(1) >= torch.tensor(lengths).unsqueeze(0)   # [T, B]
        x = x.masked_fill(pad.unsqueeze(-1), 0)
        dy = dy.masked_fill(pad.unsqueeze(-1), 0)
    inputs = {"x": x, "lengths": lengths, "params": params, "dy": dy,
              "dh_n": randn(cfg["layers"] * D, B, h_out), "dc_n": randn(cfg["layers"] * D, B, H),
              "h0": None, "c0": None}
    if cfg["init_state"]:
        inputs["h0"] = randn(cfg["layers"] * D, B, h_out, scale=0.5)
        inputs["c0"] = randn(cfg["layers"] * D, B, H, scale=0.5)
    if not has_c:      # drawn all the same, so that every case draws the same numbers for x etc.
        inputs["c0"] = inputs["dc_n"] = None
    return inputs


def run_case(module: torch.nn.Module, cfg: dict, inputs: dict, device: torch.device,
             compute_dtype: torch.dtype) -> tuple[dict, dict]:
    """Forward and backward of ``module`` (a layer of the case's cell, torch's or charlstm's)
    on the stored inputs.

    The inputs are moved to ``device`` and cast to ``compute_dtype``; ``module`` must already be
    on that device and dtype, and its parameters are overwritten with the stored ones.  Returns
    ``(outputs, grads)`` on the CPU in ``compute_dtype``: ``y`` padded (zeros past each length),
    ``h_n``, ``c_n`` (LSTM only); grads of ``x``, ``h0``, ``c0`` (None without initial state or
    cell state) and every parameter.  ``tests/test_cudnn_fixtures.py`` calls this same function
    for the backends.
    """
    def to(t):
        return None if t is None else t.to(device=device, dtype=compute_dtype)

    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(inputs["params"][name].to(device=device, dtype=compute_dtype))
    module.zero_grad(set_to_none=True)
    has_c = cfg["cell"] == "lstm"
    x = to(inputs["x"]).requires_grad_(True)
    given = []                                       # the initial state tensors: h0 (, c0)
    if inputs["h0"] is not None:
        given = [to(inputs[k]).requires_grad_(True) for k in ("h0", "c0")[:1 + has_c]]
    hx = None if not given else (tuple(given) if has_c else given[0])
    lengths = inputs["lengths"]
    T = x.shape[0]
    if lengths is None:
        y, final = module(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        out, final = module(packed, hx)
        y, _ = pad_packed_sequence(out, total_length=T)
    finals = dict(zip(("h_n", "c_n"), final if has_c else (final,)))
    params = [p for _, p in module.named_parameters()]
    wrt = [x] + given + params
    grads = torch.autograd.grad([y, *finals.values()], wrt,
                                grad_outputs=[to(inputs[k]) for k in ("dy", "dh_n", "dc_n")
                                              if k == "dy" or k[1:] in finals])
    grads = list(grads)

    def cpu(t):
        return t.detach().to("cpu").contiguous().clone()

    outputs = {"y": cpu(y), **{k: cpu(v) for k, v in finals.items()}}
    g = {"x": cpu(grads.pop(0)), "h0": None, "c0": None}
    for k in ("h0", "c0")[:len(given)]:
        g[k] = cpu(grads.pop(0))
    g["params"] = {name: cpu(t) for (name, _), t in zip(module.named_parameters(), grads)}
    return outputs, g


def disable_tf32() -> None:
    """True float32 in cuDNN's RNN and in matmuls.  torch >= 2.9 has per-operator
    ``fp32_precision`` settings and refuses a mix of them with the legacy ``allow_tf32`` flags, so
    use the new ones where they exist (conv too, to keep cuDNN's flags consistent)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if (hasattr(cudnn, "rnn") and hasattr(cudnn.rnn, "fp32_precision")
            and hasattr(matmul, "fp32_precision")):
        cudnn.rnn.fp32_precision = "ieee"
        cudnn.conv.fp32_precision = "ieee"
        matmul.fp32_precision = "ieee"
    else:
        cudnn.allow_tf32 = False
        matmul.allow_tf32 = False


def cudnn_runs(device: torch.device, dtype: torch.dtype, cell: str = "lstm") -> bool:
    """Whether torch's layer of ``cell`` really calls cuDNN for ``dtype`` here (seen in the
    profiler).

    torch falls back to its native CUDA implementation when cuDNN refuses a dtype; such fixtures
    must not be labelled cuDNN's.
    """
    from torch.profiler import ProfilerActivity, profile
    cfg = case_config(dict(name="probe", cell=cell, input_size=8, hidden=8, layers=1))
    m = build_module(cfg).to(device=device, dtype=dtype)
    x = torch.randn(3, 2, 8, device=device, dtype=dtype)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        m(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return any("cudnn_rnn" in e.key for e in prof.key_averages())


def metadata(device: torch.device) -> dict:
    """Source label plus the environment record of :func:`benchmarks.common.environment`."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.common import environment
    env = environment(device)
    # per dtype: see generate
    env["source"] = SOURCE_CUDNN if device.type == "cuda" else SOURCE_CPU
    env["cudnn_enabled"] = bool(torch.backends.cudnn.enabled) if device.type == "cuda" else False
    env["tf32"] = False
    env["format"] = FORMAT
    return env


def generate(device: torch.device, out_dir: Path) -> dict:
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("generate.py: --device cuda needs a CUDA GPU; use --device cpu for "
                             "the CPU stand-in")
        if not torch.backends.cudnn.is_available():
            raise SystemExit("generate.py: cuDNN is not available in this torch build")
        torch.backends.cudnn.enabled = True
    disable_tf32()
    meta = metadata(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, failures, sources = {}, [], {}
    for family, family_cells in FAMILIES.items():
        for dtype_name in DTYPES:
            dtype = getattr(torch, dtype_name)
            cases = {}
            source = meta["source"]
            if device.type == "cuda" and not all(cudnn_runs(device, dtype, c)
                                                 for c in family_cells):
                source = SOURCE_CUDA_NATIVE
            stem = f"{family}_{dtype_name}"
            sources[stem] = source
            for seed, cfg in family_cases(family):
                inputs = make_inputs(cfg, seed=seed, dtype=dtype)
                entry = {"config": cfg, "seed": seed, "inputs": inputs}
                try:
                    module = build_module(cfg).to(device=device, dtype=dtype)
                    entry["outputs"], entry["grads"] = run_case(module, cfg, inputs, device,
                                                                dtype)
                except RuntimeError as e:
                    # keep the other cases (a GPU session is short); the tests report this one
                    entry["error"] = f"{type(e).__name__}: {e}"[:500]
                    failures.append(f"{stem}/{cfg['name']}: {entry['error']}")
                    print(f"error: {stem}/{cfg['name']}: {entry['error']}", file=sys.stderr)
                cases[cfg["name"]] = entry
            path = out_dir / f"{stem}.pt"
            torch.save({"format": FORMAT, "dtype": dtype_name, "family": family,
                        "metadata": dict(meta, source=source), "cases": cases}, path)
            files[path.name] = path.stat().st_size
    meta = dict(meta, files=files, cases=[c["name"] for c in CASES], failures=failures,
                sources=sources)
    if len(set(sources.values())) > 1:
        meta["source"] = "mixed (see sources)"
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cuda: cuDNN (default); cpu: torch's CPU LSTM as a labelled stand-in")
    ap.add_argument("--out", default=str(HERE), help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    meta = generate(torch.device(args.device), Path(args.out))
    total = sum(meta["files"].values())
    print(f"wrote {len(meta['files'])} fixture files ({total / 1e6:.2f} MB) to {args.out}; "
          f"source: {meta['source']} on {meta['device_name']}")
    if total > 5e6:
        print("error: fixtures exceed the 5 MB budget", file=sys.stderr)
        return 1
    if meta["failures"]:
        print(f"error: {len(meta['failures'])} case(s) failed (stored with their error)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
