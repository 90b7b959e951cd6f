"""The suite's command line: every scattn model beside its peers, on every dataset it fits.

    python -m benchmarks            # default run: <= 45 min on 2 CPU cores
    python -m benchmarks --quick    # pbmc68k_reduced, CellBench cross-study and integration, 1 seed
    python -m benchmarks --full     # each method's own epoch budget, all cells (hours on CPU)
    python -m benchmarks --scale    # the scale family only: 10k/100k/1M cells, one process per
                                    # method (benchmarks/scale; --scale --help for its options)

Tasks
    Within a dataset: pbmc68k_reduced (scanpy), paul15 and panc8_subset (``../shared/data``),
    stratified 80/20 splits, seeds 0-2; the test cells are predicted as new data, their labels
    hidden. Across studies: panc8 inDrop -> CEL-seq/CEL-seq2/Smart-seq2 and CellBench CEL-seq2
    -> Drop-seq (shared cell types and genes; the seeds vary the models). The unlabelled sets
    of ``../shared/data`` (Kang 2018, pbmc3k) have no cell types to score.
Methods
    CGRAN, CFAN, SIMS (scattn) and the peers scANVI, CellTypist, pytorch-tabnet, logistic
    regression and a linear SVM, each fed as its documentation asks (:mod:`benchmarks.suite.methods`).
Metrics
    :func:`scattn.tl.evaluate` (accuracy, balanced accuracy, macro and median F1); wall time of
    training and of prediction and peak memory above the pre-fit level (:mod:`benchmarks._measure`),
    each also as a ratio to the best peer on the task. Markers (pbmc68k_reduced): precision@k and
    recall@k of each method's top-k genes per true cell type against ``markers_pbmc.csv``
    (sources in the table), with scanpy's Wilcoxon ``rank_genes_groups`` as the baseline.
Families
    The tasks above are the *annotation* family (:mod:`benchmarks.suite.tasks.annotation`).
    The *integration* family (:mod:`benchmarks.suite.tasks.integration`; tasks
    ``integration_paul15``, ``integration_cellbench``, ``integration_panc8``) scores scViT
    beside scVI and PCA: held-out likelihood, latent cell-type accuracy, scib-metrics batch
    correction and bio conservation, time per epoch. The *transfer* family
    (:mod:`benchmarks.suite.tasks.transfer`, ``transfer_*``) labels a new study from a
    reference; the *small_data* family (:mod:`benchmarks.suite.tasks.small_data`,
    ``small_data_*``) trains every classifier with its own defaults on 100, 300 and 1,000
    stratified training cells beside logistic regression and CellTypist. Further families (response) register in
    :data:`benchmarks.suite.tasks.FAMILIES` and run under the same options. The *scale* family
    (:mod:`benchmarks.scale`: prediction speed and peak memory at 10k/100k/1M resampled Kang
    cells, one epoch from a backed file) runs only with ``--scale``, which hands every other
    option to :func:`benchmarks.scale.run.main`: it measures each method in a process of its
    own, which the loop below does not.
Budgets
    To fit 30 minutes on 2 cores the default run caps the deep models' epochs (early stopping
    still applies) and subsamples paul15 to 1,000 cells, the size of the other sets
    (:data:`BUDGETS`). ``--full`` uses each method's own defaults and every cell.
Outputs (``--out``, default ``benchmarks/results/benchmark``)
    ``_runs.csv`` (one row per task, seed and method), ``.csv``/``.md`` (summary), ``_markers.csv``
    /``_markers.md``, ``_accuracy.png``, ``_cost.png``; another family writes its files under
    ``<out>_<family>``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import platform
import time
from pathlib import Path

import pandas as pd

from .._budgets import BUDGETS, DEEP_MODELS, MAX_CELLS
from .._common import RESULTS, pin_threads
from .methods import REQUIRES, warm_up
from .tasks import FAMILIES, RunSettings

log = logging.getLogger("benchmarks")


def _budget(args) -> tuple[str, dict, int | None]:
    mode = "quick" if args.quick else "full" if args.full else "default"
    budget = {m: dict(kw) for m, kw in BUDGETS[mode].items()}
    if args.max_epochs is not None:
        budget = {m: {**budget.get(m, {}), "max_epochs": args.max_epochs} for m in DEEP_MODELS}
    max_cells = args.max_cells if args.max_cells is not None else MAX_CELLS[mode]
    return mode, budget, max_cells


def main(argv=None) -> pd.DataFrame:
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    families = list(FAMILIES.values())
    default_tasks = [t for f in families for t in f.tasks]
    known_tasks = {t for f in families for t in f.all_tasks}
    known_methods = list(dict.fromkeys(m for f in families for m in f.methods))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="pbmc68k_reduced + CellBench, 1 seed, few epochs")
    mode.add_argument("--full", action="store_true", help="own epoch budgets, all cells")
    extra_tasks = sorted(known_tasks - set(default_tasks))
    parser.add_argument("--tasks", nargs="*", default=None,
                        help=f"among {', '.join(default_tasks)} (the default run); only when named: "
                             f"{', '.join(extra_tasks)}")
    parser.add_argument("--methods", nargs="*", default=None, help=f"among {', '.join(known_methods)}")
    parser.add_argument("--seeds", nargs="*", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None, help="one epoch cap for every deep model")
    parser.add_argument("--max-cells", type=int, default=None, help="subsample larger datasets")
    parser.add_argument("--k", type=int, default=10, help="markers scored per cell type")
    parser.add_argument("--out", default=str(RESULTS / "benchmark"))
    parser.add_argument("--scale", action="store_true",
                        help="run the scale family instead (benchmarks/scale; `--scale --help` for its options)")
    args = parser.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # before the first split's progress file

    run_mode, budget, max_cells = _budget(args)
    tasks = args.tasks or [t for f in families for t in (f.quick_tasks if args.quick else f.tasks)]
    unknown = set(tasks) - known_tasks
    if unknown:
        parser.error(f"unknown tasks {sorted(unknown)}")
    methods = args.methods or known_methods
    if set(methods) - set(known_methods):
        parser.error(f"unknown methods {sorted(set(methods) - set(known_methods))}")
    missing = [f"{m} ({mod})" for m, mod in REQUIRES.items()
               if m in methods and importlib.util.find_spec(mod) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not installed: pip install -e '.[bench]'")
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    settings = RunSettings(mode=run_mode, seeds=seeds, budget=budget, max_cells=max_cells, k=args.k,
                           out=args.out)
    pin_threads()
    warm_up(methods)
    import torch

    print(f"benchmark ({run_mode}): tasks {tasks}, methods {methods}, seeds {seeds}, "
          f"epoch caps {budget or 'own defaults'}, max cells {max_cells}; "
          f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}", flush=True)

    t_start = time.perf_counter()
    results = {}  # family -> (metric rows, extra rows)
    seen = set()
    for family in families:
        wanted = [t for t in tasks if t in family.all_tasks]
        family_methods = [m for m in methods if m in family.methods]
        if not wanted:
            continue
        if not family_methods:  # e.g. --methods CGRAN: nothing of the integration family to fit
            print(f"{family.name}: none of the methods {methods} applies; skipping {', '.join(wanted)}",
                  flush=True)
            seen.update(wanted)
            continue
        rows, extra_rows = results[family.name] = ([], [])
        for problem, note in family.problems(wanted, settings):
            seen.add(problem.task)
            new, new_extra = family.run(problem, note, family_methods, settings)
            rows += new
            extra_rows += new_extra
            pd.DataFrame(rows).to_csv(f"{family.prefix(args.out)}_runs.csv", index=False)  # progress
    if set(tasks) - seen:
        log.warning("no data for %s (is ../shared/data or $SCATTN_DATA_DIR there?)",
                    ", ".join(sorted(set(tasks) - seen)))
    elapsed = time.perf_counter() - t_start
    header = (f"# scattn benchmark ({run_mode} run)\n\nSeeds {seeds}; epoch caps "
              f"{budget or 'each method own default'}; datasets subsampled to {max_cells or 'all'} cells; "
              f"torch threads {torch.get_num_threads()}; total wall time {elapsed / 60:.1f} min.\n\n")
    tables = [FAMILIES[name].report(rows, extra_rows, settings, header)
              for name, (rows, extra_rows) in results.items()]
    print(f"total wall time {elapsed / 60:.1f} min", flush=True)
    if not tables:
        return pd.DataFrame()
    return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)


if __name__ == "__main__":
    main()
