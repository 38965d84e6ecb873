"""charlstm: fused recurrent kernels for PyTorch under drop-in ``torch.nn.LSTM``/``GRU``/``RNN``.

Public API::

    charlstm.LSTM(...)              # drop-in for torch.nn.LSTM, plus backend="auto"
    charlstm.GRU(...), charlstm.RNN(..., nonlinearity="tanh")   # the same for nn.GRU / nn.RNN
    charlstm.convert(model)         # swap every nn.LSTM, nn.GRU and nn.RNN inside a model
    charlstm.convert_lstm(model)    # swap every nn.LSTM inside a model, in place
    charlstm.use_backend("triton:step")  # context manager (CHARLSTM_BACKEND: process-wide)
    charlstm.backends.variants()    # every kernel path ("backend:variant"): can it run here?
    charlstm.CharRNN, charlstm.train, charlstm.sample, charlstm.evaluate   # the char-rnn app
"""
from ._version import __version__
from .backends import BACKENDS, BackendUnavailable, use_backend
from .charrnn import CharRNN, evaluate, sample, train
from .family import convert
from .lstm import LSTM, convert_lstm
from .rnn import GRU, RNN

__all__ = ["__version__", "LSTM", "GRU", "RNN", "convert", "convert_lstm", "use_backend",
           "BACKENDS", "BackendUnavailable", "CharRNN", "train", "sample", "evaluate"]
