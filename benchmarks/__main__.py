"""``python -m benchmarks``: the one-command suite (:mod:`benchmarks.suite.run`), or the scale
family with ``--scale`` (:mod:`benchmarks._cli`)."""

from ._cli import main

main()
