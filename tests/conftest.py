"""Shared test setup.

Without a CUDA GPU the Triton kernels run under the Triton interpreter, which must be switched
on before ``triton.jit`` decorates anything: this file sets ``TRITON_INTERPRET=1`` before any
charlstm module is imported.  Tests marked ``cuda`` are skipped without a GPU.  A test
parametrized with a kernel path that ``CHARLSTM_DISABLED_VARIANTS`` disables (e.g. one the GPU
check's canary saw hang) is skipped, naming the variable.
"""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Backend selection in tests is explicit; an override from the caller's shell would skew them.
os.environ.pop("CHARLSTM_BACKEND", None)


def _disabled_params(item, disabled: frozenset) -> list:
    """The parameters of ``item`` that name a disabled kernel path."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return sorted({v.lower() for v in params.values() if isinstance(v, str)
                   and v.lower() in disabled})


def pytest_collection_modifyitems(config, items):
    from charlstm import backends
    disabled = backends.disabled_variants()
    if disabled:
        raw = os.environ[backends.DISABLED_ENV]
        for item in items:
            names = _disabled_params(item, disabled)
            if names:
                item.add_marker(pytest.mark.skip(
                    reason=f"{', '.join(names)} disabled by {backends.DISABLED_ENV}={raw!r}"))
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
