"""charlstm benchmarks: ``bench_lstm``, ``bench_train``, ``bench_sample`` and their shared helpers.

Run each script from the repository root, e.g. ``python benchmarks/bench_lstm.py --quick``
(or ``python -m benchmarks.bench_lstm --quick``).  See ``docs/benchmarks.md``.
"""
