"""charlstm.charrnn.CharRNN: shapes, char-rnn initialisation, state carrying, kernel backend
path -- for each ``--model`` (lstm, gru, rnn)."""
import pytest
import torch

import charlstm
from charlstm.charrnn import CharRNN

MODELS = ["lstm", "gru", "rnn"]


@pytest.mark.parametrize("cell,layer,state_len", [("lstm", charlstm.LSTM, 2),
                                                  ("gru", charlstm.GRU, 1),
                                                  ("rnn", charlstm.RNN, 1)])
def test_shapes_and_config(cell, layer, state_len):
    m = CharRNN(11, rnn_size=16, num_layers=2, cell=cell)
    assert type(m.rnn) is layer and m.rnn.mode != "RNN_RELU"
    logits, state = m(torch.randint(11, (3, 7)))
    assert logits.shape == (3, 7, 11)
    assert isinstance(state, tuple) and len(state) == state_len
    assert all(s.shape == (2, 3, 16) for s in state)
    assert [s.shape for s in m.init_state(3)] == [s.shape for s in state]
    assert m.config()["cell"] == cell
    assert CharRNN(**m.config()).config() == m.config()
    with pytest.raises(ValueError, match=r"\[batch, time\] integer"):
        m(torch.zeros(3, 7))
    with pytest.raises(ValueError, match=r"unknown model 'lstmm': expected one of lstm, gru, rnn"):
        CharRNN(11, cell="lstmm")


def test_gru_and_rnn_initialisation_has_no_forget_bias():
    for cell in ("gru", "rnn"):
        m = CharRNN(65, rnn_size=32, num_layers=2, cell=cell)
        for p in m.rnn.parameters():
            assert p.abs().max() <= 0.08 and p.std() > 0.03


def test_char_rnn_initialisation():
    m = CharRNN(65, rnn_size=128, num_layers=2)
    H = 128
    for layer in range(2):
        b = getattr(m.rnn, f"bias_ih_l{layer}") + getattr(m.rnn, f"bias_hh_l{layer}")
        assert torch.all(b[H:2 * H] == 1.0)                 # forget gate (torch order i,f,g,o)
        assert b[:H].abs().max() <= 0.16 and b[2 * H:].abs().max() <= 0.16
        for name in ("weight_ih", "weight_hh"):
            w = getattr(m.rnn, f"{name}_l{layer}")
            assert w.abs().max() <= 0.08 and w.std() > 0.03
    assert m.decoder.weight.abs().max() <= 0.08


@pytest.mark.parametrize("cell", MODELS)
def test_carried_state_equals_one_long_forward(cell):
    m = CharRNN(9, rnn_size=12, num_layers=2, cell=cell)
    idx = torch.randint(9, (2, 20))
    full, _ = m(idx)
    a, st = m(idx[:, :8])
    b, _ = m(idx[:, 8:], st)
    torch.testing.assert_close(torch.cat([a, b], 1), full)


@pytest.mark.parametrize("cell", MODELS)
def test_reference_backend_matches_auto(cell):
    """The model on a kernel backend (the reference core) agrees with torch's layer."""
    torch.manual_seed(1)
    m = CharRNN(7, rnn_size=8, num_layers=2, backend="auto", cell=cell).double()
    r = CharRNN(7, rnn_size=8, num_layers=2, backend="reference", cell=cell).double()
    r.load_state_dict(m.state_dict())
    idx = torch.randint(7, (3, 6))
    out_m, st_m = m(idx)
    out_r, st_r = r(idx)
    torch.testing.assert_close(out_r, out_m)
    torch.testing.assert_close(st_r, st_m)
    out_m.square().sum().backward()
    out_r.square().sum().backward()
    for (n, pm), pr in zip(m.named_parameters(), r.parameters()):
        torch.testing.assert_close(pr.grad, pm.grad, msg=n)
