"""What tests, benchmarks and scripts share to check a kernel path: core inputs and one
tolerance rule.

Core inputs
-----------
:func:`core_inputs` is the one builder of inputs for the recurrent core
(:mod:`charlstm.backends.contract`): seeded, so every caller -- the contract test, the GPU tests,
the canary and sanitizer scripts -- sees the same numbers for the same shape.

The tolerance rule (the "2x rule")
----------------------------------
A kernel in dtype ``D`` is checked against a float64 run of the reference on the same
(``D``-rounded) inputs, never against a fixed ``atol``/``rtol``::

    error(kernel)  <=  2 * error(base)  +  FLOOR_EPS[D] * eps(D) * max(1, max|exact|)

where ``error(x) = max |x - exact|`` per tensor, in float64, and ``base`` is the reference backend
run in the same dtype ``D`` (its error is what computing in ``D`` costs anyway: ``h`` rounded to
``D`` every step, float32 sums in another order).  On a GPU, layer-level tests may take cuDNN's
error as the base instead.  The floor covers a base that happens to be (nearly) exact, e.g. one
step from a zero state, where a kernel may still round one element the other way: one unit in
the last place of ``D`` for float16/bfloat16, a few for float32 and float64 (summation order).
:func:`check_core` applies the rule to every output of a core forward and backward.

The same bound serves the direct comparisons: a kernel against the reference in ``D``, and two
variants against each other, differ by at most ``2 * error(base) + floor`` -- no path may be
further from another than twice what rounding to ``D`` costs.  Where base and kernel are equally
accurate the rule passes with a margin of 2; a formula bug (a swapped gate, a dropped term) is
off by orders of magnitude more.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["core_inputs", "reference_runs", "run_kernels", "core_gradients", "check_core",
           "expected_run", "skip_unless_runs", "FLOOR_EPS", "FORWARD", "BACKWARD", "max_error",
           "errors", "tolerance", "check_2x", "assert_2x"]

#: the 2x rule's floor, in units of ``eps(D) * max(1, max|exact|)``
FLOOR_EPS = {torch.float64: 4.0, torch.float32: 4.0, torch.float16: 1.0, torch.bfloat16: 1.0}
#: the contract's outputs, by name: forward, then backward
FORWARD = ("hs", "hT", "cT", "cs", "gates")
BACKWARD = ("dgates", "dh0", "dc0")


def core_inputs(T: int, B: int, H: int, dtype: torch.dtype, device="cpu", *,
                cell="lstm", lengths: Union[None, str, Sequence[int]] = None,
                zero_state: bool = False, seed: Optional[int] = None):
    """Seeded inputs of the recurrent core of ``cell`` in ``dtype`` on ``device``.

    Returns ``(xproj, w_hh, h0, c0, lengths, b_hn), (dhs, dhT, dcT)``: ``xproj [T, B, G*H]`` ~
    N(0, 1), ``w_hh [G*H, H]`` ~ U(+-1/sqrt(H)) (a contractive recurrence, as after torch's
    init), ``h0 = tanh(N(0, 1))``, ``c0`` ~ N(0, 1) for the LSTM (zeros with ``zero_state``;
    None for the other cells), ``b_hn`` ~ U(+-1/sqrt(H)) for the GRU (None for the others),
    and upstream gradients ~ N(0, 1) for ``hs``, ``hT`` and (LSTM) ``cT`` (``dcT`` None
    otherwise).  ``lengths``: None (every row runs ``T`` steps), a sequence of ``B`` ints in
    ``[1, T]``, or ``"random"`` (drawn from the seed, in no particular order); returned as int32
    on ``device``.  ``seed`` defaults to one derived from the shape (the LSTM's numbers do not
    depend on the cell argument's existence: same shape, same draws).
    """
    from .backends.contract import cell_of
    spec = cell_of(cell)
    G = spec.gates
    g = torch.Generator().manual_seed(1000 * T + 10 * B + H if seed is None else seed)
    xproj = torch.randn(T, B, G * H, generator=g)
    w_hh = (torch.rand(G * H, H, generator=g) * 2 - 1) / H ** 0.5
    h0 = torch.zeros(B, H) if zero_state else torch.randn(B, H, generator=g).tanh()
    c0 = torch.zeros(B, H) if zero_state else torch.randn(B, H, generator=g)
    grads = [torch.randn(T, B, H, generator=g), torch.randn(B, H, generator=g),
             torch.randn(B, H, generator=g)]
    b_hn = (torch.rand(H, generator=g) * 2 - 1) / H ** 0.5 if spec.hidden_bias else None
    if isinstance(lengths, str):
        if lengths != "random":
            raise ValueError(f"lengths must be None, a sequence of ints or 'random', "
                             f"got {lengths!r}")
        lengths = torch.randint(1, T + 1, (B,), generator=g).tolist()
    L = None
    if lengths is not None:
        lengths = list(lengths)
        if len(lengths) != B or not all(1 <= n <= T for n in lengths):
            raise ValueError(f"lengths must be {B} ints in [1, {T}], got {lengths}")
        L = torch.tensor(lengths, dtype=torch.int32, device=device)
    if not spec.has_c:
        c0 = grads[2] = None
    to = dict(device=device, dtype=dtype)
    conv = lambda t: None if t is None else t.to(**to)   # noqa: E731
    return (tuple(conv(t) for t in (xproj, w_hh, h0, c0)) + (L, conv(b_hn)),
            tuple(conv(t) for t in grads))


def _double(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.double()


def reference_runs(inputs: tuple, grads: tuple, cell="lstm") -> tuple:
    """``(ref, exact)``: the reference backend's forward outputs and backward (fed its own
    forward's saved ``hs``/``cs``/``gates``) for ``cell``, by the names of :data:`FORWARD` +
    :data:`BACKWARD`, in the inputs' dtype, and the same in float64 on the same (rounded)
    inputs and device."""
    from .backends import reference

    def run(xproj, w_hh, h0, c0, L, b_hn, dhs, dhT, dcT):
        fwd = reference.forward(xproj, w_hh, h0, c0, L, b_hn, cell)
        out = dict(zip(FORWARD, fwd))
        out.update(zip(BACKWARD, reference.backward(dhs, dhT, dcT, w_hh, h0, c0, fwd[0], fwd[3],
                                                    fwd[4], L, cell)))
        return out

    xproj, w_hh, h0, c0, L, b_hn = inputs
    ref = run(xproj, w_hh, h0, c0, L, b_hn, *grads)
    exact = run(*(_double(t) for t in (xproj, w_hh, h0, c0)), L, _double(b_hn),
                *(_double(g) for g in grads))
    return ref, exact


def run_kernels(forward, backward, inputs: tuple, grads: tuple, ref: dict, cell="lstm") -> dict:
    """``forward(xproj, w_hh, h0, c0, lengths, b_hn, cell)`` and ``backward(dhs, dhT, dcT, w_hh,
    h0, c0, hs, cs, gates, lengths, cell)`` fed the reference's saved ``hs``/``cs``/``gates``
    from ``ref`` (so that a forward difference cannot hide or excuse a backward one), by the
    names of :data:`FORWARD` + :data:`BACKWARD`."""
    xproj, w_hh, h0, c0, L, b_hn = inputs
    out = dict(zip(FORWARD, forward(xproj, w_hh, h0, c0, L, b_hn, cell)))
    dhs, dhT, dcT = grads
    out.update(zip(BACKWARD, backward(dhs, dhT, dcT, w_hh, h0, c0, ref["hs"], ref["cs"],
                                      ref["gates"], L, cell)))
    return out


def core_gradients(core, inputs: tuple, grads: tuple, dtype: Optional[torch.dtype] = None,
                   cell="lstm") -> dict:
    """``core(xproj, w_hh, h0, c0, lengths, cell=, b_hn=)`` run through autograd (in ``dtype``,
    default the inputs'), upstream gradients ``grads`` for ``hs``, ``hT`` (and ``cT``): the
    outputs and the gradients of every differentiable input (``dw_hh`` and ``db_hn`` are
    computed above the backend, by :func:`charlstm.backends.contract.make_core_op`)."""
    xproj, w_hh, h0, c0, L, b_hn = inputs
    dt = dtype or xproj.dtype
    names = ("xproj", "w_hh", "h0", "c0", "b_hn")
    leaves = {n: t.detach().to(dt).requires_grad_()
              for n, t in zip(names, (xproj, w_hh, h0, c0, b_hn)) if t is not None}
    hs, hT, cT = core(leaves["xproj"], leaves["w_hh"], leaves["h0"], leaves.get("c0"), L,
                      cell=cell, b_hn=leaves.get("b_hn"))
    outs = [(t, g) for t, g in zip((hs, hT, cT), grads) if g is not None]
    torch.autograd.backward([t for t, _ in outs], [g.to(dt) for _, g in outs])
    res = {"hs": hs.detach(), "hT": hT.detach()}
    if "c0" in leaves:
        res["cT"] = cT.detach()
    res.update({f"d{n}": t.grad for n, t in leaves.items()})
    return res


def _mask_inactive_gates(out: Mapping[str, Tensor], lengths: Optional[Tensor]) -> dict:
    """The contract leaves ``gates`` of inactive rows unspecified (the backward ignores them):
    zeroed before comparing."""
    out = dict(out)
    if lengths is not None and "gates" in out:
        T = out["gates"].shape[0]
        active = (torch.arange(T, device=lengths.device).unsqueeze(1)
                  < lengths.long().unsqueeze(0))                          # [T, B]
        out["gates"] = out["gates"] * active.unsqueeze(2).to(out["gates"].device)
    return out


def check_core(got: Mapping[str, Tensor], ref: Mapping[str, Tensor], exact: Mapping[str, Tensor],
               dtype: torch.dtype, lengths: Optional[Tensor] = None, *,
               other: Optional[Mapping[str, Tensor]] = None) -> dict:
    """The 2x rule on core outputs (any subset of :data:`FORWARD` + :data:`BACKWARD`): each
    against ``exact`` and against ``ref`` (the reference in ``dtype``, whose errors against
    ``exact`` are the base) -- or, given ``other`` (another kernel path's outputs), against
    ``other`` only, within the same bound.  Gates of inactive rows are left out.  Returns the
    failures, ``"name vs ..."`` -> message (empty: all within bounds)."""
    keys = list(got)
    got, ref, exact = (_mask_inactive_gates({k: d[k] for k in keys}, lengths)
                       for d in (got, ref, exact))
    base = errors(ref, exact)
    against = ({"float64": exact, "reference": ref} if other is None else
               {"the other path": _mask_inactive_gates({k: other[k] for k in keys}, lengths)})
    return {f"{k} vs {what}": m for what, want in against.items()
            for k, m in check_2x(got, want, exact, base, dtype).items()}


def max_error(got: Tensor, want: Tensor) -> float:
    """``max |got - want|`` in float64 on the CPU (0 for empty tensors)."""
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: got {tuple(got.shape)}, expected {tuple(want.shape)}")
    if got.numel() == 0:
        return 0.0
    return (got.detach().double().cpu() - want.detach().double().cpu()).abs().max().item()


def errors(got: Mapping[str, Tensor], want: Mapping[str, Tensor]) -> dict:
    """:func:`max_error` per name of ``want``."""
    return {k: max_error(got[k], w) for k, w in want.items()}


def tolerance(base_error: float, exact: Tensor, dtype: torch.dtype) -> float:
    """The 2x rule's bound:
    ``2 * base_error + FLOOR_EPS[dtype] * eps(dtype) * max(1, max|exact|)``."""
    scale = max(1.0, exact.detach().abs().max().item()) if exact.numel() else 1.0
    return 2.0 * base_error + FLOOR_EPS[dtype] * torch.finfo(dtype).eps * scale


def check_2x(got: Mapping[str, Tensor], want: Mapping[str, Tensor], exact: Mapping[str, Tensor],
             base_errors: Mapping[str, float], dtype: torch.dtype) -> dict:
    """The names whose ``max |got - want|`` exceeds :func:`tolerance` (``base_errors[name]``,
    ``exact[name]``), each with a message.  ``want`` is ``exact`` for the rule itself, or
    another implementation in ``dtype`` for the direct comparisons."""
    bad = {}
    for k in want:
        e, bound = max_error(got[k], want[k]), tolerance(base_errors[k], exact[k], dtype)
        if not e <= bound:          # also catches NaN
            bad[k] = f"error {e:.3g} > bound {bound:.3g} (base error {base_errors[k]:.3g})"
    return bad


def assert_2x(got: Mapping[str, Tensor], want: Mapping[str, Tensor], exact: Mapping[str, Tensor],
              base_errors: Mapping[str, float], dtype: torch.dtype, label: str = "") -> None:
    """:func:`check_2x` as an assertion naming every tensor out of bounds."""
    bad = check_2x(got, want, exact, base_errors, dtype)
    assert not bad, f"{label} ({dtype}) outside the 2x rule: {bad}"


def expected_run(name: str, dtype: torch.dtype) -> str:
    """What :func:`charlstm.backends.last_run` must report after kernel path ``name`` ran in
    ``dtype``: ``name`` itself, except where its backend documents that it runs another path
    (float64 on triton runs the reference kernels; ``cuda:persistent_tc`` runs
    ``cuda:persistent`` for float32, tensor cores being for 16-bit inputs)."""
    if name.startswith("triton:") and dtype == torch.float64:
        return "reference"
    if name == "cuda:persistent_tc" and dtype == torch.float32:
        return "cuda:persistent"
    return name


def skip_unless_runs(name: str, device, dtype: Optional[torch.dtype] = None,
                     cell: Optional[str] = None) -> None:
    """In a pytest test of kernel path ``name``: skip, with the reason, when it cannot run on
    ``device``/``dtype`` here -- except that on a CUDA device an unavailable kernel backend is a
    failure, unless ``CHARLSTM_DISABLED_VARIANTS`` disabled it (a GPU machine must run every
    kernel path it has).  Callers parametrize only on what a backend supports at all
    (``VariantInfo.device_types``/``dtypes``)."""
    import pytest

    from . import backends
    backend, _ = backends.parse_name(name)
    why = backends.cell_reason(backend, cell)
    if why:                          # a cell not implemented yet is not a broken backend
        pytest.skip(f"{name}: {why}")
    why = backends.unavailable_reason(name, device, dtype)
    if why is None:
        return
    dev = torch.device(device) if device is not None else None
    if (dev is not None and dev.type == "cuda" and torch.cuda.is_available()
            and backends.is_core(name) and backends.DISABLED_ENV not in why):
        pytest.fail(f"{name} cannot run on this GPU machine: {why}")
    pytest.skip(f"{name}: {why}")
