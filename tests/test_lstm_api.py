"""charlstm's layers as drop-ins (``LSTM``, ``GRU``, ``RNN`` tanh/relu, each against torch's):
state_dict, init, dropout, autocast, compile, convert / convert_lstm, errors, backend choice,
info."""
import subprocess
import sys

import pytest
import torch
from torch import nn

import charlstm
from charlstm import backends
from charlstm.backends import reference
from charlstm.family import make_layer

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
#: per cell, a constructor argument only that cell has (the LSTM's proj_size)
EXTRA = {"lstm": dict(proj_size=3)}
MODES = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}


def final_tensors(state) -> list:
    """``[h_n, c_n]`` (LSTM) or ``[h_n]``: the tensors of a layer's final state."""
    return list(state) if isinstance(state, tuple) else [state]


def random_state(cell: str, *shape, generator=None, dtype=None):
    """A random initial state of ``cell``'s form: ``(h0, c0)`` or ``h0``."""
    h = torch.randn(*shape, generator=generator, dtype=dtype)
    c = torch.randn(*shape, generator=generator, dtype=dtype)
    return (h, c) if cell == "lstm" else h


# ----------------------------------------------------------------- drop-in: parameters
@pytest.mark.parametrize("cell", CELLS)
def test_same_parameters_and_init_as_torch(cell):
    kw = dict(num_layers=2, bidirectional=True, **EXTRA.get(cell, {}))
    torch.manual_seed(3)
    ref = make_layer(cell, 6, 8, plain=True, **kw)
    torch.manual_seed(3)
    mine = make_layer(cell, 6, 8, **kw)
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in mine.named_parameters()]
    for (n, a), b in zip(ref.named_parameters(), mine.parameters()):
        assert a.shape == b.shape and torch.equal(a, b), n
    assert isinstance(mine, nn.RNNBase) and mine.mode == MODES[cell] == ref.mode
    assert mine.cell.name == cell


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_loads_both_ways_strict(cell):
    kw = dict(num_layers=2, bidirectional=True, **({"proj_size": 2} if cell == "lstm" else {}))
    a = make_layer(cell, 4, 5, plain=True, **kw)
    b = make_layer(cell, 4, 5, **kw)
    b.load_state_dict(a.state_dict(), strict=True)
    a2 = make_layer(cell, 4, 5, plain=True, **kw)
    a2.load_state_dict(b.state_dict(), strict=True)
    for (k, v), (_, w) in zip(a.state_dict().items(), a2.state_dict().items()):
        assert torch.equal(v, w), k


def test_positional_arguments_follow_torch():
    """nn.RNN's fourth positional argument is the nonlinearity; nn.GRU has no proj_size."""
    m = charlstm.RNN(3, 4, 2, "relu", False, True)
    assert (m.nonlinearity, m.mode, m.num_layers, m.bias, m.batch_first) == (
        "relu", "RNN_RELU", 2, False, True)
    assert "nonlinearity='relu'" in repr(m) and "backend='auto'" in repr(m)
    g = charlstm.GRU(3, 4, 2, False, True, 0.0, True)
    assert (g.bias, g.batch_first, g.bidirectional) == (False, True, True)
    with pytest.raises(TypeError, match="proj_size"):
        charlstm.GRU(3, 4, proj_size=2)


def test_dropout_between_layers_in_training_only():
    m = charlstm.LSTM(4, 6, num_layers=2, dropout=0.5, backend="reference")
    x = torch.randn(5, 2, 4)
    m.eval()
    out_eval1, _ = m(x)
    out_eval2, _ = m(x)
    assert torch.equal(out_eval1, out_eval2)
    m.train()
    torch.manual_seed(1)
    out_train1, _ = m(x)
    torch.manual_seed(2)
    out_train2, _ = m(x)
    assert not torch.allclose(out_train1, out_train2)
    # with p=0 training and eval agree exactly
    m0 = charlstm.LSTM(4, 6, num_layers=2, dropout=0.0, backend="reference")
    assert torch.equal(m0.train()(x)[0], m0.eval()(x)[0])


