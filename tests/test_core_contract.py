"""One contract test for every kernel path: each registered variant, forward and backward.

Every name in ``charlstm.backends.kernel_variants()`` (``reference``, ``triton:*``, ``cuda:*``)
runs, for each dtype it accepts (float32, float16, bfloat16; float64 where it does) and each
shape below, through its registered custom ops (``core.fwd_op``/``core.bwd_op`` with the
variant argument), and is checked against
:mod:`charlstm.backends.contract` and :mod:`charlstm.testing`'s 2x rule:

* forward: every output (``hs``, ``hT``, ``cT`` and the saved ``cs``, ``gates``) has the
  contract's dtype and shape; inactive rows write exact zeros to ``hs`` and carry their last
  ``c`` in ``cs``; ``hT``/``cT`` are exactly the state after each row's last active step;
* backward (fed the *reference* forward's saved ``cs``/``gates``, so that a forward difference
  cannot hide or excuse a backward one): ``dgates`` (exact zeros on inactive rows), ``dh0``,
  ``dc0``;
* numbers: every tensor within the 2x rule against a float64 run of the reference, and within
  the same bound of the reference in the same dtype; and every variant against every other
  (:func:`test_variants_agree`).

Every cell of the contract (``lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu``) runs through the same
tests; a variant whose backend does not implement a cell (``Backend.cells``) skips it with that
reason.  A new variant is tested by being registered.  Here (no GPU) the triton variants run
under the Triton interpreter at small shapes and the cuda variants skip with their reason; on a GPU
machine a kernel path that cannot run fails, unless ``CHARLSTM_DISABLED_VARIANTS`` disabled it
(``charlstm.testing.skip_unless_runs``), and larger shapes are added.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

from charlstm import backends
from charlstm.backends.contract import CELLS, acc_dtype
from charlstm.testing import (
    assert_2x,
    check_core,
    core_gradients,
    core_inputs,
    errors,
    expected_run,
    reference_runs,
    run_kernels,
    skip_unless_runs,
)

GPU = torch.cuda.is_available()
DEV = torch.device("cuda" if GPU else "cpu")
VARIANTS = backends.kernel_variants()
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
DT_IDS = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64"}


@dataclass(frozen=True)
class Shape:
    T: int
    B: int
    H: int
    lengths: Optional[tuple] = None
    zero_state: bool = False

    def id(self) -> str:
        s = f"T{self.T}-B{self.B}-H{self.H}"
        return s + ("-packed" if self.lengths else "") + ("-zero" if self.zero_state else "")


SHAPES = [
    Shape(1, 1, 20, zero_state=True),                           # one step from a zero state
    Shape(4, 17, 33, lengths=(4, 1, 3) + (4,) * 13 + (2,)),     # B, H off the 16-tiles; packed
    Shape(5, 3, 16, lengths=(2, 5, 3), zero_state=True),        # packed, no initial state
    Shape(3, 2, 33),                                            # every row runs every step
    Shape(16, 2, 20),                                           # errors must not grow along T
]
if GPU:   # where the kernels are fast: long T, many blocks, H off every tile
    SHAPES += [Shape(40, 2, 100), Shape(3, 40, 768, lengths=tuple(3 - b % 3 for b in range(40))),
               Shape(6, 9, 3, lengths=(6, 2, 5, 1, 6, 3, 4, 6, 2))]


#: the cells every variant is checked on (the LSTM on every shape, the others on fewer: the
#: loop and the tiles are shared, the pointwise step is what differs)
CELL_SHAPES = {"lstm": SHAPES, **{c: SHAPES[:3] for c in CELLS if c != "lstm"}}


def _cells(v):
    """The cells to parametrize variant ``v`` on: those its backend implements."""
    return [c for c in CELLS if c in v.cells]


def _params():
    for v in VARIANTS:
        for cell in _cells(v):
            for dt in (d for d in DTYPES if d in v.dtypes):
                for s in CELL_SHAPES[cell]:
                    yield pytest.param(v.name, cell, dt, s,
                                       id=f"{v.name}-{cell}-{DT_IDS[dt]}-{s.id()}")


def _pairs():
    kernels = [v for v in VARIANTS if v.name != "reference"]   # reference: in the test above
    for a, b in itertools.combinations(kernels, 2):
        for cell in (c for c in _cells(a) if c in b.cells):
            for dt in (d for d in DTYPES if d in a.dtypes and d in b.dtypes):
                for s in CELL_SHAPES[cell]:
                    yield pytest.param(a.name, b.name, cell, dt, s,
                                       id=f"{a.name}-vs-{b.name}-{cell}-{DT_IDS[dt]}-{s.id()}")


# ----------------------------------------------------------------------------- runs (cached)
_RUNS: dict = {}


def _inputs(cell, dtype, shape):
    return core_inputs(shape.T, shape.B, shape.H, dtype, DEV, cell=cell, lengths=shape.lengths,
                       zero_state=shape.zero_state)


def _truth(cell, dtype, shape):
    """``(ref, exact)`` of :func:`charlstm.testing.reference_runs` (cached)."""
    key = ("truth", cell, dtype, shape)
    if key not in _RUNS:
        _RUNS[key] = reference_runs(*_inputs(cell, dtype, shape), cell=cell)
    return _RUNS[key]


def _run(name, cell, dtype, shape):
    """``(outputs, (forward ran, backward ran))`` of kernel path ``name`` through its
    registered ops, the backward fed the reference forward's saved tensors (cached)."""
    key = (name, cell, dtype, shape)
    if key not in _RUNS:
        skip_unless_runs(name, DEV, dtype, cell)
        core = backends.core_for(name)
        ran = {}

        def fwd(*args):
            out = core.fwd_op(*args, core.variant)
            ran["forward"] = backends.last_run().get("forward")
            return out

        out = run_kernels(fwd, lambda *args: core.bwd_op(*args, core.variant),
                          *_inputs(cell, dtype, shape), _truth(cell, dtype, shape)[0], cell)
        _RUNS[key] = out, (ran["forward"], backends.last_run().get("backward"))
    return _RUNS[key]


