"""``CharRNN``: embedding -> a charlstm recurrent layer (``LSTM``, ``GRU`` or tanh ``RNN``,
batch_first) -> dropout -> linear decoder."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from charlstm.family import make_layer

__all__ = ["CharRNN", "State", "MODELS"]

#: ``--model`` (char-rnn's ``-model``) -> the contract's cell of the layer: ``rnn`` is the tanh
#: RNN, as in char-rnn
MODELS = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}

#: the carried state: ``(h, c)`` for the LSTM, ``(h,)`` for the GRU and RNN, each
#: ``[num_layers, B, rnn_size]``
State = tuple[Tensor, ...]


class CharRNN(nn.Module):
    """Character-level language model on a charlstm recurrent layer: ``cell`` ``"lstm"``
    (:class:`charlstm.LSTM`, the default), ``"gru"`` (:class:`charlstm.GRU`) or ``"rnn"``
    (:class:`charlstm.RNN`, tanh) -- char-rnn's ``-model``.

    ``forward(idx [B, T] long, state=None) -> (logits [B, T, V], state)`` where ``state`` is the
    layer's state as a tuple (:data:`State`): ``(h, c)`` for the LSTM, ``(h,)`` for the GRU and
    RNN, each ``[num_layers, B, rnn_size]``; pass it back to continue the sequences (truncated
    BPTT, step-by-step sampling).  ``backend`` is handed to the layer as a string (``"auto"``,
    ``"torch"``, ``"reference"``, ``"triton"``, ``"triton:step"``, ``"cuda:persistent"``, ...:
    :data:`charlstm.backends.CHOICES`).

    Initialisation (char-rnn's, adapted): every recurrent and decoder weight and bias uniform in
    ``[-0.08, 0.08]``; for the LSTM a forget-gate bias of 1 (torch's gate order is i, f, g, o, so
    rows ``[H, 2H)``: ``bias_ih`` forget rows = 1 and ``bias_hh`` forget rows = 0, their sum is
    what the cell sees).  char-rnn feeds one-hot characters; here an embedding of size
    ``rnn_size`` (initialised N(0, 1), torch's default) plays that role.  ``dropout`` applies
    between recurrent layers and before the decoder, as in char-rnn.
    """

    def __init__(self, vocab_size: int, rnn_size: int = 128, num_layers: int = 2,
                 dropout: float = 0.0, backend: str = "auto", cell: str = "lstm") -> None:
        super().__init__()
        if vocab_size < 1 or rnn_size < 1 or num_layers < 1:
            raise ValueError(f"CharRNN: vocab_size, rnn_size, num_layers must be >= 1, got "
                             f"{vocab_size}, {rnn_size}, {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CharRNN: dropout must be in [0, 1), got {dropout}")
        if cell not in MODELS:
            raise ValueError(f"CharRNN: unknown model {cell!r}: expected one of "
                             f"{', '.join(MODELS)}")
        self.vocab_size, self.rnn_size, self.num_layers = vocab_size, rnn_size, num_layers
        self.dropout_p, self.cell = float(dropout), cell
        self.embed = nn.Embedding(vocab_size, rnn_size)
        self.rnn = make_layer(MODELS[cell], rnn_size, rnn_size, num_layers=num_layers,
                              dropout=dropout if num_layers > 1 else 0.0, batch_first=True,
                              backend=backend)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(rnn_size, vocab_size)
        self.reset_parameters()

    @property
    def backend(self) -> str:
        return self.rnn.backend

    @backend.setter
    def backend(self, name: str) -> None:
        from charlstm.backends import validate_name
        self.rnn.backend = validate_name(name)

    def config(self) -> dict:
        """The constructor's arguments (stored in checkpoints)."""
        return {"vocab_size": self.vocab_size, "rnn_size": self.rnn_size,
                "num_layers": self.num_layers, "dropout": self.dropout_p,
                "backend": self.rnn.backend, "cell": self.cell}

    @property
    def has_c(self) -> bool:
        """True for the LSTM, whose state carries a cell state ``c`` besides ``h``."""
        return self.cell == "lstm"

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.embed.weight)
        for p in list(self.rnn.parameters()) + list(self.decoder.parameters()):
            nn.init.uniform_(p, -0.08, 0.08)
        if self.cell != "lstm":
            return
        H = self.rnn_size
        for layer in range(self.num_layers):
            getattr(self.rnn, f"bias_ih_l{layer}")[H:2 * H] = 1.0
            getattr(self.rnn, f"bias_hh_l{layer}")[H:2 * H] = 0.0

    def init_state(self, batch: int, device=None, dtype=None) -> State:
        """The zero state for ``batch`` sequences: ``(h, c)`` or ``(h,)``."""
        w = self.decoder.weight
        shape = (self.num_layers, batch, self.rnn_size)
        return tuple(torch.zeros(shape, device=device or w.device, dtype=dtype or w.dtype)
                     for _ in range(2 if self.has_c else 1))

    def forward(self, idx: Tensor, state: Optional[State] = None) -> tuple[Tensor, State]:
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"CharRNN: idx must be a [batch, time] integer tensor, got "
                             f"{idx.dtype} of shape {tuple(idx.shape)}")
        x = self.embed(idx)
        hx = None
        if state is not None:
            # under autocast the layer may hand back a lower-precision state; the layer wants
            # the state in the input's dtype
            hx = tuple(s.to(x.dtype) for s in state)
            hx = hx if self.has_c else hx[0]
        out, new = self.rnn(x, hx)
        return self.decoder(self.drop(out)), (new if self.has_c else (new,))