def _dropout_pair(cell: str, p: float, bidirectional: bool):
    torch.manual_seed(0)
    kw = dict(num_layers=3, dropout=p, bidirectional=bidirectional)
    ref = make_layer(cell, 4, 6, plain=True, **kw).double().train()
    mine = make_layer(cell, 4, 6, backend="reference", **kw).double().train()
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def _run_seeded(module, x, hx, seed=7):
    """Forward in train mode with the RNG at ``seed``, then the gradients of every output:
    ``(output, [final state tensors], grads)``."""
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    out, state = module(x, hx)
    finals = final_tensors(state)
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() \
        + sum((0.5 + k) * t.sum() for k, t in enumerate(finals))
    grads = torch.autograd.grad(loss, [x, *module.parameters()])
    return out.detach(), [t.detach() for t in finals], grads


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_dropout_placement_and_scale_match_torch(p, bidirectional, cell):
    """Training mode, 3 layers: outputs, final states and every gradient equal torch's layer's.

    p = 1 needs no RNG: the input of layers 2 and 3 is all zeros, and the last layer's output is
    not dropped.  p = 0.5 compares the masks and the 1/(1-p) scale too: on the CPU both torch's
    layer (aten's RNN loop, the same for every cell) and charlstm (F.dropout) call at::dropout on
    the same [T, B, D*H] tensor between the same layers, drawing from the default generator in
    the same order, so the same seed gives the same masks."""
    ref, mine = _dropout_pair(cell, p, bidirectional)
    D = 2 if bidirectional else 1
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 2, 4, generator=g, dtype=torch.float64)
    hx = random_state(cell, 3 * D, 2, 6, generator=g, dtype=torch.float64)
    want, got = _run_seeded(ref, x, hx), _run_seeded(mine, x, hx)
    names = ["output", "h_n", "c_n"][:1 + len(got[1])] + ["d_input"] + [
        f"d_{n}" for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, [got[0], *got[1], *got[2]], [want[0], *want[1], *want[2]]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
    if p == 1.0:
        out, _, grads = got
        assert (out != 0).any(dim=-1).all(), "the last layer's output was dropped"
        # everything after layer 1 sees zeros: the output does not depend on the input at all
        assert torch.equal(_run_seeded(mine, 3 * x, hx)[0], out), "no dropout between layers"
        assert (grads[0] != 0).any()        # through layer 1's final state only


@pytest.mark.parametrize("cell", CELLS)
def test_autocast_bfloat16_on_cpu(cell):
    m = make_layer(cell, 4, 6, backend="reference")
    x = torch.randn(5, 2, 4)
    full, _ = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, state = m(x)
    assert low.dtype == torch.bfloat16 and all(t.dtype == torch.bfloat16
                                               for t in final_tensors(state))
    torch.testing.assert_close(low.float(), full, atol=3e-2, rtol=0)


# ----------------------------------------------------------------- convert_lstm
class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.rnn = nn.LSTM(4, 6, batch_first=True)
        self.stack = nn.Sequential(nn.LSTM(6, 3, num_layers=2, bidirectional=True))

    def forward(self, idx):
        out, _ = self.rnn(self.emb(idx))
        out, _ = self.stack[0](out)
        return out


def test_convert_lstm_in_place_keeps_weights_mode_dtype():
    model = Tagger().double().eval()
    idx = torch.randint(0, 10, (2, 5))
    before = model(idx)
    params_before = list(model.parameters())
    out = charlstm.convert_lstm(model, backend="reference")
    assert out is model
    assert type(model.rnn) is charlstm.LSTM and type(model.stack[0]) is charlstm.LSTM
    assert model.rnn.backend == "reference" and not model.rnn.training
    assert all(a is b for a, b in zip(params_before, model.parameters()))
    assert model.rnn.weight_ih_l0.dtype == torch.float64
    torch.testing.assert_close(model(idx), before, atol=1e-12, rtol=0)


def test_convert_lstm_on_a_bare_lstm_returns_replacement():
    lstm = nn.LSTM(3, 4)
    new = charlstm.convert_lstm(lstm)
    assert isinstance(new, charlstm.LSTM) and new.weight_hh_l0 is lstm.weight_hh_l0


class Zoo(nn.Module):
    """One of each of torch's recurrent layers, nested, and a layer that is not recurrent."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.gru = nn.GRU(6, 5, num_layers=2, bidirectional=True, batch_first=True, dropout=0.3)
        self.stack = nn.Sequential(nn.RNN(10, 3, nonlinearity="relu", batch_first=True),
                                   nn.RNN(3, 3, bias=False, batch_first=True))

    def forward(self, idx):
        out, _ = self.lstm(self.emb(idx))
        out, _ = self.gru(out)
        out, _ = self.stack[0](out)
        out, h = self.stack[1](out)
        return out, h


def test_convert_swaps_every_lstm_gru_and_rnn_in_place():
    """Same Parameter objects, train/eval mode, the RNN's nonlinearity, dropout, the same
    outputs; convert_lstm still converts only the LSTM."""
    torch.manual_seed(0)
    model = Zoo().double().eval()
    idx = torch.randint(0, 10, (2, 5))
    with torch.no_grad():
        before = model(idx)
    model.gru.train()                            # mixed modes: each layer keeps its own
    params_before = list(model.parameters())
    modes_before = [m.training for m in model.modules()]
    assert charlstm.convert_lstm(Zoo()).gru.__class__ is nn.GRU
    assert charlstm.convert(model, backend="reference") is model
    assert [type(m) for m in (model.lstm, model.gru, model.stack[0], model.stack[1])] == [
        charlstm.LSTM, charlstm.GRU, charlstm.RNN, charlstm.RNN]
    assert [m.nonlinearity for m in model.stack] == ["relu", "tanh"]
    assert model.stack[0].mode == "RNN_RELU" and not model.stack[1].bias
    assert model.gru.dropout == 0.3 and model.gru.bidirectional and model.gru.num_layers == 2
    assert all(a is b for a, b in zip(params_before, model.parameters()))
    assert [m.training for m in model.modules()] == modes_before
    assert all(m.backend == "reference" for m in model.modules() if isinstance(m, nn.RNNBase))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(idx), before, atol=1e-12, rtol=0)
    # a bare layer is returned replaced; a charlstm layer gets the new backend
    rnn = nn.RNN(3, 4, nonlinearity="relu")
    new = charlstm.convert(rnn, backend="torch")
    assert type(new) is charlstm.RNN and new.nonlinearity == "relu" and new.backend == "torch"
    assert new.weight_hh_l0 is rnn.weight_hh_l0
    assert charlstm.convert(new, backend="reference") is new and new.backend == "reference"
    with pytest.raises(ValueError, match="unknown charlstm backend 'nope'"):
        charlstm.convert(model, backend="nope")


# ----------------------------------------------------------------- bad input
@pytest.fixture
def lstm():
    return charlstm.LSTM(4, 6, num_layers=2, backend="reference")


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_wrong_feature_size(backend):
    m = charlstm.LSTM(4, 6, backend=backend)
    with pytest.raises(ValueError, match=r"input_size=4, got 5"):
        m(torch.randn(3, 2, 5))


def test_wrong_rank(lstm):
    with pytest.raises(ValueError, match=r"rank 3 .* got rank 4"):
        lstm(torch.randn(3, 2, 1, 4))
    with pytest.raises(ValueError, match=r"got rank 1"):
        lstm(torch.randn(4))


@pytest.mark.parametrize("which,shape,needle", [
    ("h", (3, 2, 6), r"h_0 must have shape .*\(2, 2, 6\), got \(3, 2, 6\)"),   # layers
    ("h", (2, 5, 6), r"h_0 must have shape .*\(2, 2, 6\), got \(2, 5, 6\)"),   # batch
    ("c", (2, 2, 7), r"c_0 must have shape .*\(2, 2, 6\), got \(2, 2, 7\)"),   # hidden
])
def test_wrong_hx_shape(lstm, which, shape, needle):
    h, c = torch.zeros(2, 2, 6), torch.zeros(2, 2, 6)
    if which == "h":
        h = torch.zeros(shape)
    else:
        c = torch.zeros(shape)
    with pytest.raises(ValueError, match=needle):
        lstm(torch.randn(3, 2, 4), (h, c))


def test_hx_must_be_a_pair(lstm):
    with pytest.raises(TypeError, match="tuple"):
        lstm(torch.randn(3, 2, 4), torch.zeros(2, 2, 6))


def test_unbatched_hx_must_be_2d(lstm):
    with pytest.raises(ValueError, match=r"\(2, 6\), got \(2, 1, 6\)"):
        lstm(torch.randn(3, 4), (torch.zeros(2, 1, 6), torch.zeros(2, 1, 6)))


def test_dtype_mismatches(lstm):
    with pytest.raises(RuntimeError, match=r"input dtype torch.float64 does not match the "
                                           r"weights' dtype torch.float32"):
        lstm(torch.randn(3, 2, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"h_0 dtype torch.float64 does not match input dtype "
                                           r"torch.float32"):
        lstm(torch.randn(3, 2, 4), (torch.zeros(2, 2, 6, dtype=torch.float64),
                                    torch.zeros(2, 2, 6)))
    with pytest.raises(TypeError, match="floating-point"):
        lstm(torch.ones(3, 2, 4, dtype=torch.long))


def test_device_mismatch(lstm):
    with pytest.raises(RuntimeError, match=r"input is on meta but the weights are on cpu"):
        lstm(torch.randn(3, 2, 4, device="meta"))
    with pytest.raises(RuntimeError, match=r"c_0 is on meta but input is on cpu"):
        lstm(torch.randn(3, 2, 4), (torch.zeros(2, 2, 6), torch.zeros(2, 2, 6, device="meta")))


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh"])
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_lstm_state_given_to_a_gru_or_rnn_says_so(cell, backend):
    """torch itself fails here with "AttributeError: 'tuple' object has no attribute 'size'"."""
    m = make_layer(cell, 4, 6, num_layers=2, backend=backend)
    h = torch.zeros(2, 2, 6)
    with pytest.raises(TypeError, match=rf"charlstm\.(GRU|RNN): hx must be one tensor h_0 \(the "
                                        rf"{cell} cell has no cell state c\), got a tuple of 2 "
                                        r"items; an LSTM's \(h_0, c_0\)"):
        m(torch.randn(3, 2, 4), (h, h))
    with pytest.raises(TypeError, match=r"hx must be a tensor h_0, got int"):
        m(torch.randn(3, 2, 4), 0)
    with pytest.raises(ValueError, match=r"charlstm\.(GRU|RNN): h_0 must have shape .*"
                                         r"\(2, 2, 6\), got \(2, 2, 7\)"):
        m(torch.randn(3, 2, 4), torch.zeros(2, 2, 7))
    with pytest.raises(ValueError, match=r"input_size=4, got 5"):
        m(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match=r"\(2, 6\), got \(2, 1, 6\)"):
        m(torch.randn(3, 4), torch.zeros(2, 1, 6))


def test_unknown_nonlinearity():
    with pytest.raises(ValueError, match=r"charlstm.RNN: unknown nonlinearity 'gelu': expected "
                                         r"one of 'tanh', 'relu'"):
        charlstm.RNN(3, 4, nonlinearity="gelu")


# ----------------------------------------------------------------- independence from native LSTM
NATIVE = [(owner, op) for owner in ("_VF", "torch")
          for op in ("lstm", "lstm_cell", "gru", "gru_cell", "rnn_tanh", "rnn_tanh_cell",
                     "rnn_relu", "rnn_relu_cell")]


@pytest.fixture
def no_native_lstm(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("torch's native LSTM (or GRU/RNN) was called")
    for owner, name in NATIVE:
        monkeypatch.setattr(torch._VF if owner == "_VF" else torch, name, boom)
    yield


@pytest.mark.parametrize("cell", CELLS)
def test_native_lstm_patch_is_effective(no_native_lstm, cell):
    """Control: with the patch in place torch's own layer must fail, else the test below
    proves nothing."""
    with pytest.raises(AssertionError, match="native LSTM"):
        make_layer(cell, 4, 6, plain=True)(torch.randn(3, 2, 4))


@pytest.mark.parametrize("cell", CELLS)
def test_reference_never_calls_native_lstm(no_native_lstm, cell):
    m = make_layer(cell, 4, 6, num_layers=2, bidirectional=True, backend="reference",
                   **EXTRA.get(cell, {}))
    out, state = m(torch.randn(3, 2, 4, requires_grad=True))
    (out.sum() + sum(t.sum() for t in final_tensors(state))).backward()


# ----------------------------------------------------------------- the reference's own backward
@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck_reference_core(packed):
    T, B, H = 4, 3, 5
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    xproj, w, h0, c0 = mk(T, B, 4 * H), mk(4 * H, H) * 0.5, mk(B, H), mk(B, H)
    w = w.detach().requires_grad_(True)
    lengths = torch.tensor([4, 2, 1], dtype=torch.int32) if packed else None
    f = lambda *a: reference.core(*a, lengths)  # noqa: E731
    assert torch.autograd.gradcheck(f, (xproj, w, h0, c0))


def test_gradcheck_through_layer_bidirectional_proj():
    m = charlstm.LSTM(3, 4, bidirectional=True, proj_size=2, backend="reference").double()
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)

    def f(x, h0, c0):
        out, (h, c) = m(x, (h0, c0))
        return out, h, c
    assert torch.autograd.gradcheck(f, (x, h0, c0))


@pytest.mark.parametrize("cell", ["gru", "rnn_relu"])
def test_gradcheck_through_gru_and_rnn_layers_packed_bidirectional(cell):
    """Every input of the layer, the GRU's b_hn (inside the reset gate) included, through the
    reference core's hand-written backward on unsorted packed input."""
    from torch.nn.utils.rnn import pack_padded_sequence
    m = make_layer(cell, 3, 4, bidirectional=True, backend="reference").double()
    x = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 3])
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().requires_grad_() for p in m.parameters()]
    assert "bias_hh_l0" in names

    def f(x, h0, *ps):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, h = torch.func.functional_call(m, dict(zip(names, ps)), (packed, h0))
        return out.data, h
    assert torch.autograd.gradcheck(f, (x, h0, *params))


