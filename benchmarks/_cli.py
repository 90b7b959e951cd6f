"""``python -m benchmarks``: the suite (:mod:`benchmarks.suite.run`), or with ``--scale`` the scale
family (:mod:`benchmarks.scale.run`: its own options, one process per measurement). The one
place that knows both, so that neither package imports the other."""

from __future__ import annotations

import sys


def main(argv=None):
    """Run the suite, or the scale family when `argv` holds ``--scale``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--scale" in argv:
        from .scale.run import main as scale_main

        return scale_main([a for a in argv if a != "--scale"])
    from .suite.run import main as suite_main

    return suite_main(argv)
