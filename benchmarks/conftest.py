"""pytest setup for ``benchmarks/test_throughput.py`` (``tests/conftest.py`` does not reach here).

Switches on the Triton interpreter when there is no GPU, before charlstm is imported (as the
test suite does), drops a ``CHARLSTM_BACKEND`` override from the caller's shell, makes the
checkout importable without installing it, and keeps numpy's OpenBLAS to one thread (unless
set) before numpy loads: the CPU sampling step's timings then measure one core, as
``bench_sample.py --cpu`` does.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402  (after the OpenBLAS setting: torch imports numpy)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.pop("CHARLSTM_BACKEND", None)