@pytest.mark.parametrize("cell,backend", [(c, "reference") for c in CELLS] + [
    ("gru", "triton"), ("rnn_relu", "triton")])      # the triton LSTM: test_triton_kernels.py
def test_torch_compile_fullgraph(cell, backend):
    """No graph break: the layer's checks, the packing-free path and the core's custom op (the
    cell a string argument of it) trace whole; the GRU's b_hn goes through too."""
    from charlstm.testing import skip_unless_runs
    skip_unless_runs(backend, torch.device("cpu"), torch.float32, cell)
    m = make_layer(cell, 4, 6, num_layers=2, backend=backend)
    x = torch.randn(3, 2, 4, requires_grad=True)
    f = torch.compile(lambda x: m(x)[0], fullgraph=True, backend="aot_eager")
    got = f(x)
    want = m(x)[0]
    torch.testing.assert_close(got, want)
    g_got, = torch.autograd.grad(got.sum(), x)
    g_want, = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g_got, g_want)


# ----------------------------------------------------------------- backend choice
def test_unknown_backend_name():
    with pytest.raises(ValueError, match=r"unknown charlstm backend 'cudnn'.*auto, reference, "
                                         r"torch, triton, triton:persistent, .*, cuda:stepwise"):
        charlstm.LSTM(3, 4, backend="cudnn")


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.setattr(backends, "unavailable_reason", lambda name, *a, **k: "no such kernel here")
    m = charlstm.LSTM(3, 4, backend="cuda")
    with pytest.raises(charlstm.BackendUnavailable,
                       match=r"'cuda' is unavailable: no such kernel here"):
        m(torch.randn(2, 1, 3))


