"""The benchmarks behind ``benchmarks/results/RESULTS.md``: one module per measurement, one entry point.

``python -m benchmarks <table>|all [--quick]`` (from the repository root; :mod:`benchmarks.__main__`)
runs the commands of a table in order and rewrites the generated blocks of RESULTS.md; each module
also runs on its own, ``python -m benchmarks.<module> --help``. Shared options, model loading, the
machine line and the result files are in :mod:`benchmarks._common`. Not shipped in the wheel: the
benchmarks run from a checkout.
"""
