"""The char-rnn workflow on top of :class:`charlstm.LSTM` (Karpathy's char-rnn, in PyTorch).

``CharRNN`` (model), ``train`` / ``sample`` / ``evaluate`` (the ``charlstm train|sample|eval``
commands as functions, keyword arguments named as the CLI options).  See ``docs/charrnn.md``.
"""
from .checkpoint import CheckpointError
from .data import Corpus, Vocab, load_corpus
from .evaluate import evaluate
from .model import CharRNN
from .sample import sample
from .train import TrainingDiverged, TrainResult, train

__all__ = ["CharRNN", "train", "sample", "evaluate", "Vocab", "Corpus", "load_corpus",
           "CheckpointError", "TrainingDiverged", "TrainResult"]
