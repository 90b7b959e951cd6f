"""The one-command suite, ``python -m benchmarks``: every scattn model beside its peers.

* :mod:`.run`: the command line (options, budgets, the loop over task families);
* :mod:`.tasks`: the task families and their registry, :data:`.tasks.FAMILIES`
  (``annotation`` first; integration/reconstruction, response and scale slot in beside it);
* :mod:`.methods`: one adapter per method (scattn's models and the peers);
* :mod:`.report`: summary tables (mean, sd, cost ratios to the best peer) and figures.

Time and memory of each step: :mod:`benchmarks._measure`, shared with the studies and scale.
"""
