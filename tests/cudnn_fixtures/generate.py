"""Generate the stored cuDNN LSTM fixtures that the CPU tests check the kernels against.

Usage (from the repository root)::

    python tests/cudnn_fixtures/generate.py                 # on a GPU: torch.nn.LSTM via cuDNN
    python tests/cudnn_fixtures/generate.py --device cpu    # CPU stand-in (torch's native CPU LSTM)
    python tests/cudnn_fixtures/generate.py --out DIR       # write elsewhere (default: this folder)

For every case of :data:`CASES` and every dtype (float32, float16, bfloat16) it stores:

* ``inputs``: ``x`` (padded ``[T, B, I]``), ``lengths`` (packed cases; packed with
  ``enforce_sorted=False``), ``h0``/``c0`` (or None: "no initial state"), every parameter by its
  ``nn.LSTM`` name, and the fixed upstream gradients ``dy`` (padded, zero past each length),
  ``dh_n``, ``dc_n``;
* ``outputs``: ``y`` (padded, zeros past each length), ``h_n``, ``c_n`` from ``torch.nn.LSTM``;
* ``grads``: of ``sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)`` with respect to ``x``, ``h0``,
  ``c0`` and each parameter.

A case that raises on the device is stored with ``"error"`` instead of outputs (the other cases
are kept) and the script exits 1; the tests skip that case and the consistency test fails.

All inputs are drawn on the CPU in float32 from a per-case seed and then rounded to the dtype,
so every machine stores exactly the same inputs; only the outputs and gradients depend on the
device.  TF32 is switched off while generating so the float32 fixtures are true float32.

Files: ``lstm_<dtype>.pt`` (``torch.load(..., weights_only=True)`` loads them) and
``metadata.json`` (the same metadata, readable).  ``metadata["source"]`` says where the numbers came
from: ``"cudnn"``, ``"torch-cpu (stand-in for cuDNN)"``, or -- should torch not call cuDNN for a
dtype on the GPU, which the generator checks with the profiler -- ``"torch-cuda without cuDNN
..."`` (``metadata.json["sources"]`` has it per dtype).
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
FORMAT = 1
DTYPES = ("float32", "float16", "bfloat16")
SOURCE_CUDNN = "cudnn"
SOURCE_CPU = "torch-cpu (stand-in for cuDNN)"
SOURCE_CUDA_NATIVE = "torch-cuda without cuDNN (cuDNN did not run for this dtype)"
SOURCES = {SOURCE_CUDNN: "cudnn", SOURCE_CPU: "cpu-standin", SOURCE_CUDA_NATIVE: "cuda-native"}

#: The case list.  Shapes are small on purpose (H <= 48, B <= 4): the files stay well under
#: 5 MB and the Triton interpreter can run every case on a CPU.
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
]
_DEFAULTS = dict(bidirectional=False, proj_size=0, lengths=None)


def case_config(case: dict) -> dict:
    cfg = dict(_DEFAULTS)
    cfg.update(case)
    return cfg


def build_lstm(cfg: dict, module_cls=torch.nn.LSTM, **kwargs) -> torch.nn.LSTM:
    """An LSTM with the case's architecture (weights uninitialised in meaning: load them after)."""
    return module_cls(cfg["input_size"], cfg["hidden"], num_layers=cfg["layers"],
                      bidirectional=cfg["bidirectional"], proj_size=cfg["proj_size"], **kwargs)


def make_inputs(cfg: dict, seed: int, dtype: torch.dtype) -> dict:
    """Seeded inputs drawn on the CPU in float32, rounded to ``dtype`` (identical on every
    machine)."""
    g = torch.Generator().manual_seed(seed)
    T, B, H, I = cfg["seq"], cfg["batch"], cfg["hidden"], cfg["input_size"]  # noqa: E741
    D = 2 if cfg["bidirectional"] else 1
    h_out = cfg["proj_size"] or H
    shapes = build_lstm(cfg, device="meta")
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
    return inputs


