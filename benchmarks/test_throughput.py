"""Throughput regression tests (pytest-benchmark): forward and forward+backward per backend,
and the char-rnn CPU sampling step.

Not part of the unit tests: nothing here asserts a time.  pytest-benchmark records the timings;
a slowdown is found by comparing against a baseline saved on the same kind of machine::

    # once, on the reference commit (<kind>: e.g. h100, h200, cpu-2core)
    pytest benchmarks/test_throughput.py --benchmark-save=<kind>
    # after a change, on the same kind of machine: fail if any median is > 10% slower
    pytest benchmarks/test_throughput.py --benchmark-compare --benchmark-compare-fail=median:10%

CI runs them in smoke mode, each once and untimed (< 60 s on a CPU)::

    pytest benchmarks/test_throughput.py --benchmark-disable

Each test checks that the call produced finite outputs (and gradients) of the right shapes, so the
smoke run fails when a backend breaks.  Sizes: small ones on a CPU, representative ones on a GPU.
A backend that cannot run here is skipped with its reason; the Triton interpreter on a CPU is
skipped unless ``CHARLSTM_BENCH_INTERPRETER=1``.  One test per kernel path of
``charlstm.backends.variants()`` (``triton:step``, ``cuda:persistent``, ...).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import charlstm
from benchmarks import common
from charlstm import backends

GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if GPU else "cpu")
# (batch, seq, hidden, dtype)
SIZES = ([(16, 256, 256, "bfloat16"), (64, 128, 1024, "bfloat16"), (1, 512, 512, "bfloat16"),
          (32, 128, 512, "float32")] if GPU else
         [(4, 16, 64, "float32"), (1, 32, 128, "float32")])
MODES = ("fwd", "fwd+bwd")


def _skip_reason(variant: str, dtype: torch.dtype):
    if (backends.parse_name(variant)[0] == "triton" and not GPU
            and os.environ.get("CHARLSTM_BENCH_INTERPRETER") != "1"):
        return ("Triton interpreter on CPU is not a performance target "
                "(CHARLSTM_BENCH_INTERPRETER=1)")
    return backends.unavailable_reason(variant, DEVICE, dtype)


def _size_id(size) -> str:
    b, t, h, d = size
    return f"B{b}-T{t}-H{h}-{d}"


@pytest.mark.parametrize("size", SIZES, ids=_size_id)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", backends.NAMES)
def test_lstm_throughput(benchmark, variant, mode, size):
    B, T, H, dname = size
    dtype = common.parse_dtype(dname)
    why = _skip_reason(variant, dtype)
    if why:
        pytest.skip(f"{variant}: {why}")
    benchmark.group = f"{mode} {_size_id(size)} on {common.device_kind(DEVICE)}"
    benchmark.extra_info.update(backend=variant, mode=mode, batch=B, seq=T, hidden=H, dtype=dname,
                                tflop=common.rnn_flops(T, B, H, H, backward=mode != "fwd") / 1e12)
    torch.manual_seed(0)
    model = charlstm.LSTM(H, H, backend=variant).to(DEVICE, dtype)
    x = torch.randn(T, B, H, device=DEVICE, dtype=dtype, requires_grad=mode != "fwd")
    dy = torch.randn(T, B, H, device=DEVICE, dtype=dtype)

    def run():
        model.zero_grad(set_to_none=True)
        x.grad = None
        if mode == "fwd":
            with torch.no_grad():
                y, (h, c) = model(x)
        else:
            y, (h, c) = model(x)
            y.backward(dy)
        common.synchronize(DEVICE)
        return y, h, c

    y, h, c = benchmark(run)
    path = common.ran_differently(variant)
    if path:
        benchmark.extra_info["ran_path"] = path
    assert y.shape == (T, B, H) and h.shape == c.shape == (1, B, H)
    assert torch.isfinite(y).all() and torch.isfinite(c).all()
    if mode != "fwd":
        assert x.grad is not None and x.grad.shape == x.shape and torch.isfinite(x.grad).all()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# (layers, hidden, batch): the char-rnn CPU sampling step (charlstm.charrnn.cpu_step.CpuStep)
SAMPLE_SIZES = [(2, 128, 1), (2, 128, 16), (3, 512, 1)]
SAMPLE_STEPS = 200


@pytest.mark.parametrize("size", SAMPLE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}-B{s[2]}")
def test_sample_step_throughput(benchmark, size):
    """``SAMPLE_STEPS`` characters of ``charlstm sample``'s CPU step (numpy, one thread):
    feed, draw at temperature 1, feed back.  Runs on the CPU on every machine (it is the CPU
    path); ``extra_info`` holds the characters per call for a characters/s figure."""
    from charlstm.charrnn import CharRNN
    from charlstm.charrnn.cpu_step import CpuStep
    L, H, B = size
    V = 65
    torch.manual_seed(0)
    model = CharRNN(V, H, L).eval()
    step = CpuStep(model, B, generator=torch.Generator().manual_seed(0), length=SAMPLE_STEPS)
    benchmark.group = f"sample step {L}x{H} B={B} on cpu"
    benchmark.extra_info.update(layers=L, hidden=H, batch=B, chars_per_call=B * SAMPLE_STEPS)

    def run():
        ids = np.zeros(B, np.int64)
        seen = np.zeros(V, bool)
        for _ in range(SAMPLE_STEPS):
            ids = step(ids)
            seen[ids] = True
        return ids, seen

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ids, seen = benchmark(run)
    finally:
        torch.set_num_threads(before)
    h, c = step.state()
    assert ids.shape == (B,) and 0 <= ids.min() and ids.max() < V
    assert seen.sum() > 10, "the draws should visit many characters of an untrained model"
    assert torch.isfinite(h).all() and torch.isfinite(c).all() and h.abs().max() <= 1
