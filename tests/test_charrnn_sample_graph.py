"""``generate(..., cuda_graph=True)`` / ``charlstm sample --cuda-graph``: the sampling step
replayed from a CUDA graph (:class:`charlstm.charrnn.sample.GraphedStep`).

On CPU the flag is ignored (the output is the eager one); the ``cuda``-marked tests compare the
replayed steps with eager ones on a GPU, per backend that can run there.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from charlstm import backends
from charlstm.charrnn import CharRNN
from charlstm.charrnn.sample import GraphedStep, generate
from charlstm.testing import skip_unless_runs


def _model(device, backend="auto", dtype=torch.float32):
    torch.manual_seed(0)
    return CharRNN(30, 32, 2, backend=backend).to(device=device, dtype=dtype).eval()


def test_flag_is_ignored_off_gpu():
    m = _model("cpu")
    prime = torch.tensor([1, 2, 3])
    kw = dict(temperature=0.8, top_k=5)
    a = generate(m, prime, 40, generator=torch.Generator().manual_seed(7), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no capture attempted, so no fallback warning either
        b = generate(m, prime, 40, generator=torch.Generator().manual_seed(7), cuda_graph=True,
                     **kw)
    assert torch.equal(a, b)


#: the backends that sample on a GPU, each with its own choice of variant (not the reference: a
#: Python loop of small ops, the specification)
GPU_BACKENDS = [b for b in backends.BACKENDS if b != "reference" and backends.runs_on(b, "cuda")]


@pytest.mark.cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_graphed_argmax_matches_eager(backend):
    """Greedy sampling is deterministic: the replayed steps give exactly the eager ids, with and
    without a prime, at batch 1 and 3; and no fallback warning (the capture worked)."""
    skip_unless_runs(backend, torch.device("cuda"), torch.float32)
    m = _model("cuda", backend)
    for prime, n in ((torch.tensor([4, 5, 6]), 1), (None, 3)):
        gen = torch.Generator(device="cuda")
        eager = generate(m, prime, 50, num_samples=n, argmax=True, generator=gen.manual_seed(1))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            graphed = generate(m, prime, 50, num_samples=n, argmax=True,
                               generator=gen.manual_seed(1), cuda_graph=True)
        if prime is None:   # the first id is a random draw, the same for both
            assert torch.equal(eager[:, 0], graphed[:, 0])
        assert torch.equal(eager, graphed)


@pytest.mark.cuda
def test_graphed_random_draws_are_valid_and_seeded():
    """Random draws from the replayed graph: ids in range, the same for the same seed, and the
    state advances (not one id repeated)."""
    m = _model("cuda")
    gen = torch.Generator(device="cuda")
    a = generate(m, None, 200, generator=gen.manual_seed(3), cuda_graph=True, temperature=1.5)
    b = generate(m, None, 200, generator=gen.manual_seed(3), cuda_graph=True, temperature=1.5)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 30 and len(torch.unique(a)) > 5


@pytest.mark.cuda
def test_graphed_step_state_matches_eager_state():
    """After k replays, GraphedStep's static state equals k eager model steps from the same
    start (argmax, so the fed ids agree)."""
    m = _model("cuda")
    ids = torch.tensor([3, 7], device="cuda")
    with torch.inference_mode():
        step = GraphedStep(m, None, ids, temperature=1.0, top_k=None, argmax=True,
                           generator=None).capture()
        state, nxt = None, ids
        for _ in range(5):
            logits, state = m(nxt.view(2, 1), state)
            nxt = logits[:, -1].argmax(-1)
            got = step().clone()
            assert torch.equal(got, nxt)
        torch.testing.assert_close(step.state[0], state[0])
        torch.testing.assert_close(step.state[1], state[1])
