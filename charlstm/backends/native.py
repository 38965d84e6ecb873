"""The ``torch`` backend: torch's own nn.LSTM forward (cuDNN on a GPU).

It runs the whole layer (``charlstm.LSTM`` calls ``nn.LSTM.forward``), so it has no
recurrent core; this module exists so that each backend has one place.
"""
STATUS = "torch.nn.LSTM (cuDNN on CUDA devices)"
