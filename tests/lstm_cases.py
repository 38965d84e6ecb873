"""Shared helpers for comparing a charlstm layer (``LSTM``, ``GRU``, ``RNN``) on a backend against
torch's own (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``).

Used by the conformance tests of every backend and cell: a new backend adds its name to a list,
a case names its cell (:data:`charlstm.backends.contract.CELLS`); nothing is copied per cell.
``run_pair`` builds both modules from one state_dict, feeds them the same input (padded,
unbatched or packed), backpropagates the same upstream gradient through outputs and the final
state (``h_n``, and ``c_n`` for the LSTM), and returns everything to compare.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from charlstm.family import make_layer

#: (atol, rtol) per dtype for charlstm vs torch's layer on the CPU, atol = rtol = tol, i.e.
#: |got - ref| <= tol * (1 + |ref|) for every output and gradient.  Both sides compute in the
#: dtype and differ only in summation order.  Measured worst over the conformance grid
#: (``python scripts/measure_tolerances.py``, torch 2.13.0+cpu, 2-core EPYC; worst case the
#: T=200 sequence): float64 2.7e-15 -> bound 1e-14 (3.7x); float32 1.7e-06 (reference) and
#: 5.8e-07 (triton, kernel subset) -> bound 1e-5 (5.8x).
TOLERANCES = {torch.float64: (1e-14, 1e-14), torch.float32: (1e-5, 1e-5)}


@dataclass
class Case:
    input_size: int = 5
    hidden_size: int = 7
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    bidirectional: bool = False
    proj_size: int = 0
    T: int = 6
    B: int = 3
    kind: str = "padded"           # padded | unbatched | packed | packed_unsorted
    with_hx: bool = True
    lengths: list = field(default_factory=list)
    cell: str = "lstm"             # lstm | gru | rnn_tanh | rnn_relu

    @property
    def has_c(self) -> bool:
        return self.cell == "lstm"

    def module_kwargs(self) -> dict:
        kw = dict(num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                  bidirectional=self.bidirectional)
        if self.proj_size:
            kw["proj_size"] = self.proj_size
        return kw

    def id(self) -> str:
        parts = ([] if self.cell == "lstm" else [self.cell]) + [
            self.kind, f"L{self.num_layers}", f"T{self.T}", f"B{self.B}", f"H{self.hidden_size}"]
        if not self.bias:
            parts.append("nobias")
        if self.batch_first:
            parts.append("bf")
        if self.bidirectional:
            parts.append("bidir")
        if self.proj_size:
            parts.append(f"proj{self.proj_size}")
        if not self.with_hx:
            parts.append("nohx")
        if self.lengths:
            parts.append("len" + ".".join(map(str, self.lengths)))
        return "-".join(parts)


def lengths_of(case: Case) -> list:
    """The case's per-row lengths: its own, else seeded random ones in 1..T.  No row is forced to
    be the longest (nor to have length T): a layer that assumes row 0 leads, or that the padded
    input's T is the longest length, must fail somewhere in the grid."""
    if case.lengths:
        return list(case.lengths)
    g = torch.Generator().manual_seed(case.T * 31 + case.B)
    return torch.randint(1, case.T + 1, (case.B,), generator=g).tolist()


def sort_permutation(lengths: list) -> list:
    """The ``sorted_indices`` that ``pack_padded_sequence(..., enforce_sorted=False)`` makes."""
    return torch.sort(torch.tensor(lengths), descending=True)[1].tolist()


def is_own_inverse(perm: list) -> bool:
    """True when applying ``perm`` twice is the identity: then ``sorted_indices`` equals
    ``unsorted_indices`` and a layer that confuses the two passes anyway (issue 18)."""
    return all(perm[perm[i]] == i for i in range(len(perm)))


