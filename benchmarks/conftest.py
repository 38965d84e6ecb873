"""pytest setup for ``benchmarks/test_throughput.py`` (``tests/conftest.py`` does not reach here).

Switches on the Triton interpreter when there is no GPU, before charlstm is imported (as the
test suite does), drops a ``CHARLSTM_BACKEND`` override from the caller's shell, and makes the
checkout importable without installing it.
"""
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.pop("CHARLSTM_BACKEND", None)
