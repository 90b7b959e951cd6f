"""``python -m benchmarks``: the one-command suite, see :mod:`benchmarks.suite.run`."""

from .suite.run import main

main()
