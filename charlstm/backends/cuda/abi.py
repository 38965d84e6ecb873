"""The integer codes of ``csrc/launch.h`` (dtype, path and cell enums), mirrored for Python.

``tests/test_cuda_backend.py`` parses ``launch.h`` and checks these values, so the two cannot
drift apart silently.
"""
from __future__ import annotations

import torch

#: enum charlstm_dtype
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
#: enum charlstm_path
PATH_CODES = {"auto": 0, "persistent": 1, "stepwise": 2, "persistent_tc": 3}
PATH_NAMES = {v: k for k, v in PATH_CODES.items()}
#: enum charlstm_cell, by the contract's cell names (:data:`charlstm.backends.contract.CELLS`)
CELL_CODES = {"lstm": 0, "gru": 1, "rnn_tanh": 2, "rnn_relu": 3}
