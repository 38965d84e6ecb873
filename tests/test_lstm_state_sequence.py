"""``charlstm.LSTM(...)(x, return_state_sequence=True)``: every step's h and c of every layer and
direction, against an independent nn.LSTMCell loop and nn.LSTM's own output and final state,
for padded (batch_first and time-major), packed (unsorted), bidirectional, multi-layer,
unbatched and proj_size inputs, on the reference core and the Triton core (interpreter); and
the same for ``charlstm.GRU`` / ``charlstm.RNN``, whose per-step state is ``h_seq`` alone
(against nn.GRUCell / nn.RNNCell loops)."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import charlstm
from charlstm import backends
from charlstm.family import make_layer
from charlstm.testing import skip_unless_runs

CORES = ["auto", "reference", "triton"]


def _skip_unavailable(backend):
    if backend != "auto" and backends.unavailable_reason(backend, torch.device("cpu"),
                                                         torch.float32):
        pytest.skip(f"{backend}: {backends.unavailable_reason(backend)}")


#: torch's one-step cell of each layer mode
CELL_MODULES = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell,
                "RNN_TANH": lambda i, h, **kw: nn.RNNCell(i, h, nonlinearity="tanh", **kw),
                "RNN_RELU": lambda i, h, **kw: nn.RNNCell(i, h, nonlinearity="relu", **kw)}


def cell_oracle(layer, x, lengths, h0, c0=None):
    """Per-step (h, c) ``[L*D, T, B, H]`` in float64 by stepping torch's cell (nn.LSTMCell,
    nn.GRUCell, nn.RNNCell) row by row: no padding, packing or reversal machinery shared with
    charlstm.  ``x``: [T, B, I].  ``c`` is all zeros for cells without one."""
    L, D, H = layer.num_layers, 2 if layer.bidirectional else 1, layer.hidden_size
    T, B, _ = x.shape
    hs = torch.zeros(L * D, T, B, H, dtype=torch.float64)
    cs = torch.zeros_like(hs)
    has_c = layer.mode == "LSTM"
    layer_in = x.double()
    for n in range(L):
        for d in range(D):
            sfx = f"l{n}" + ("_reverse" if d else "")
            cell = CELL_MODULES[layer.mode](layer_in.shape[-1], H, dtype=torch.float64)
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).copy_(getattr(layer, f"{name}_{sfx}"))
            k = n * D + d
            for b in range(B):
                h = h0[k, b:b + 1].double()
                c = c0[k, b:b + 1].double() if has_c else None
                steps = range(lengths[b] - 1, -1, -1) if d else range(lengths[b])
                for t in steps:
                    with torch.no_grad():
                        if has_c:
                            h, c = cell(layer_in[t, b:b + 1], (h, c))
                            cs[k, t, b] = c[0]
                        else:
                            h = cell(layer_in[t, b:b + 1], h)
                    hs[k, t, b] = h[0]
        layer_in = torch.cat([hs[n * D + d] for d in range(D)], -1)
    return hs, cs


def _model(layers, bidirectional, batch_first=False, backend="auto", proj_size=0):
    torch.manual_seed(11)
    ref = nn.LSTM(3, 5, layers, bidirectional=bidirectional, batch_first=batch_first,
                  proj_size=proj_size)
    mine = charlstm.LSTM(3, 5, layers, bidirectional=bidirectional, batch_first=batch_first,
                         proj_size=proj_size, backend=backend)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def _state(layers, D, B, H=5, seed=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(layers * D, B, H, generator=g), torch.randn(layers * D, B, H, generator=g))


@pytest.mark.parametrize("backend", CORES)
@pytest.mark.parametrize("layers,bidirectional,batch_first", [
    (2, False, True), (2, True, False), (1, True, True)])
def test_padded_batches_match_the_cell_loop_and_nn_lstm(backend, layers, bidirectional,
                                                        batch_first):
    _skip_unavailable(backend)
    D = 2 if bidirectional else 1
    ref, mine = _model(layers, bidirectional, batch_first, backend)
    T, B = 6, 3
    x = torch.randn(T, B, 3)
    hx = _state(layers, D, B)
    inp = x.transpose(0, 1) if batch_first else x
    out, (h_n, c_n), (h_seq, c_seq) = mine(inp, hx, return_state_sequence=True)
    want_h, want_c = cell_oracle(ref, x, [T] * B, *hx)
    if batch_first:
        assert h_seq.shape == (layers * D, B, T, 5) == c_seq.shape
        h_seq, c_seq = h_seq.transpose(1, 2), c_seq.transpose(1, 2)
    assert h_seq.shape == (layers * D, T, B, 5) == c_seq.shape
    torch.testing.assert_close(h_seq.double(), want_h, atol=2e-6, rtol=0)
    torch.testing.assert_close(c_seq.double(), want_c, atol=2e-6, rtol=0)
    # nn.LSTM: the last layer's per-step h is its output; the final states are h_n, c_n
    ref_out, (ref_h, ref_c) = ref(inp, hx)
    last = torch.cat([h_seq[(layers - 1) * D + d] for d in range(D)], -1)
    torch.testing.assert_close(last.transpose(0, 1) if batch_first else last,
                               ref_out, atol=2e-6, rtol=0)
    torch.testing.assert_close(out, ref_out, atol=2e-6, rtol=0)
    for k in range(layers * D):
        t_last = 0 if k % D else T - 1            # the reverse direction ends at t = 0
        torch.testing.assert_close(c_seq[k, t_last], ref_c[k], atol=2e-6, rtol=0)
        torch.testing.assert_close(h_seq[k, t_last], ref_h[k], atol=2e-6, rtol=0)


@pytest.mark.parametrize("backend", CORES)
def test_packed_unsorted_bidirectional_two_layers(backend):
    _skip_unavailable(backend)
    ref, mine = _model(2, True, backend=backend)
    lengths = [4, 6, 2]
    T, B = max(lengths), len(lengths)
    x = torch.randn(T, B, 3)
    for b, n in enumerate(lengths):
        x[n:, b] = 0
    hx = _state(2, 2, B)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    out, (h_n, c_n), (h_seq, c_seq) = mine(packed, hx, return_state_sequence=True)
    want_h, want_c = cell_oracle(ref, x, lengths, *hx)       # zeros past each row's length
    torch.testing.assert_close(h_seq.double(), want_h, atol=2e-6, rtol=0)
    torch.testing.assert_close(c_seq.double(), want_c, atol=2e-6, rtol=0)
    ref_out, (ref_h, ref_c) = ref(packed, hx)
    padded, _ = pad_packed_sequence(ref_out)
    torch.testing.assert_close(torch.cat([h_seq[2], h_seq[3]], -1), padded, atol=2e-6, rtol=0)
    torch.testing.assert_close(c_n, ref_c, atol=2e-6, rtol=0)


def test_unbatched_and_proj_size():
    ref, mine = _model(1, False)
    x = torch.randn(5, 3)
    out, (h_n, c_n), (h_seq, c_seq) = mine(x, return_state_sequence=True)
    assert h_seq.shape == c_seq.shape == (1, 5, 5)
    want_h, want_c = cell_oracle(ref, x.unsqueeze(1), [5], torch.zeros(1, 1, 5),
                                 torch.zeros(1, 1, 5))
    torch.testing.assert_close(c_seq.double(), want_c[:, :, 0], atol=2e-6, rtol=0)
    torch.testing.assert_close(h_seq.double(), want_h[:, :, 0], atol=2e-6, rtol=0)
    # proj_size: h is the projected state (nn.LSTM's output), c keeps hidden_size
    ref, mine = _model(2, True, batch_first=True, proj_size=2)
    x = torch.randn(3, 4, 3)
    out, (h_n, c_n), (h_seq, c_seq) = mine(x, return_state_sequence=True)
    ref_out, (ref_h, ref_c) = ref(x)
    assert h_seq.shape == (4, 3, 4, 2) and c_seq.shape == (4, 3, 4, 5)
    torch.testing.assert_close(torch.cat([h_seq[2], h_seq[3]], -1), ref_out, atol=2e-6, rtol=0)
    torch.testing.assert_close(c_seq[2, :, -1], ref_c[2], atol=2e-6, rtol=0)
    torch.testing.assert_close(c_seq[3, :, 0], ref_c[3], atol=2e-6, rtol=0)


def test_gradients_flow_through_h_not_c_and_plain_calls_are_unchanged():
    _, mine = _model(2, False, backend="reference")
    x = torch.randn(4, 2, 3, requires_grad=True)
    plain = mine(x)
    assert len(plain) == 2
    out, _, (h_seq, c_seq) = mine(x, return_state_sequence=True)
    torch.testing.assert_close(out, plain[0], atol=0, rtol=0)
    assert h_seq.requires_grad and not c_seq.requires_grad
    h_seq[0].sum().backward()                        # layer 0's states: a real gradient path
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_torch_backend_cannot_and_auto_falls_back():
    ref, mine = _model(1, False, backend="torch")
    x = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match="return_state_sequence.*'torch' backend.*cuDNN"):
        mine(x, return_state_sequence=True)
    mine.backend = "auto"
    with charlstm.use_backend("torch"):
        with pytest.raises(ValueError, match="'torch' backend"):
            mine(x, return_state_sequence=True)
    # auto resolves to torch on this CPU; with states asked for, the reference core runs
    assert backends.resolve("auto", x.device, x.dtype) == "torch"
    out, _, (h_seq, _) = mine(x, return_state_sequence=True)
    torch.testing.assert_close(out, ref(x)[0], atol=2e-6, rtol=0)


# ----------------------------------------------------------------- GRU and RNN: h_seq alone
@pytest.mark.parametrize("backend", CORES)
@pytest.mark.parametrize("cell", ["gru", "rnn_tanh", "rnn_relu"])
def test_gru_and_rnn_return_h_seq_alone(cell, backend):
    """The per-step state of a cell without c is one tensor ``h_seq`` (the state's own form):
    padded batch_first 2-layer, and packed unsorted bidirectional with h0, against the cell
    loop and torch's layer; unbatched gives ``[L*D, T, H]``."""
    _skip_unavailable(backend)
    if backend != "auto":
        skip_unless_runs(backend, torch.device("cpu"), torch.float32, cell)
    torch.manual_seed(11)
    ref = make_layer(cell, 3, 5, plain=True, num_layers=2, batch_first=True)
    mine = make_layer(cell, 3, 5, num_layers=2, batch_first=True, backend=backend)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(3, 6, 3)                          # [B, T, I]
    h0 = _state(2, 1, 3)[0]
    out, h_n, h_seq = mine(x, h0, return_state_sequence=True)
    assert isinstance(h_seq, torch.Tensor) and h_seq.shape == (2, 3, 6, 5)
    want_h, _ = cell_oracle(ref, x.transpose(0, 1), [6] * 3, h0)
    torch.testing.assert_close(h_seq.transpose(1, 2).double(), want_h, atol=2e-6, rtol=0)
    ref_out, ref_h = ref(x, h0)
    torch.testing.assert_close(out, ref_out, atol=2e-6, rtol=0)
    torch.testing.assert_close(h_n, ref_h, atol=2e-6, rtol=0)
    assert h_seq.requires_grad
    # packed, unsorted (the 3-cycle [1, 2, 0]), bidirectional, with h0
    ref = make_layer(cell, 3, 5, plain=True, bidirectional=True)
    mine = make_layer(cell, 3, 5, bidirectional=True, backend=backend)
    mine.load_state_dict(ref.state_dict())
    lengths = [2, 6, 4]
    xt = torch.randn(6, 3, 3)
    for b, n in enumerate(lengths):
        xt[n:, b] = 0
    h0 = _state(1, 2, 3)[0]
    packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out, h_n, h_seq = mine(packed, h0, return_state_sequence=True)
    want_h, _ = cell_oracle(ref, xt, lengths, h0)       # zeros past each row's length
    torch.testing.assert_close(h_seq.double(), want_h, atol=2e-6, rtol=0)
    ref_out, ref_h = ref(packed, h0)
    torch.testing.assert_close(torch.cat([h_seq[0], h_seq[1]], -1), pad_packed_sequence(ref_out)[0],
                               atol=2e-6, rtol=0)
    torch.testing.assert_close(h_n, ref_h, atol=2e-6, rtol=0)
    _, _, h_seq = mine(xt[:, 0], return_state_sequence=True)
    assert h_seq.shape == (2, 6, 5)


@pytest.mark.parametrize("cell", ["gru", "rnn_relu"])
def test_gru_and_rnn_torch_backend_cannot_and_auto_falls_back(cell):
    torch.manual_seed(2)
    ref = make_layer(cell, 3, 5, plain=True, num_layers=2)
    mine = make_layer(cell, 3, 5, num_layers=2, backend="torch")
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match=r"return_state_sequence.*every layer's h at every "
                                         r"step.*'torch' backend \(torch\.nn\.(GRU|RNN) / cuDNN"):
        mine(x, return_state_sequence=True)
    mine.backend = "auto"
    out, _, h_seq = mine(x, return_state_sequence=True)
    torch.testing.assert_close(out, ref(x)[0], atol=2e-6, rtol=0)
    torch.testing.assert_close(h_seq[1], out, atol=0, rtol=0)
