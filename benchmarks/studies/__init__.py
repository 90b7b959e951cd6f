"""Per-model studies: one model's claims measured in more depth than the suite does.

Each is its own command, ``python -m benchmarks.studies.<name>`` (see ``benchmarks/README.md``),
writing a CSV and a markdown table to ``benchmarks/results/``; helpers they share with the
suite are in :mod:`benchmarks._common` (data, splits, metrics, writers) and
:mod:`benchmarks._peers` (the peers' training recipes).
"""
