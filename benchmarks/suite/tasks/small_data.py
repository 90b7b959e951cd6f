"""The *small_data* family: each classifier with its defaults on 100, 300 and 1,000 training cells.

A default that works on a few thousand cells can fall to chance on a hundred (too few
optimiser steps, a warm-up longer than the run, rare classes never predicted). This family
makes that visible in the suite: every labelled set is split once per seed into a stratified
20% test set and a training pool, from which a stratified subsample of ``n`` cells trains
(every class keeps at least :data:`benchmarks._common.MIN_PER_CLASS` cells where the pool has them, the rest in
proportion to the class sizes). Sizes larger than the pool are skipped (only paul15 has 1,000).

Tasks (``--tasks``): ``small_data_<dataset>`` for pbmc68k_reduced (scanpy's bundle), paul15,
panc8_subset and CellBench CEL-seq2 (240 cells of three cell lines, 28k genes of counts: the
shape of the small set where SCGPT once predicted one class for every cell). Not in the default
run (hours on a CPU); ``--quick --tasks small_data_<dataset>`` runs 100 cells with capped epochs.

Methods: every scattn classifier, logistic regression and CellTypist, each **with its own
defaults** (no epoch cap, as a newcomer trains it: the point is what the defaults give), except
under ``--quick``, which caps epochs like the rest of the suite. Scores: macro F1 and accuracy
on the test set, training time; the report adds each method's macro F1 minus logistic
regression's on the same task, size and seed (``vs_lr``, averaged over seeds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pandas as pd

from ..._common import load_tasks, splits, stratified_subsample
from ..methods import METHODS, Split
from ._family import Family, RunSettings, write_runs_and_summary
from .annotation import _hide, run_split

log = logging.getLogger("benchmarks")

DATASETS = {"small_data_pbmc68k_reduced": "pbmc68k_reduced", "small_data_paul15": "paul15",
            "small_data_panc8": "panc8_subset", "small_data_cellbench": "cellbench_celseq2"}
SIZES = (100, 300, 1000)
QUICK_SIZES = (100,)
METHOD_NAMES = ("CFAN", "CGRAN", "SIMS", "Geneformer", "SCGPT", "LogisticRegression", "CellTypist")


def problems(tasks: list[str], settings: RunSettings) -> Iterator[tuple[Split, str]]:
    """One split per asked dataset, size and seed: a fixed 20% test set per seed, the training
    cells a stratified subsample of the rest."""
    sizes = QUICK_SIZES if settings.mode == "quick" else SIZES
    wanted = {DATASETS[t]: t for t in tasks if t in DATASETS}
    if not wanted:
        return
    for task in load_tasks(list(wanted)):
        labels = task.adata.obs[task.labels_key]
        for seed, pool, test in splits(labels, seeds=settings.seeds):
            a_test, y = _hide(task.adata[test], task.labels_key)
            for n in sizes:
                if n > len(pool):
                    continue
                train = pool[stratified_subsample(labels.to_numpy()[pool], n, seed)]
                adata = task.adata[train].copy()
                adata.obs[task.labels_key] = adata.obs[task.labels_key].astype(str).astype("category")
                name = f"{wanted[task.name]}_{n}"
                yield (Split(name, seed, adata, a_test, y, task.labels_key, task.expression),
                       f"{task.note}; {n} training cells of a {len(pool)}-cell pool, {len(test)} test cells")


def run(split: Split, note: str, methods: list[str], settings: RunSettings) -> tuple[list[dict], list[dict]]:
    """Every method on one split, with its own defaults (``--quick``: the suite's epoch caps)."""
    budget = settings.budget if settings.mode == "quick" else {}
    rows, _ = run_split(split, note, methods, budget, k=settings.k, reference=pd.DataFrame())
    return rows, []


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean (sd) over seeds per task, size and method, and the mean gap to logistic regression."""
    ok = runs[runs["error"].isna()] if "error" in runs else runs
    ok = ok.assign(dataset=ok["task"].str.rsplit("_", n=1).str[0])
    lr = ok[ok["method"] == "LogisticRegression"].set_index(["task", "seed"])["macro_f1"]
    gap = ok["macro_f1"] - pd.MultiIndex.from_frame(ok[["task", "seed"]]).map(lr.get).astype(float)
    ok = ok.assign(vs_lr=gap.to_numpy())
    return (ok.groupby(["dataset", "n_train", "method"], sort=False)
            .agg(n_seeds=("seed", "nunique"), macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"),
                 vs_lr=("vs_lr", "mean"), accuracy=("accuracy", "mean"), epochs=("epochs", "mean"),
                 train_s=("train_s", "mean"))
            .reset_index())


def report(rows: list[dict], extra_rows: list[dict], settings: RunSettings, header: str) -> pd.DataFrame:
    """The runs and the summary under ``<out>_small_data``."""
    note = ("Each method with its own defaults (no epoch cap); `vs_lr`: macro F1 minus logistic "
            "regression's on the same training cells, mean over seeds.\n\n")
    return write_runs_and_summary(FAMILY, rows, settings, header, summarize, note)


# uncapped transformers on every size and seed take hours on a CPU: the family runs when asked
# (``--tasks small_data_...``), not in the default run
FAMILY = Family(name="small_data", tasks=(), quick_tasks=(), extra_tasks=tuple(DATASETS), methods={m: METHODS[m] for m in METHOD_NAMES}, problems=problems, run=run,
                report=report, suffix="_small_data")
