"""charlstm's layers against torch's: ``charlstm.LSTM`` vs ``nn.LSTM``, ``charlstm.GRU`` vs
``nn.GRU``, ``charlstm.RNN`` vs ``nn.RNN`` (tanh and relu): outputs, final states and every
gradient.

The grids run on the ``reference`` backend (float64 tight, float32): the LSTM's full grid, and
for each other cell :data:`FAMILY_GRID` (the same kinds of case, fewer of them: no
``proj_size``, which only the LSTM has).  Every other kernel backend that is available here
runs a representative subset per cell through the same helper (three cases for the GRU and
RNN cells: the Triton interpreter is slow on a CPU).  One set of tests, parametrized by case;
the cell is a field of the case.
"""
import dataclasses
import itertools

import pytest
import torch
from lstm_cases import (
    TOLERANCES,
    Case,
    assert_close_all,
    build,
    cast_data,
    is_own_inverse,
    lengths_of,
    make_data,
    run_one,
    run_pair,
    sort_permutation,
)

from charlstm import backends
from charlstm.testing import assert_2x, errors, skip_unless_runs

GRID = [Case(num_layers=L, bias=b, batch_first=bf, bidirectional=bd)
        for L, b, bf, bd in itertools.product((1, 2), (True, False), (False, True), (False, True))]
FEATURES = [
    Case(proj_size=3),
    Case(proj_size=4, num_layers=2, bidirectional=True, batch_first=True),
    Case(kind="unbatched"),
    Case(kind="unbatched", num_layers=2, bidirectional=True, with_hx=False),
    Case(kind="unbatched", batch_first=True),
    Case(kind="packed", B=4, T=7),
    # Unsorted packing: explicit lengths whose sort permutation is not its own inverse (a 3- or
    # 4-cycle), so that sorted_indices and unsorted_indices differ and a layer that reorders
    # h0/c0 or h_n/c_n with the wrong one fails; the longest row is not row 0 and max(lengths)
    # may be below the padded T.
    Case(kind="packed_unsorted", B=3, T=5, batch_first=True, lengths=[2, 5, 4]),
    Case(kind="packed_unsorted", B=4, T=7, num_layers=2, bidirectional=True, lengths=[3, 7, 1, 5]),
    Case(kind="packed_unsorted", B=4, T=6, lengths=[2, 5, 1, 4]),
    Case(kind="packed_unsorted", B=4, T=6, lengths=[2, 5, 1, 4], with_hx=False),
    Case(kind="packed_unsorted", B=4, T=5, num_layers=2, proj_size=3, lengths=[1, 4, 5, 2]),
    Case(kind="packed_unsorted", B=5, T=6, proj_size=3, bidirectional=True, with_hx=False,
         lengths=[2, 4, 6, 1, 3]),
    Case(T=1),
    Case(T=1, B=1, num_layers=2, bidirectional=True),
    Case(B=1, T=200, hidden_size=9),
    Case(with_hx=False, num_layers=2),
    Case(hidden_size=20, input_size=3, B=2, T=5),
]
ALL = GRID + FEATURES
#: the cells without a cell state, each run on :data:`FAMILY_GRID`
OTHER_CELLS = ("gru", "rnn_tanh", "rnn_relu")
#: the grid of the GRU and RNN cells: every kind of case of the LSTM's grid but ``proj_size``
FAMILY_GRID = [
    Case(), Case(num_layers=2, bidirectional=True, batch_first=True),
    Case(bias=False, num_layers=2), Case(bias=False, bidirectional=True, with_hx=False),
    Case(kind="unbatched"), Case(kind="unbatched", num_layers=2, bidirectional=True, with_hx=False),
    Case(kind="packed", B=4, T=7),
    Case(kind="packed_unsorted", B=3, T=5, batch_first=True, lengths=[2, 5, 4]),
    Case(kind="packed_unsorted", B=4, T=7, num_layers=2, bidirectional=True, lengths=[3, 7, 1, 5]),
    Case(kind="packed_unsorted", B=4, T=6, lengths=[2, 5, 1, 4], with_hx=False),
    Case(T=1, B=1, num_layers=2, bidirectional=True),
    Case(B=1, T=200, hidden_size=9),
]


def for_cells(cases: list, cells) -> list:
    """``cases`` once per cell of ``cells``."""
    return [dataclasses.replace(c, cell=cell) for cell in cells for c in cases]


#: every case of the reference grid: the LSTM's, then the other cells'
ALL_CELLS = ALL + for_cells(FAMILY_GRID, OTHER_CELLS)