def run_case(module: torch.nn.Module, cfg: dict, inputs: dict, device: torch.device,
             compute_dtype: torch.dtype) -> tuple[dict, dict]:
    """Forward and backward of ``module`` (an nn.LSTM-like module) on the stored inputs.

    The inputs are moved to ``device`` and cast to ``compute_dtype``; ``module`` must already be
    on that device and dtype, and its parameters are overwritten with the stored ones.  Returns
    ``(outputs, grads)`` on the CPU in ``compute_dtype``: ``y`` padded (zeros past each length),
    ``h_n``, ``c_n``; grads of ``x``, ``h0``, ``c0`` (None without initial state) and every
    parameter.  ``tests/test_cudnn_fixtures.py`` calls this same function for the backends.
    """
    def to(t):
        return None if t is None else t.to(device=device, dtype=compute_dtype)

    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(inputs["params"][name].to(device=device, dtype=compute_dtype))
    module.zero_grad(set_to_none=True)
    x = to(inputs["x"]).requires_grad_(True)
    hx = None
    if inputs["h0"] is not None:
        hx = (to(inputs["h0"]).requires_grad_(True), to(inputs["c0"]).requires_grad_(True))
    lengths = inputs["lengths"]
    T = x.shape[0]
    if lengths is None:
        y, (h_n, c_n) = module(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        out, (h_n, c_n) = module(packed, hx)
        y, _ = pad_packed_sequence(out, total_length=T)
    params = [p for _, p in module.named_parameters()]
    wrt = [x] + ([hx[0], hx[1]] if hx is not None else []) + params
    grads = torch.autograd.grad([y, h_n, c_n], wrt,
                                grad_outputs=[to(inputs[k]) for k in ("dy", "dh_n", "dc_n")])
    grads = list(grads)

    def cpu(t):
        return t.detach().to("cpu").contiguous().clone()

    outputs = {"y": cpu(y), "h_n": cpu(h_n), "c_n": cpu(c_n)}
    g = {"x": cpu(grads.pop(0)), "h0": None, "c0": None}
    if hx is not None:
        g["h0"], g["c0"] = cpu(grads.pop(0)), cpu(grads.pop(0))
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


def cudnn_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch.nn.LSTM really calls cuDNN for ``dtype`` here (seen in the profiler).

    torch falls back to its native CUDA LSTM when cuDNN refuses a dtype; such fixtures must not
    be labelled cuDNN's.
    """
    from torch.profiler import ProfilerActivity, profile
    m = torch.nn.LSTM(8, 8).to(device=device, dtype=dtype)
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
    for dtype_name in DTYPES:
        dtype = getattr(torch, dtype_name)
        cases = {}
        source = meta["source"]
        if device.type == "cuda" and not cudnn_runs(device, dtype):
            source = SOURCE_CUDA_NATIVE
        sources[dtype_name] = source
        for seed, case in enumerate(CASES):
            cfg = case_config(case)
            inputs = make_inputs(cfg, seed=1000 + seed, dtype=dtype)
            entry = {"config": cfg, "seed": 1000 + seed, "inputs": inputs}
            try:
                module = build_lstm(cfg).to(device=device, dtype=dtype)
                entry["outputs"], entry["grads"] = run_case(module, cfg, inputs, device, dtype)
            except RuntimeError as e:
                # keep the other cases (a GPU session is short); the tests report this one
                entry["error"] = f"{type(e).__name__}: {e}"[:500]
                failures.append(f"{dtype_name}/{cfg['name']}: {entry['error']}")
                print(f"error: {dtype_name}/{cfg['name']}: {entry['error']}", file=sys.stderr)
            cases[cfg["name"]] = entry
        path = out_dir / f"lstm_{dtype_name}.pt"
        torch.save({"format": FORMAT, "dtype": dtype_name, "metadata": dict(meta, source=source),
                    "cases": cases}, path)
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