# ----------------------------------------------------------------------------- the contract
def _check_structure(out: dict, cell: str, dtype, shape, L) -> None:
    spec = CELLS[cell]
    T, B, H = shape.T, shape.B, shape.H
    A = acc_dtype(dtype)
    c_shape = (B, H) if spec.has_c else (0,)
    want = {"hs": ((T, B, H), dtype), "hT": ((B, H), dtype), "cT": (c_shape, dtype),
            "cs": ((T, B, H) if spec.has_c else (0,), A),
            "gates": ((T, B, spec.saved * H), A), "dgates": ((T, B, spec.gates * H), dtype),
            "dh0": ((B, H), dtype), "dc0": (c_shape, dtype)}
    for k, (shp, dt) in want.items():
        assert (tuple(out[k].shape), out[k].dtype) == (shp, dt), (k, out[k].shape, out[k].dtype)
        assert torch.isfinite(out[k]).all(), f"{k} is not finite"
    lengths = torch.full((B,), T, device=DEV) if L is None else L.long()
    last = (lengths - 1).view(1, B, 1)
    inactive = torch.arange(T, device=DEV).view(T, 1) >= lengths.view(1, B)          # [T, B]
    assert (out["hs"][inactive] == 0).all(), "hs of inactive rows must be exactly 0"
    assert (out["dgates"][inactive] == 0).all(), "dgates of inactive rows must be exactly 0"
    at_last = lambda t: t.gather(0, last.expand(1, B, H))[0]   # noqa: E731  [B, H] at L_b - 1
    assert torch.equal(out["hT"], at_last(out["hs"])), "hT is not h after the last active step"
    if not spec.has_c:
        return
    c_last = at_last(out["cs"])
    if dtype == A:
        assert torch.equal(out["cT"], c_last), "cT is not c after the last active step"
    else:   # c_last rounded to D, either way (the interpreter's bfloat16 cast truncates)
        one_ulp = torch.finfo(dtype).eps * c_last.abs()
        assert ((out["cT"].to(A) - c_last).abs() <= one_ulp).all(), \
            "cT is not c after the last active step, rounded to its dtype"
    carried = at_last(out["cs"]).unsqueeze(0).expand(T, B, H)
    assert torch.equal(out["cs"][inactive], carried[inactive]), \
        "cs of inactive rows must carry their last c"


