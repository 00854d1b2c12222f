"""The benchmark scripts and their shared kit (:mod:`benchmarks.kit`).

Run them from the repository root as modules, ``python -m benchmarks.run_knee --quick``, or as files with the
root on the path, ``PYTHONPATH=. python benchmarks/run_knee.py --quick``: they import ``benchmarks.kit``.
"""
