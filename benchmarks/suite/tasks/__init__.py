"""The suite's task families, and the registry the runner reads.

A *family* is one kind of problem the models are judged on: its tasks (datasets and how they
are split), the methods that solve it, how a method's answer is scored and what the run
writes. ``python -m benchmarks`` runs every registered family whose tasks are asked for
(``--tasks``; by default each family's :attr:`Family.tasks`, with ``--quick`` its
:attr:`Family.quick_tasks`), with the same seeds, epoch caps and cell budget for all.

=================  =====================================  ===========================
family             what is scored                         module
=================  =====================================  ===========================
``annotation``     labels of held-out cells, markers      :mod:`.annotation`
``integration``    latent, held-out likelihood, batches   :mod:`.integration`
``transfer``       a new study's labels from a reference  :mod:`.transfer`
``small_data``     labels from 100/300/1,000 training     :mod:`.small_data`
                   cells, each method's own defaults
=================  =====================================  ===========================

Adding a family (response, scale):

1. Write ``suite/tasks/<family>.py`` ending in ``FAMILY = Family(...)``:

   * task names (``tasks``, ``quick_tasks``, ``extra_tasks``), unique across families: they
     are what ``--tasks`` accepts;
   * ``problems(tasks, settings)``: yields ``(problem, note)`` for the asked tasks, each
     problem with a ``task`` and a ``seed`` attribute (annotation's is
     :class:`~benchmarks.suite.methods.Split`); it yields nothing for a task whose data are
     absent, and the runner warns;
   * ``methods``: ``{name: adapter}``, adapters in :mod:`benchmarks.suite.methods` (one per
     method; a family whose methods return embeddings or reconstructions has its own adapter
     type and registry there);
   * ``run(problem, note, methods, settings)``: fits every method on one problem (through
     :func:`benchmarks._measure.measure`, so time and memory are measured the same way in
     every family) and returns ``(rows, extra_rows)``: one metric row per method, and any
     secondary rows (annotation: marker precision);
   * ``report(rows, extra_rows, settings, header)``: writes the family's files under
     ``settings.out`` + ``suffix`` and returns its summary table.

2. Register it in :data:`FAMILIES` below. Give it a ``suffix`` (e.g. ``"_integration"``):
   annotation writes the historical ``benchmark*`` names (no suffix), every other family
   ``benchmark_<family>*``.

3. Add its peers' optional packages to :data:`benchmarks.suite.methods.REQUIRES`, a ``--quick``
   smoke test in ``tests/test_benchmarks.py``, and a section in ``docs/benchmarks.md``.
"""

from __future__ import annotations

from . import annotation, integration, small_data, transfer
from ._family import Family, RunSettings

# name -> family, in the order they run
FAMILIES: dict[str, Family] = {
    "annotation": annotation.FAMILY,
    "integration": integration.FAMILY,
    "transfer": transfer.FAMILY,
    "small_data": small_data.FAMILY,
}

__all__ = ["FAMILIES", "Family", "RunSettings"]
