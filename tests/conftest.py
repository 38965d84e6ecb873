"""Shared test setup.

Without a CUDA GPU the Triton kernels run under the Triton interpreter, which must be switched
on before ``triton.jit`` decorates anything: this file sets ``TRITON_INTERPRET=1`` before any
charlstm module is imported.  Tests marked ``cuda`` are skipped without a GPU.
"""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Backend selection in tests is explicit; an override from the caller's shell would skew them.
os.environ.pop("CHARLSTM_BACKEND", None)


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
