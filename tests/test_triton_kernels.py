"""The ``triton`` backend: its fused kernels against the reference core, and the layer against
``torch.nn.LSTM``.

Without a GPU every kernel here runs under the Triton interpreter on CPU tensors (``conftest``
sets ``TRITON_INTERPRET=1``); on a GPU machine the same tests run the compiled kernels on CUDA
tensors, and the ``cuda``-marked tests at the end compare with cuDNN.  The interpreter costs
milliseconds per Triton operation, so shapes are small.

Tolerances.  float32: kernel and reference do the same float32 arithmetic in a different order,
so 1e-5.  float16/bfloat16: both run on the same rounded inputs and compute in float32; they
differ where an ``h`` (rounded to the input dtype every step) or an output lands near a rounding
boundary and the two round to neighbouring values, i.e. by about one unit in the last place,
``eps`` relative (float16 2^-10, bfloat16 2^-7), which the recurrence carries on at the same
size (the weights are scaled to keep it contractive).  So ``atol = rtol = 2 * eps``.
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import triton
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import charlstm
from charlstm.backends import reference
from charlstm.backends import triton as tb
from charlstm.backends.triton import backward as tbwd
from charlstm.backends.triton import forward as tfwd
from charlstm.backends.triton.common import INTERPRET, Launch

DEV = torch.device("cpu" if INTERPRET else "cuda")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def tol(dtype):
    if dtype == torch.float32:
        return dict(atol=1e-5, rtol=1e-5)
    eps = torch.finfo(dtype).eps
    return dict(atol=2 * eps, rtol=2 * eps)


def core_inputs(T, B, H, dtype, *, lengths=None, zero_state=False):
    """Random core inputs in ``dtype`` on DEV: gate inputs ~N(0,1), W_hh ~U(+-1/sqrt(H))."""
    g = torch.Generator().manual_seed(1000 * T + 10 * B + H)
    xproj = torch.randn(T, B, 4 * H, generator=g)
    w_hh = (torch.rand(4 * H, H, generator=g) * 2 - 1) / H ** 0.5
    h0 = torch.zeros(B, H) if zero_state else torch.randn(B, H, generator=g).tanh()
    c0 = torch.zeros(B, H) if zero_state else torch.randn(B, H, generator=g)
    grads = (torch.randn(T, B, H, generator=g), torch.randn(B, H, generator=g),
             torch.randn(B, H, generator=g))
    to = dict(device=DEV, dtype=dtype)
    L = None if lengths is None else torch.tensor(lengths, dtype=torch.int32, device=DEV)
    return ([t.to(**to) for t in (xproj, w_hh, h0, c0)] + [L], [t.to(**to) for t in grads])


def check_core(T, B, H, dtype, *, lengths=None, zero_state=False, launch=None):
    """Forward and backward of the kernels against the reference on the same inputs.

    The backward is fed the reference forward's saved ``cs``/``gates`` so that a forward
    difference cannot hide or excuse a backward one.
    """
    (xproj, w_hh, h0, c0, L), (dhs, dhT, dcT) = core_inputs(T, B, H, dtype, lengths=lengths,
                                                           zero_state=zero_state)
    got = tfwd.forward(xproj, w_hh, h0, c0, L, launch=launch)
    want = reference.forward(xproj, w_hh, h0, c0, L)
    for name, a, b in zip(("hs", "hT", "cT", "cs", "gates"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, **tol(dtype), msg=lambda m: f"forward {name}: {m}")
    if L is not None:   # the contract's exact zeros on inactive rows
        t = torch.arange(T, device=DEV).unsqueeze(1)
        assert (got[0][t >= L.long()] == 0).all()
    cs, gates = want[3], want[4]
    got = tbwd.backward(dhs, dhT, dcT, w_hh, c0, cs, gates, L, launch=launch)
    want = reference.backward(dhs, dhT, dcT, w_hh, c0, cs, gates, L)
    for name, a, b in zip(("dgates", "dh0", "dc0"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, **tol(dtype), msg=lambda m: f"backward {name}: {m}")
    if L is not None:
        t = torch.arange(T, device=DEV).unsqueeze(1)
        assert (got[0][t >= L.long()] == 0).all()


# ----------------------------------------------------------------------------- the core
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_core_packed_odd_hidden(dtype):
    """H = 33 (not a power of two), packed rows of lengths 9, 4, 1, random h0/c0."""
    check_core(9, 3, 33, dtype, lengths=[9, 4, 1])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_core_single_step_single_row_zero_state(dtype):
    """T = 1, B = 1, H = 20, h0 = c0 = 0."""
    check_core(1, 1, 20, dtype, zero_state=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_core_long_sequence(dtype):
    """T = 64 with random state: errors must not grow along the sequence."""
    check_core(64, 2, 20, dtype)


@pytest.mark.parametrize("schedule,max_programs", [
    ("sequence", None), ("step", None),
    ("persistent", 2),      # nh = 1: one program per batch tile runs the real grid barrier
    ("persistent", 4),      # nh = 2 < 3 hidden tiles: a program strides over two of them
    ("persistent", None)])  # nh = 3: one program per hidden tile
def test_core_tiled(schedule, max_programs):
    """Tiles smaller than H and B: H = 33 over three 16-wide hidden and K tiles, B = 17 over two
    batch tiles; every schedule (one launch for all steps / one launch per step / persistent
    grid capped at ``max_programs``; under the interpreter nh > 1 runs one launch per step)."""
    check_core(4, 17, 33, torch.float32, lengths=[4, 1, 3] + [4] * 13 + [2],
               launch=Launch(schedule, 16, 16, 16, 1, max_programs))


@pytest.mark.parametrize("launch", [
    Launch("step", 16, 4, 16, 1),                                   # 4-wide tiles (dot N = 16)
    Launch("persistent", 16, 8, 32, 1, max_programs=2),             # 8-wide, grid barrier, nh=1
    Launch("step", 16, 8, 64, 1, w_resident=True),                  # W_hh slice in registers
    Launch("persistent", 16, 4, 64, 1, w_resident=True),            # ... one launch per step
    Launch("persistent", 32, 16, 64, 1, max_programs=4, w_resident=True)],  # ... nh = 3 tiles
    ids=["step-bh4", "persistent-bh8-barrier", "step-resident", "persistent-resident",
         "persistent-resident-wide"])
def test_core_narrow_tiles_and_resident_weights(launch):
    """The forward's gate-interleaved dot with hidden tiles narrower than 16 (the backward runs
    16-wide ones), and W_RESIDENT (each program loads its W_hh slice once for all steps);
    H = 33 (ragged tiles), B = 17, packed."""
    check_core(4, 17, 33, torch.float32, lengths=[4, 1, 3] + [4] * 13 + [2], launch=launch)


@pytest.mark.parametrize("launch,msg", [
    (Launch("sequence", 16, 16, 64, 1, w_resident=True), "one hidden tile per program"),
    (Launch("step", 16, 16, 32, 1, w_resident=True), "block_k >= H"),
    (Launch("persistent", 16, 16, 64, 1, max_programs=4, w_resident=True), "2 program")])
def test_resident_launch_that_cannot_hold_its_slice_is_refused(launch, msg):
    (xproj, w_hh, h0, c0, L), _ = core_inputs(2, 17, 33, torch.float32)
    with pytest.raises(ValueError, match=msg):
        tfwd.forward(xproj, w_hh, h0, c0, L, launch=launch)


@pytest.mark.parametrize("batch,hidden,dtype,cap,want", [
    (16, 512, torch.bfloat16, None, [(4, 4), (8, 4), (16, 8)]),
    (16, 768, torch.bfloat16, None, []),                   # K chunk 1024: spills, never resident
    (16, 512, torch.float32, None, [(4, 4)]),              # 4-byte slices: only the narrowest fits
    (16, 512, torch.bfloat16, 132, [(4, 4), (8, 4), (16, 8)]),
    (32, 512, torch.bfloat16, 132, [(8, 4), (16, 8)]),     # 2 batch tiles: 66 programs each
    (64, 512, torch.bfloat16, 132, [(16, 8)])])
def test_resident_configs_pruned_per_shape(monkeypatch, batch, hidden, dtype, cap, want):
    """The persistent forward autotuner keeps every ordinary configuration, and W_RESIDENT ones
    only where each program owns one hidden tile within the co-residency cap and the slice fits
    the register budget -- with BLOCK_K set to next_pow2(H)."""
    from charlstm.backends.triton import common
    monkeypatch.setattr(common, "_device_programs", lambda device: cap)
    configs = common.tune_configs("persistent", "forward")
    kept = common._prune_resident(configs, {"B": batch, "H": hidden,
                                            "w_ptr": torch.empty(0, dtype=dtype)})
    ordinary = [c for c in configs if not c.kwargs["W_RESIDENT"]]
    assert kept[:len(ordinary)] == ordinary
    resident = kept[len(ordinary):]
    assert [(c.kwargs["BLOCK_H"], c.num_warps) for c in resident] == want
    assert all(c.kwargs["BLOCK_K"] == triton.next_power_of_2(hidden) for c in resident)
    assert all("W_RESIDENT" not in c.kwargs for c in common.tune_configs("persistent", "backward"))
    assert all(c.kwargs["BLOCK_H"] >= 16 for c in common.tune_configs("persistent", "backward"))


@pytest.mark.parametrize("cap", [None, 2, 132, 1000])
@pytest.mark.parametrize("hidden", [1, 33, 768, 1024, 4096])
def test_step_flags_cover_every_persistent_grid(cap, hidden):
    """Each batch tile's row of step flags has a slot for every program any configuration can
    put on it (down to 4-wide hidden tiles), and the sync buffer has a row per batch tile."""
    from charlstm.backends.triton import common
    slots = common.sync_slots(cap, hidden)
    for bh in (4, 8, 16, 32, 64):
        for bb in (16, 32, 64):
            nb, nh = common.persistent_grid(40, hidden, bb, bh, cap)
            assert nh <= slots and nb <= triton.cdiv(40, 16)
    configs = common.tune_configs("persistent", "forward") + common.tune_configs("persistent",
                                                                                 "backward")
    assert min(c.kwargs["BLOCK_H"] for c in configs) >= common.MIN_BLOCK_H
    assert min(c.kwargs["BLOCK_B"] for c in configs) >= 16


@pytest.mark.parametrize("batch,hidden,cap,want", [
    (17, 33, 2, (2, 1)), (17, 33, 4, (2, 2)), (17, 33, None, (2, 3)), (17, 33, 132, (2, 3)),
    (16, 768, 132, (1, 48)), (64, 1024, 132, (4, 33)), (4096, 64, 132, (256, 1))])
def test_persistent_grid_keeps_every_waiting_program_resident(batch, hidden, cap, want):
    """nb * nh never exceeds the cap where programs wait for each other (nh > 1)."""
    from charlstm.backends.triton.common import persistent_grid
    nb, nh = persistent_grid(batch, hidden, 16, 16, cap)
    assert (nb, nh) == want
    assert nh == 1 or cap is None or nb * nh <= cap


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_core_step_schedule_half(dtype):
    """The per-step schedule in 16-bit dtypes, packed, H = 20."""
    check_core(5, 3, 20, dtype, lengths=[5, 2, 3], launch=Launch("step", 16, 32, 32, 1))


def test_core_float64_falls_back_to_reference():
    (xproj, w_hh, h0, c0, L), _ = core_inputs(3, 2, 16, torch.float64, lengths=[3, 1])
    got = tb.ops.forward(xproj, w_hh, h0, c0, L)
    want = reference.forward(xproj, w_hh, h0, c0, L)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_core_rejects_bad_inputs():
    (xproj, w_hh, h0, c0, L), _ = core_inputs(2, 2, 16, torch.float32)
    with pytest.raises(ValueError, match="w_hh must be"):
        tb.ops.forward(xproj, w_hh[:, :8], h0, c0, L)
    with pytest.raises(TypeError, match="dtype must be"):
        tb.ops.forward(*(t.to(torch.int32) for t in (xproj, w_hh, h0, c0)), L)


def test_availability_and_status():
    assert tb.unavailable_reason(DEV, torch.float32) is None
    assert tb.unavailable_reason(DEV, torch.float64) is None
    assert "not supported" in tb.unavailable_reason(DEV, torch.int64)
    assert tb.STATUS.startswith("correct under the Triton interpreter")
    assert charlstm.backends.unavailable_reason("triton", DEV, torch.bfloat16) is None


_NO_INTERPRETER_SCRIPT = textwrap.dedent("""
    import torch, charlstm
    from charlstm.backends import triton as tb
    why = tb.unavailable_reason(torch.device("cpu"), torch.float32)
    assert why is not None and "TRITON_INTERPRET=1" in why, why
    try:
        charlstm.LSTM(3, 8, backend="triton")(torch.randn(2, 1, 3))
    except charlstm.BackendUnavailable as e:
        assert "TRITON_INTERPRET=1" in str(e), e
    else:
        raise AssertionError("CPU tensors ran without the interpreter")
    print("ok")
