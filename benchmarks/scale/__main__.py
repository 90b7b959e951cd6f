"""``python -m benchmarks.scale``: the scale family, as ``python -m benchmarks --scale``."""

from .run import main

main()