def make_data(case: Case, dtype=torch.float64, device="cpu") -> dict:
    """Seeded inputs for ``case``: a state_dict, x, hx (the cell's form: ``(h0, c0)`` or ``h0``;
    or None) and packed lengths."""
    torch.manual_seed(1234)
    proto = make_layer(case.cell, case.input_size, case.hidden_size, plain=True,
                       **case.module_kwargs())
    state = {k: v.to(device, dtype) for k, v in proto.state_dict().items()}
    D = 2 if case.bidirectional else 1
    h_out = case.proj_size or case.hidden_size
    unbatched = case.kind == "unbatched"
    B = 1 if unbatched else case.B
    x = torch.randn(case.T, B, case.input_size).to(device, dtype)
    hx = None
    if case.with_hx:
        h0 = torch.randn(case.num_layers * D, B, h_out).to(device, dtype)
        c0 = torch.randn(case.num_layers * D, B, case.hidden_size).to(device, dtype)
        if unbatched:
            h0, c0 = h0[:, 0], c0[:, 0]
        hx = (h0, c0) if case.has_c else h0
    lengths = lengths_of(case)
    if case.kind == "packed":
        lengths = sorted(lengths, reverse=True)
    return {"state": state, "x": x, "hx": hx, "lengths": lengths}


def cast_data(data: dict, dtype, device) -> dict:
    """The same data in another dtype/device (for a float64 reference of low-precision runs)."""
    to = lambda t: t.to(device, dtype)  # noqa: E731
    return {"state": {k: to(v) for k, v in data["state"].items()}, "x": to(data["x"]),
            "hx": _map_hx(to, data["hx"]), "lengths": data["lengths"]}


def _map_hx(fn, hx):
    """``fn`` applied to each tensor of a state in either form (None stays None)."""
    if hx is None:
        return None
    return tuple(fn(t) for t in hx) if isinstance(hx, tuple) else fn(hx)


def _tensors(state) -> list:
    """The tensors of a state in either form: ``[h, c]`` or ``[h]``."""
    return list(state) if isinstance(state, tuple) else [state]


def run_one(module, case: Case, data: dict) -> dict:
    """Forward + backward of one module on ``data``; returns outputs and every gradient."""
    module.load_state_dict(data["state"], strict=True)
    xi = data["x"].clone().requires_grad_(True)
    hxi = _map_hx(lambda t: t.clone().requires_grad_(True), data["hx"])
    if case.kind == "unbatched":
        inp = xi[:, 0]
    elif case.kind.startswith("packed"):
        inp = pack_padded_sequence(xi, torch.tensor(data["lengths"]),
                                   enforce_sorted=case.kind == "packed")
    else:
        inp = xi.transpose(0, 1) if case.batch_first else xi
    out, final = module(inp, hxi)
    finals = dict(zip(("h_n", "c_n"), _tensors(final)))
    out_t = out.data if isinstance(out, PackedSequence) else out
    g = torch.Generator().manual_seed(7)
    loss = sum((t.double() * torch.randn(t.shape, generator=g, dtype=torch.float64)
                .to(t.device)).sum() for t in [out_t, *finals.values()])
    given = [] if hxi is None else _tensors(hxi)
    wrt = [xi] + given + [p for _, p in module.named_parameters()]
    grads = torch.autograd.grad(loss, wrt)
    names = ["d_input"] + ["d_h0", "d_c0"][:len(given)] + \
            [f"d_{n}" for n, _ in module.named_parameters()]
    res = {"output": out_t.detach(), **{k: v.detach() for k, v in finals.items()}}
    res.update(dict(zip(names, grads)))
    return res


def build(case: Case, backend, dtype, device):
    """torch's layer of the case's cell when backend is None, else charlstm's with
    ``backend=...``."""
    if backend is None:
        return make_layer(case.cell, case.input_size, case.hidden_size, plain=True,
                          **case.module_kwargs()).to(device, dtype)
    return make_layer(case.cell, case.input_size, case.hidden_size, **case.module_kwargs(),
                      backend=backend).to(device, dtype)


def run_pair(case: Case, backend: str, dtype=torch.float64, device="cpu"):
    """Run torch's layer and charlstm's (on ``backend``) on identical data; return (ref, got)
    dicts."""
    data = make_data(case, dtype, device)
    return (run_one(build(case, None, dtype, device), case, data),
            run_one(build(case, backend, dtype, device), case, data))


def rel_errors(got: dict, ref: dict) -> dict:
    """max|got - ref| / max|ref| per key, in float64."""
    out = {}
    for k in ref:
        r, g = ref[k].double().cpu(), got[k].double().cpu()
        out[k] = ((g - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
    return out


def assert_close_all(ref: dict, got: dict, atol: float, rtol: float, label: str = "") -> None:
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=atol, rtol=rtol,
                                   msg=lambda m, k=k: f"{label} {k}: {m}")