""")


def _subprocess_env() -> dict:
    """This environment without TRITON_INTERPRET, with the repository on the path."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cpu_without_interpreter_is_unavailable_with_reason():
    """Without TRITON_INTERPRET=1, CPU tensors are refused with a sentence naming the fix."""
    r = subprocess.run([sys.executable, "-c", _NO_INTERPRETER_SCRIPT], env=_subprocess_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-4000:]


# ----------------------------------------------------------------------------- the layer
def _layer_pair(dtype=torch.float32, **kw):
    """(charlstm.LSTM with the triton backend on DEV, torch.nn.LSTM on CPU) with equal weights."""
    ref = torch.nn.LSTM(**kw).to(dtype)
    ours = charlstm.LSTM(**kw, backend="triton").to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ours.to(DEV), ref


def _compare_grads(ours, ref, extra, atol=1e-5, rtol=1e-5):
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad.cpu(), q.grad, atol=atol, rtol=rtol,
                                   msg=lambda m: f"grad of {name}: {m}")
    for name, a, b in extra:
        torch.testing.assert_close(a.grad.cpu(), b.grad, atol=atol, rtol=rtol,
                                   msg=lambda m: f"grad of {name}: {m}")


@pytest.mark.parametrize("proj_size", [0, 7])
def test_layer_matches_torch_multilayer_bidirectional(proj_size):
    """2 layers, bidirectional, batch_first, given (h0, c0); outputs, h_n, c_n, every gradient."""
    kw = dict(input_size=5, hidden_size=20, num_layers=2, bidirectional=True, batch_first=True,
              proj_size=proj_size)
    ours, ref = _layer_pair(**kw)
    h_out = proj_size or 20
    x = torch.randn(3, 6, 5, requires_grad=True)
    h0 = torch.randn(4, 3, h_out, requires_grad=True)
    c0 = torch.randn(4, 3, 20, requires_grad=True)
    xd, h0d, c0d = (t.detach().to(DEV).requires_grad_() for t in (x, h0, c0))
    y, (h, c) = ours(xd, (h0d, c0d))
    y2, (h2, c2) = ref(x, (h0, c0))
    for a, b in ((y, y2), (h, h2), (c, c2)):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)
    g = [torch.randn_like(t) for t in (y2, h2, c2)]
    torch.autograd.backward([y, h, c], [t.to(DEV) for t in g])
    torch.autograd.backward([y2, h2, c2], g)
    _compare_grads(ours, ref, [("x", xd, x), ("h0", h0d, h0), ("c0", c0d, c0)])