def test_a_backend_without_the_cell_is_unavailable_for_it(monkeypatch):
    """The layer resolves its backend with its cell: a backend whose registry entry lacks the
    cell is unavailable for that layer, with the reason; the LSTM still runs on it."""
    import dataclasses
    monkeypatch.setitem(backends._REGISTRY, "reference", dataclasses.replace(
        backends._REGISTRY["reference"], cells=("lstm",)))
    x = torch.randn(2, 1, 3)
    charlstm.LSTM(3, 4, backend="reference")(x)
    with pytest.raises(charlstm.BackendUnavailable,
                       match=r"'reference' is unavailable: the reference backend does not "
                             r"implement the gru cell yet \(it implements lstm\)"):
        charlstm.GRU(3, 4, backend="reference")(x)
    assert backends.resolve("auto", x.device, x.dtype, cell="gru") == "torch"


class _Spy:
    def __init__(self, monkeypatch):
        self.calls = []
        real = backends.core_for

        def spy(name):
            self.calls.append(name)
            return real(name)
        monkeypatch.setattr(backends, "core_for", spy)


def test_auto_picks_torch_on_cpu(monkeypatch):
    spy = _Spy(monkeypatch)
    charlstm.LSTM(3, 4)(torch.randn(2, 1, 3))
    assert spy.calls == []        # the whole-layer torch backend has no core
    assert backends.resolve("auto", torch.device("cpu"), torch.float32) == "torch"


