#!/usr/bin/env python
"""One small forward + backward of one kernel variant, to learn quickly whether it runs (and
does not hang) before the long GPU steps use it.

    python scripts/gpu_canary.py triton:persistent | cuda:persistent | cuda:persistent_tc
    python scripts/gpu_canary.py cuda:persistent --cell gru         # another cell (default lstm)
    python scripts/gpu_canary.py triton:persistent --device cpu    # under TRITON_INTERPRET=1

``scripts/gpu_check.py`` runs one canary step per spin-barrier variant, each in its own process
under its own timeout; a variant whose canary fails or hangs goes into
``CHARLSTM_DISABLED_VARIANTS`` for every later step.  The shape makes every barrier real: H=200
over many programs/blocks, B=20 over several batch tiles, packed rows, T=12; float32, or bfloat16
for a tensor-core variant.  ``--cell`` picks the recurrent cell (``lstm``, ``gru``, ``rnn_tanh``,
``rnn_relu``; the barrier, staging and launch code is the same for every cell, so the GPU check
canaries the LSTM).  Inputs come from ``charlstm.testing.core_inputs``; the result is checked
against a float64 run of the reference with ``charlstm.testing``'s 2x rule (the base: the
reference in the same dtype, on the CPU).

Exit status: 0 the variant ran to the end, gave finite numbers and was the variant that ran
(``charlstm.backends.last_run()``); its last line says whether it also met the 2x rule -- a miss
is reported, not failed, since the correctness step judges precision on every shape.  1: an
error, non-finite output, or another variant ran.  77: the variant cannot run here (the reason
is the last line).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from charlstm import backends  # noqa: E402
from charlstm.backends.contract import CELLS  # noqa: E402
from charlstm.testing import check_2x, core_inputs, errors  # noqa: E402

SKIP_RC = 77
#: what is compared, per cell kind: the core's outputs, then the gradients of its inputs
OUTPUTS = {"lstm": ("hs", "hT", "cT", "dxproj", "dw_hh", "dh0", "dc0"),
           "gru": ("hs", "hT", "cT", "dxproj", "dw_hh", "dh0", "db_hn"),
           "rnn": ("hs", "hT", "cT", "dxproj", "dw_hh", "dh0")}


def default_dtype(name: str) -> torch.dtype:
    """Tensor-core variants run 16-bit inputs only; the others are canaried in float32."""
    return torch.bfloat16 if name.endswith("_tc") else torch.float32


def forward_backward(core, inputs, lengths, grads, cell: str = "lstm") -> dict:
    """``core`` forward and its autograd backward for ``cell``: outputs and input gradients by
    name (:data:`OUTPUTS`).  ``inputs``: ``(xproj, w_hh, h0, c0, b_hn)`` (None where the cell
    has none); ``grads``: of ``hs``, ``hT`` and ``cT`` (None where the cell has none)."""
    xproj, w_hh, h0, c0, b_hn = (None if t is None else t.detach().clone().requires_grad_()
                                 for t in inputs)
    outs = core(xproj, w_hh, h0, c0, lengths, cell=cell, b_hn=b_hn)
    torch.autograd.backward([o for o, g in zip(outs, grads) if g is not None],
                            [g for g in grads if g is not None])
    leaves = [t for t in (xproj, w_hh, h0, c0, b_hn) if t is not None]
    names = OUTPUTS[cell.split("_")[0]]
    return dict(zip(names, [o.detach() for o in outs] + [t.grad for t in leaves]))


def check_variant(name: str, device, dtype, T: int, B: int, H: int,
                  cell: str = "lstm") -> tuple:
    """Run ``name`` once on ``device`` for ``cell``; ``(problems, note)``: what makes it fail
    (empty: it ran) and a one-line account with its 2x-rule verdict."""
    lengths = [T - (5 * b) % T for b in range(B)]          # in [1, T], row 0 runs every step
    (xproj, w_hh, h0, c0, L, b_hn), grads = core_inputs(T, B, H, dtype, device, cell=cell,
                                                        lengths=lengths, seed=0)
    inputs = (xproj, w_hh, h0, c0, b_hn)
    got = forward_backward(backends.core_for(name), inputs, L, grads, cell)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    ran = backends.last_run()

    def on_cpu(tensors, dt):
        return [None if t is None else t.detach().to("cpu", dt) for t in tensors]
    reference = backends.core_for("reference")
    exact = forward_backward(reference, on_cpu(inputs, torch.float64), L.cpu(),
                             on_cpu(grads, torch.float64), cell)
    base = forward_backward(reference, on_cpu(inputs, dtype), L.cpu(), on_cpu(grads, dtype),
                            cell)
    problems = []
    if ran.get("forward") != name or ran.get("backward") != name:
        problems.append(f"asked for {name}, ran {ran}")
    problems += [f"{k}: non-finite values" for k, t in got.items() if not torch.isfinite(t).all()]
    err = errors(got, exact)
    worst = max(err, key=err.get)
    outside = check_2x(got, exact, exact, errors(base, exact), dtype)
    verdict = ("within the 2x rule" if not outside else
               f"OUTSIDE the 2x rule: {'; '.join(f'{k} {v}' for k, v in outside.items())}")
    what = "" if cell == "lstm" else f" {cell}"
    note = (f"{name}{what} {str(dtype).replace('torch.', '')} T={T} B={B} H={H}: ran "
            f"{ran.get('forward')}/{ran.get('backward')}, largest error {worst} "
            f"{err[worst]:.3g}; {verdict}")
    return problems, note


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", help="a concrete kernel variant, e.g. triton:persistent")
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu to check this "
                    "script itself under the Triton interpreter")
    ap.add_argument("--shape", default="12,20,200", help="T,B,H (default %(default)s)")
    ap.add_argument("--cell", default="lstm", choices=tuple(CELLS),
                    help="the recurrent cell (default %(default)s)")
    args = ap.parse_args(argv)
    name = backends.validate_name(args.variant)
    dev = torch.device(args.device)
    dtype = default_dtype(name)
    why = backends.unavailable_reason(name, dev, dtype, args.cell)
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = "no CUDA GPU"
    if why:
        print(f"{name} cannot run here: {why}")
        return SKIP_RC
    T, B, H = (int(x) for x in args.shape.split(","))
    try:
        problems, note = check_variant(name, dev, dtype, T, B, H, args.cell)
    except Exception as e:  # noqa: BLE001 - any error is the canary's finding
        print(f"{name}: {type(e).__name__}: {e}")
        return 1
    print(note)
    for p in problems:          # last, so that the GPU check's summary shows them
        print(f"FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