@pytest.mark.parametrize("with_hx", [False, True], ids=["zero_state", "hx"])
def test_layer_matches_torch_packed(with_hx):
    """PackedSequence input (unsorted lengths), bidirectional, 2 layers, zero or given initial
    state.  Lengths [3, 7, 1, 5] sort by the 4-cycle [1, 3, 0, 2], which is not its own inverse:
    h0/c0 or h_n/c_n reordered with the wrong index set fails here."""
    kw = dict(input_size=4, hidden_size=18, num_layers=2, bidirectional=True)
    ours, ref = _layer_pair(**kw)
    lengths = torch.tensor([3, 7, 1, 5])
    x = torch.randn(7, 4, 4, requires_grad=True)
    xd = x.detach().to(DEV).requires_grad_()
    hx = tuple(torch.randn(4, 4, 18, requires_grad=True) for _ in range(2)) if with_hx else None
    hxd = tuple(t.detach().to(DEV).requires_grad_() for t in hx) if with_hx else None
    p = pack_padded_sequence(x, lengths, enforce_sorted=False)
    pd = pack_padded_sequence(xd, lengths, enforce_sorted=False)
    y, (h, c) = ours(pd, hxd)
    y2, (h2, c2) = ref(p, hx)
    y, _ = pad_packed_sequence(y)
    y2, _ = pad_packed_sequence(y2)
    for a, b in ((y, y2), (h, h2), (c, c2)):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)
    (y.pow(2).sum() + h.sum() + (c * 0.5).sum()).backward()
    (y2.pow(2).sum() + h2.sum() + (c2 * 0.5).sum()).backward()
    extra = [("h0", hxd[0], hx[0]), ("c0", hxd[1], hx[1])] if with_hx else []
    _compare_grads(ours, ref, [("x", xd, x)] + extra)