@pytest.mark.parametrize("name,cell,dtype,shape", list(_params()))
def test_forward_and_backward_contract(name, cell, dtype, shape):
    out, ran = _run(name, cell, dtype, shape)
    expected = expected_run(name, dtype)
    assert ran == (expected, expected), f"asked for {name}, last_run() says {ran}"
    L = _inputs(cell, dtype, shape)[0][4]
    _check_structure(out, cell, dtype, shape, L)
    bad = check_core(out, *_truth(cell, dtype, shape), dtype, L)
    assert not bad, f"{name} {cell} ({dtype}) outside the 2x rule: {bad}"


@pytest.mark.parametrize("a,b,cell,dtype,shape", list(_pairs()))
def test_variants_agree(a, b, cell, dtype, shape):
    """Every kernel path against every other, on the same inputs, within the 2x rule's bound."""
    L = _inputs(cell, dtype, shape)[0][4]
    bad = check_core(_run(a, cell, dtype, shape)[0], *_truth(cell, dtype, shape), dtype, L,
                     other=_run(b, cell, dtype, shape)[0])
    assert not bad, f"{a} vs {b} {cell} ({dtype}) outside the 2x rule: {bad}"


# ----------------------------------------------------------------------------- registration
SMALL = Shape(3, 2, 16, lengths=(3, 2))


def _cell_params():
    return [pytest.param(v.name, c, id=f"{v.name}-{c}") for v in VARIANTS for c in _cells(v)]


@pytest.mark.parametrize("name,cell", _cell_params())
def test_autograd_runs_the_variant_both_ways(name, cell):
    """Through ``core_for(name)`` and autograd: the backward runs the forward's variant, and
    every gradient (dW_hh and the GRU's db_hn included, computed above the backend) is within
    the 2x rule of the reference's."""
    dtype = torch.float16
    skip_unless_runs(name, DEV, dtype, cell)
    inputs, grads = _inputs(cell, dtype, SMALL)
    got = core_gradients(backends.core_for(name), inputs, grads, cell=cell)
    assert backends.last_run() == {"forward": name, "backward": name}
    ref = core_gradients(backends.core_for("reference"), inputs, grads, cell=cell)
    exact = core_gradients(backends.core_for("reference"), inputs, grads, torch.float64, cell=cell)
    assert_2x(got, exact, exact, errors(ref, exact), dtype,
              label=f"{name} {cell} through autograd")


@pytest.mark.parametrize("name,cell", _cell_params())
def test_opcheck(name, cell):
    """The registered ops, with this variant and cell, pass ``torch.library.opcheck`` (schema,
    fake tensors, autograd registration), with and without ``lengths``."""
    skip_unless_runs(name, DEV, torch.float32, cell)
    core = backends.core_for(name)
    (xproj, w, h0, c0, L, b_hn), (dhs, dhT, dcT) = _inputs(cell, torch.float32, SMALL)
    for t in (xproj, w, h0, c0, b_hn):
        if t is not None:
            t.requires_grad_()
    for lengths in (L, None):
        torch.library.opcheck(core.fwd_op, (xproj, w, h0, c0, lengths, b_hn, cell, core.variant))
    hs, _, _, cs, gates = core.fwd_op(xproj, w, h0, c0, L, b_hn, cell, core.variant)
    detach = lambda t: None if t is None else t.detach()   # noqa: E731
    torch.library.opcheck(core.bwd_op, (dhs, dhT, dcT, w.detach(), h0.detach(), detach(c0),
                                        hs.detach(), cs.detach(), gates.detach(), L, cell,
                                        core.variant))