def test_env_var_and_context_manager_override(monkeypatch):
    spy = _Spy(monkeypatch)
    m = charlstm.LSTM(3, 4, backend="torch")
    x = torch.randn(2, 1, 3)
    monkeypatch.setenv("CHARLSTM_BACKEND", "reference")
    m(x)
    assert spy.calls == ["reference"]
    with charlstm.use_backend("torch"):          # the context beats the environment
        m(x)
    assert spy.calls == ["reference"]
    monkeypatch.setenv("CHARLSTM_BACKEND", "bogus")
    with pytest.raises(ValueError, match="CHARLSTM_BACKEND='bogus'"):
        m(x)


# ----------------------------------------------------------------- info
def test_info_lists_every_backend_and_kernel_path(capsys):
    from charlstm import info
    assert info.main([]) == 0
    out = capsys.readouterr().out
    for name in backends.BACKENDS:
        assert f"  {name} " in out and backends.STATUS[name] in out
    for name in backends.NAMES:
        assert f"  {name} " in out
    assert "torch " in out and torch.__version__ in out


def test_info_reports_what_runs(monkeypatch):
    """The disabled variants, a bare name's own choice, and availability per kernel path."""
    from charlstm import info
    monkeypatch.setenv("CHARLSTM_TRITON_AUTOTUNE", "0")
    monkeypatch.setenv("CHARLSTM_DISABLED_VARIANTS", "triton:sequence,cuda:stepwise")
    got = info.collect()
    assert (got["disabled_variants"], got["triton_autotune"]) == ("cuda:stepwise triton:sequence",
                                                                  False)
    assert got["variants"]["triton:sequence"]["reason"].startswith(
        "disabled by CHARLSTM_DISABLED_VARIANTS")
    assert got["own_choice"]["triton"] == "triton:persistent"     # sequence is disabled
    assert set(got["variants"]) == set(backends.NAMES)


def test_python_m_charlstm_info_runs():
    r = subprocess.run([sys.executable, "-m", "charlstm", "info", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert '"backends"' in r.stdout