def test_layer_never_calls_native_lstm(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the triton backend called torch's native LSTM")

    for mod, name in ((torch._VF, "lstm"), (torch, "lstm"), (torch, "lstm_cell"),
                      (torch._VF, "lstm_cell")):
        monkeypatch.setattr(mod, name, boom, raising=False)
    m = charlstm.LSTM(3, 16, num_layers=2, bidirectional=True, backend="triton").to(DEV)
    x = torch.randn(4, 2, 3, device=DEV, requires_grad=True)
    y, (h, c) = m(x)
    (y.sum() + c.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- torch.library
def test_opcheck_forward_and_backward():
    (xproj, w_hh, h0, c0, L), (dhs, dhT, dcT) = core_inputs(3, 2, 16, torch.float32,
                                                           lengths=[3, 2])
    for t in (xproj, w_hh, h0, c0):
        t.requires_grad_()
    torch.library.opcheck(tb.core.fwd_op, (xproj, w_hh, h0, c0, L))
    torch.library.opcheck(tb.core.fwd_op, (xproj, w_hh, h0, c0, None))
    _, _, _, cs, gates = tb.core.fwd_op(xproj, w_hh, h0, c0, L)
    torch.library.opcheck(tb.core.bwd_op, (dhs, dhT, dcT, w_hh.detach(), c0.detach(),
                                           cs.detach(), gates.detach(), L))


def test_torch_compile_fullgraph():
    m = charlstm.LSTM(5, 16, backend="triton").to(DEV)

    def f(x):
        y, (h, c) = m(x)
        return y.sum() + c.sum()

    x = torch.randn(4, 2, 5, device=DEV)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    got.backward()
    g1 = m.weight_hh_l0.grad.clone()
    m.zero_grad()
    want = f(x)
    want.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g1, m.weight_hh_l0.grad)


# ----------------------------------------------------------------------------- GPU compile
_COMPILE_SCRIPT = textwrap.dedent("""
    import os
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from charlstm.backends.triton.forward import lstm_fwd_kernel
    from charlstm.backends.triton.backward import lstm_bwd_kernel

    def sig(kernel, dt, fp32_ptrs):
        out = {}
        for prm in kernel.params:
            n = prm.name
            if prm.is_constexpr:
                out[n] = "constexpr"
            elif n in ("len_ptr", "sync_ptr"):
                out[n] = "*i32"
            elif n.endswith("_ptr"):
                out[n] = "*fp32" if n in fp32_ptrs else "*" + dt
            else:
                out[n] = "i32"
        return out

    target = GPUTarget("cuda", 90, 32)
    blocks = dict(BLOCK_B=16, BLOCK_H=32, BLOCK_K=32)
    for dt, has_len, sync in (("fp32", False, False), ("fp16", True, False),
                              ("bf16", True, False), ("fp32", False, True),
                              ("fp16", True, True), ("bf16", True, True)):
        prec = "ieee" if dt == "fp32" else "tf32"
        blocks.update(GRID_SYNC=sync, SYNC_SLOTS=64, XCACHE=".cg" if sync else "")
        # the persistent variants: an 8-wide tile with W_hh register-resident (H <= 256)
        fblocks = dict(blocks, BLOCK_H=8, BLOCK_K=256, W_RESIDENT=True) if sync else \
            dict(blocks, W_RESIDENT=False)
        fwd = ASTSource(lstm_fwd_kernel, sig(lstm_fwd_kernel, dt, {"cs_ptr", "gates_ptr"}),
                        constexprs=dict(HAS_LENGTHS=has_len, DOT_F32=False, PRECISION=prec,
                                        **fblocks))
        bwd = ASTSource(lstm_bwd_kernel, sig(lstm_bwd_kernel, dt, {"cs_ptr", "gates_ptr",
                        "dhbuf_ptr", "dcbuf_ptr"}),
                        constexprs=dict(HAS_LENGTHS=has_len, DOT_F32=False, PRECISION=prec,
                                        **blocks))
        for src in (fwd, bwd):
            k = triton.compile(src, target=target, options=dict(num_warps=4, num_stages=2))
            assert len(k.asm["cubin"]) > 0
            print(dt, "ok")
""")


def _has_nvidia_compiler() -> bool:
    try:
        import triton.backends.nvidia as nv
    except ImportError:
        return False
    return os.path.exists(os.path.join(os.path.dirname(nv.__file__), "bin", "ptxas")) or \
        shutil.which("ptxas") is not None


@pytest.mark.skipif(not _has_nvidia_compiler(), reason="Triton's NVIDIA backend (ptxas) is absent")
def test_kernels_compile_for_sm90():
    """Both kernels compile to sm_90 cubins for every dtype, with and without ``lengths``, with
    and without the persistent schedule's grid barrier (ahead of time: no GPU needed)."""
    r = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=_subprocess_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.count("ok") == 12


# ----------------------------------------------------------------------------- GPU only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_layer_vs_cudnn(dtype):
    """charlstm.LSTM(backend="triton") vs cuDNN, both measured against float64 on CPU: the
    kernel's error must be within twice cuDNN's own (plus one ulp), for outputs and gradients."""
    kw = dict(input_size=8, hidden_size=48, num_layers=2, bidirectional=True)
    truth = torch.nn.LSTM(**kw).double()
    cudnn = copy.deepcopy(truth).to("cuda", dtype)
    ours = charlstm.LSTM(**kw, backend="triton").to("cuda", dtype)
    ours.load_state_dict(cudnn.state_dict())
    truth.load_state_dict({k: v.double().cpu() for k, v in cudnn.state_dict().items()})
    x = torch.randn(12, 8, 8).to(dtype)
    lengths = torch.tensor([12, 3, 7, 12, 1, 5, 9, 2])

    def run(m, dev, dt):
        xx = x.to(dev, dt).requires_grad_()
        out, (h, c) = m(pack_padded_sequence(xx, lengths, enforce_sorted=False))
        y, _ = pad_packed_sequence(out)
        (y.float().pow(2).sum() + h.float().sum() + c.float().sum()).backward()
        return [y, h, c, xx.grad] + [p.grad for p in m.parameters()]

    want = [t.double().cpu() for t in run(truth, "cpu", torch.float64)]
    ref = [t.double().cpu() for t in run(cudnn, "cuda", dtype)]
    got = [t.double().cpu() for t in run(ours, "cuda", dtype)]
    eps = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps
    for i, (g, r, w) in enumerate(zip(got, ref, want)):
        err, ref_err = (g - w).abs().max().item(), (r - w).abs().max().item()
        assert err <= 2 * ref_err + eps * max(1.0, w.abs().max().item()), (i, err, ref_err)


@pytest.mark.cuda
def test_gpu_long_sequence_bf16_stable():
    """T = 2048 in bfloat16: finite, and no worse than the reference kernels in bfloat16, both
    measured against the float64 reference on the same rounded inputs."""
    T, B, H = 2048, 4, 64
    (xproj, w_hh, h0, c0, L), (dhs, dhT, dcT) = core_inputs(T, B, H, torch.bfloat16)
    got = tb.ops.forward(xproj, w_hh, h0, c0, L)
    spec = reference.forward(xproj, w_hh, h0, c0, L)
    exact = reference.forward(*(t.double() for t in (xproj, w_hh, h0, c0)), L)
    assert all(torch.isfinite(t).all() for t in got)
    for a, s, e in zip(got, spec, exact):
        err = (a.double() - e).abs().max().item()
        spec_err = (s.double() - e).abs().max().item()
        assert err <= 2 * spec_err + torch.finfo(torch.bfloat16).eps, (err, spec_err)
    gb = tb.ops.backward(dhs, dhT, dcT, w_hh, c0, got[3], got[4], L)
    sb = reference.backward(dhs, dhT, dcT, w_hh, c0, spec[3], spec[4], L)
    eb = reference.backward(*(t.double() for t in (dhs, dhT, dcT, w_hh, c0)), exact[3],
                            exact[4], L)
    assert all(torch.isfinite(t).all() for t in gb)
    for a, s, e in zip(gb, sb, eb):
        err = (a.double() - e).abs().max().item()
        spec_err = (s.double() - e).abs().max().item()
        assert err <= 2 * spec_err + torch.finfo(torch.bfloat16).eps * e.abs().max().item(), \
            (err, spec_err)


def test_schedule_from_environment(monkeypatch):
    """CHARLSTM_TRITON_SCHEDULE picks the schedule per call; a bad value names the variable,
    the allowed values and what it got; an explicit argument wins."""
    from charlstm.backends.triton import common
    monkeypatch.setenv("CHARLSTM_TRITON_SCHEDULE", "step")
    assert common.choose_launch(4, 32).schedule == "step"
    assert common.choose_launch(4, 32, "persistent").schedule == "persistent"
    monkeypatch.setenv("CHARLSTM_TRITON_SCHEDULE", "warp")
    with pytest.raises(ValueError, match=r"CHARLSTM_TRITON_SCHEDULE must be one of .*'warp'"):
        common.choose_launch(4, 32)
    monkeypatch.delenv("CHARLSTM_TRITON_SCHEDULE")
    assert common.choose_launch(4, 32).schedule == ("sequence" if INTERPRET else "persistent")


@pytest.mark.cuda
@pytest.mark.parametrize("launch", [
    Launch("persistent", 16, 16, 64, 4), Launch("persistent", 16, 8, 64, 4),
    Launch("persistent", 16, 8, 512, 4, w_resident=True), Launch("sequence", 16, 16, 64, 4),
    Launch("step", 16, 16, 64, 4)],
    ids=["persistent", "persistent-bh8", "persistent-resident", "sequence", "step"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_schedules_many_programs(launch, dtype):
    """On a GPU, each schedule at a size where the persistent grid has many programs per batch
    tile (H = 300 over 16-wide tiles: 19 programs; 8-wide: 38) and several batch tiles
    (B = 40), packed; and W_hh register-resident (float32: a 64 KiB slice, which may spill)."""
    lengths = [24 - (b % 24) for b in range(40)]
    check_core(24, 40, 300, dtype, lengths=lengths, launch=launch)


def test_autotune_can_be_switched_off_for_gpu_test_runs(monkeypatch):
    """CHARLSTM_TRITON_AUTOTUNE=0 gives GPU launches one fixed configuration (used by
    scripts/gpu_check.sh so test runs don't compile every config for every shape)."""
    from charlstm.backends.triton import common
    monkeypatch.setattr(common, "INTERPRET", False)
    monkeypatch.delenv("CHARLSTM_TRITON_SCHEDULE", raising=False)
    monkeypatch.setenv("CHARLSTM_TRITON_AUTOTUNE", "0")
    fixed = common.choose_launch(8, 512)
    assert fixed.fixed and fixed.schedule == "persistent"
    first = common.tune_configs("persistent")[0]
    assert (fixed.block_b, fixed.block_h, fixed.block_k, fixed.num_warps) == (
        first.kwargs["BLOCK_B"], first.kwargs["BLOCK_H"], first.kwargs["BLOCK_K"], first.num_warps)
    monkeypatch.setenv("CHARLSTM_TRITON_AUTOTUNE", "1")
    assert not common.choose_launch(8, 512).fixed
