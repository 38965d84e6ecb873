"""The recurrent layers by cell: which charlstm class (and which torch class) runs each cell of
the contract, building one by cell name, and :func:`convert`, which swaps torch's layers in a
model for charlstm's.

==============  =====================  =================================
cell            charlstm               torch
==============  =====================  =================================
``lstm``        ``charlstm.LSTM``      ``nn.LSTM``
``gru``         ``charlstm.GRU``       ``nn.GRU``
``rnn_tanh``    ``charlstm.RNN``       ``nn.RNN(nonlinearity="tanh")``
``rnn_relu``    ``charlstm.RNN``       ``nn.RNN(nonlinearity="relu")``
==============  =====================  =================================
"""
from __future__ import annotations

from torch import nn

from . import backends
from .backends.contract import cell_of
from .layer import RecurrentLayer, cell_of_mode
from .lstm import LSTM
from .rnn import GRU, RNN

__all__ = ["LAYERS", "convert", "make_layer", "swap_layers"]

#: cell name -> (charlstm class, torch class, extra constructor arguments)
LAYERS = {"lstm": (LSTM, nn.LSTM, {}), "gru": (GRU, nn.GRU, {}),
          "rnn_tanh": (RNN, nn.RNN, {"nonlinearity": "tanh"}),
          "rnn_relu": (RNN, nn.RNN, {"nonlinearity": "relu"})}


def make_layer(cell: str, input_size: int, hidden_size: int, *, plain: bool = False,
               **kwargs) -> nn.RNNBase:
    """The layer of ``cell`` (:data:`LAYERS`): charlstm's, or with ``plain=True`` torch's own
    (then without ``backend``).  ``kwargs`` are the constructor's keyword arguments."""
    ours, theirs, extra = LAYERS[cell_of(cell).name]
    return (theirs if plain else ours)(input_size, hidden_size, **extra, **kwargs)


def _cell_of_torch_layer(module: nn.Module):
    """The cell name of a torch ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (from its ``nn.RNNBase``
    mode), None for anything else, charlstm's layers included."""
    if isinstance(module, RecurrentLayer) or not isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        return None
    return cell_of_mode(module.mode).name


def swap_layers(module: nn.Module, backend: str, cells) -> nn.Module:
    """:func:`convert` restricted to the cells named in ``cells`` (``convert_lstm``: the LSTM)."""
    backend = backends.validate_name(backend)
    backends.preload(backend)
    cells = {cell_of(c).name for c in cells}

    def replacement(child: nn.Module):
        cell = _cell_of_torch_layer(child)
        if cell in cells:
            return LAYERS[cell][0].from_torch(child, backend)
        if isinstance(child, RecurrentLayer) and child.cell.name in cells:
            child.backend = backend
        return None

    new = replacement(module)
    if new is not None:
        return new
    for parent in module.modules():
        for child_name, child in list(parent.named_children()):
            new = replacement(child)
            if new is not None:
                setattr(parent, child_name, new)
    return module


def convert(module: nn.Module, backend: str = "auto") -> nn.Module:
    """Replace every ``torch.nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` inside ``module`` by
    :class:`charlstm.LSTM`, :class:`charlstm.GRU` and :class:`charlstm.RNN`, in place.

    The new layers reuse the very same ``Parameter`` objects (so weights, device, dtype and any
    optimizer that already holds them stay valid) and keep train/eval mode and the RNN's
    nonlinearity; charlstm layers already in the model get ``backend``.  Returns the model; if
    ``module`` is itself one of torch's layers, returns its replacement.
    """
    return swap_layers(module, backend, cells=LAYERS)