@pytest.mark.parametrize("case", ALL_CELLS, ids=[c.id() for c in ALL_CELLS])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_reference_matches_torch_layer(case, dtype):
    ref, got = run_pair(case, "reference", dtype)
    assert_close_all(ref, got, *TOLERANCES[dtype], label=case.id())


# A representative subset for the kernel backends (the Triton interpreter is slow on CPU).
KERNEL_SUBSET = [Case(), Case(num_layers=2, bidirectional=True, batch_first=True),
                 Case(kind="packed_unsorted", B=4, T=5, bidirectional=True, lengths=[3, 5, 1, 4]),
                 Case(kind="packed_unsorted", B=3, T=4, with_hx=False, lengths=[2, 4, 3]),
                 Case(proj_size=3, with_hx=False), Case(kind="unbatched", T=3)]
#: per other cell, three of them: the two unsorted packed cases (with and without h0) and the
#: two-layer bidirectional batch_first one
FAMILY_KERNEL_SUBSET = [KERNEL_SUBSET[i] for i in (1, 2, 3)]
KERNEL_CASES = KERNEL_SUBSET + for_cells(FAMILY_KERNEL_SUBSET, OTHER_CELLS)
#: the GPU comparisons with cuDNN (the GPU check's correctness step runs them in a fixed time
#: budget: fewer shapes per cell): the LSTM's subset and, per other cell, the unsorted packed
#: bidirectional case with h0
CUDNN_CASES = KERNEL_SUBSET + for_cells([FAMILY_KERNEL_SUBSET[1]], OTHER_CELLS)


@pytest.mark.parametrize("cases", [ALL_CELLS, KERNEL_SUBSET] + [
    [c for c in KERNEL_CASES if c.cell == cell] for cell in OTHER_CELLS],
    ids=["grid", "kernel_subset"] + [f"kernel_subset_{cell}" for cell in OTHER_CELLS])
def test_unsorted_cases_use_a_permutation_that_is_not_its_own_inverse(cases):
    """Guard on the lists above: with a self-inverse sort permutation ([0, 2, 1], [1, 0, 3, 2])
    sorted_indices == unsorted_indices, and swapping them in the layer goes unnoticed."""
    for with_hx in (True, False):
        assert any(c.kind == "packed_unsorted" and c.with_hx == with_hx
                   and not is_own_inverse(sort_permutation(lengths_of(c))) for c in cases), with_hx



#: the kernel backends (each with its own choice of variant) that can run on each device type
KERNELS_ON = {dev: [b for b in backends.BACKENDS
                   if backends.is_core(b) and backends.runs_on(b, dev)] for dev in ("cpu", "cuda")}


@pytest.mark.parametrize("backend", [b for b in KERNELS_ON["cpu"] if b != "reference"])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=[c.id() for c in KERNEL_CASES])
def test_kernel_backend_matches_torch_layer_cpu(backend, case):
    skip_unless_runs(backend, torch.device("cpu"), torch.float32, case.cell)
    ref, got = run_pair(case, backend, torch.float32)
    assert_close_all(ref, got, *TOLERANCES[torch.float32], label=f"{backend} {case.id()}")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", KERNELS_ON["cuda"])
@pytest.mark.parametrize("case", CUDNN_CASES, ids=[c.id() for c in CUDNN_CASES])
def test_backend_matches_cudnn_float32(backend, case):
    """float32 on the GPU: every backend against cuDNN (TF32 off for the comparison)."""
    dev = torch.device("cuda")
    skip_unless_runs(backend, dev, torch.float32, case.cell)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref, got = run_pair(case, backend, torch.float32, device="cuda")
    assert_close_all(ref, got, 1e-4, 1e-3, label=f"{backend} {case.id()}")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", KERNELS_ON["cuda"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("case", CUDNN_CASES, ids=[c.id() for c in CUDNN_CASES])
def test_backend_low_precision_vs_cudnn(backend, dtype, case):
    """Half precision on the GPU: a backend's error against a float64 reference of the same
    (rounded) inputs must be within the 2x rule (:mod:`charlstm.testing`) with cuDNN's own
    error as the base."""
    dev = torch.device("cuda")
    skip_unless_runs(backend, dev, dtype, case.cell)
    data = make_data(case, dtype, dev)
    exact = run_one(build(case, None, torch.float64, "cpu"), case,
                    cast_data(data, torch.float64, "cpu"))
    cudnn = errors(run_one(build(case, None, dtype, dev), case, data), exact)
    mine = run_one(build(case, backend, dtype, dev), case, data)
    assert_2x(mine, exact, exact, cudnn, dtype, label=f"{backend} {case.id()} vs cuDNN")
