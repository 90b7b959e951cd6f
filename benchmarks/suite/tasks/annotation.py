"""The annotation family: label held-out cells, and rank marker genes per cell type.

Tasks
    Within a dataset (:data:`WITHIN`): stratified 80/20 splits, one per seed, the test cells
    predicted as new data with their labels hidden. Across studies (:data:`CROSS`): train on
    one study, predict another (shared cell types and genes; the seeds vary the models).
Methods
    :data:`benchmarks.suite.methods.METHODS`, ``fit(split, seed, budget) -> Fitted``.
Scores
    :func:`benchmarks._common.metrics` (accuracy, balanced accuracy, macro and median F1),
    wall time of training and of prediction and peak memory (:mod:`benchmarks._measure`);
    on :data:`MARKER_TASK`, precision@k and recall@k of each method's top-k genes per true
    cell type against ``benchmarks/markers_pbmc.csv``, with scanpy's Wilcoxon test as the
    baseline.
Outputs (under ``--out``)
    ``_runs.csv``, ``.csv``/``.md`` (summary), ``_markers_per_type.csv``, ``_markers.csv``/
    ``.md``, ``_accuracy.png``, ``_cost.png``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from ..._common import (
    MIN_CELLS_PER_CLASS,
    ROOT,
    Task,
    data_dir,
    load_tasks,
    load_transfer_tasks,
    markdown_table,
    metrics,
    splits,
)
from ..._measure import measure
from ..._pairs import N_CROSS_GENES
from ..._pairs import variable_genes as _variable_genes
from ..methods import METHODS, NotApplicable, Split, cp10k
from ..report import plot_accuracy, plot_costs, summarize, summarize_markers
from ._family import Family, RunSettings

# labelled sets scored with stratified 80/20 splits; CellBench's cell lines are separated
# perfectly by every method (benchmarks/results/cgran_accuracy_h100.md), so by default they
# serve only the cross-study task (--tasks cellbench_celseq2 cellbench_dropseq adds them)
WITHIN = ("pbmc68k_reduced", "paul15", "panc8_subset")
CROSS = ("panc8_inDrop_to_others", "cellbench_CELseq2_to_Dropseq")
EXTRA = ("cellbench_celseq2", "cellbench_dropseq")
QUICK = ("pbmc68k_reduced", "cellbench_CELseq2_to_Dropseq")
MARKER_TASK = "pbmc68k_reduced"  # benchmarks/markers_pbmc.csv lists PBMC markers
MARKER_TABLE = ROOT / "markers_pbmc.csv"

log = logging.getLogger("benchmarks")


def subsample(task: Task, max_cells: int | None, seed: int = 0) -> Task:
    """Keep at most `max_cells` cells, stratified by label (classes left with too few cells
    for a stratified split are dropped, as :func:`load_tasks` does)."""
    if max_cells is None or task.adata.n_obs <= max_cells:
        return task
    from sklearn.model_selection import train_test_split

    labels = task.adata.obs[task.labels_key].astype(str).to_numpy()
    keep, _ = train_test_split(np.arange(len(labels)), train_size=max_cells, stratify=labels,
                               random_state=seed)
    adata = task.adata[np.sort(keep)].copy()
    counts = adata.obs[task.labels_key].astype(str).value_counts()
    rare = counts.index[counts < MIN_CELLS_PER_CLASS]
    adata = adata[~adata.obs[task.labels_key].astype(str).isin(rare).to_numpy()].copy()
    adata.obs[task.labels_key] = adata.obs[task.labels_key].astype(str).astype("category")
    note = f"{task.note}; stratified subsample of {adata.n_obs} of {task.adata.n_obs} cells"
    if len(rare):
        note += f" (dropped {', '.join(rare)}: < {MIN_CELLS_PER_CLASS} cells left)"
    return Task(task.name, adata, task.labels_key, task.expression, note)


def _hide(test: AnnData, labels_key: str) -> tuple[AnnData, np.ndarray]:
    """A copy of `test` whose obs holds only the labels column, every value "Unknown"."""
    import pandas as pd

    y = test.obs[labels_key].astype(str).to_numpy()
    test = test.copy()
    # every other column goes too: several sets carry other label columns (paul15_clusters,
    # celltype, cell_line, louvain, ...)
    test.obs = pd.DataFrame({labels_key: "Unknown"}, index=test.obs_names)
    return test, y


def within_splits(names, seeds, max_cells: int | None) -> Iterator[tuple[Split, str]]:
    """Stratified 80/20 splits of each dataset, one per seed."""
    if not names:
        return
    for task in load_tasks(list(names)):
        task = subsample(task, max_cells)
        for seed, train, test in splits(task.adata.obs[task.labels_key], seeds=seeds):
            a_test, y = _hide(task.adata[test], task.labels_key)
            yield Split(task.name, seed, task.adata[train].copy(), a_test, y, task.labels_key,
                        task.expression, markers=task.name == MARKER_TASK), task.note


def cross_splits(names, seeds) -> Iterator[tuple[Split, str]]:
    """Train on one study, predict another: every reference cell trains, every query cell of
    a shared type is tested; both restricted to their shared genes (at most
    :data:`N_CROSS_GENES`, the reference's most variable). Seeds vary the models."""
    wanted = {"panc8": "panc8_inDrop_to_others", "cellbench": "cellbench_CELseq2_to_Dropseq"}
    keys = [k for k, v in wanted.items() if v in names]
    if not keys or data_dir() is None:  # the shared data folder is absent
        return
    for key, (ref, query, expression, note) in load_transfer_tasks(keys).items():
        genes = ref.var_names.intersection(query.var_names)
        ref, query = ref[:, genes].copy(), query[:, genes].copy()
        if len(genes) > N_CROSS_GENES:  # CellBench: 15k shared genes
            genes = _variable_genes(ref, expression, N_CROSS_GENES)
            ref, query = ref[:, genes].copy(), query[:, genes].copy()
        ref.obs["cell_type"] = ref.obs["cell_type"].astype("category")
        for seed in seeds:
            a_test, y = _hide(query, "cell_type")
            yield (Split(wanted[key], seed, ref.copy(), a_test, y, "cell_type", expression),
                   f"{note}; {len(genes)} shared genes; {ref.n_obs} -> {query.n_obs} cells")


def problems(tasks: list[str], settings: RunSettings) -> Iterator[tuple[Split, str]]:
    """The within-dataset splits of `tasks`, then their cross-study pairs."""
    yield from within_splits([t for t in tasks if t not in CROSS], settings.seeds, settings.max_cells)
    yield from cross_splits([t for t in tasks if t in CROSS], settings.seeds)


# -- markers --------------------------------------------------------------------------------
@cache
def marker_table() -> pd.DataFrame:
    """The reference markers (``cell_type``, ``gene``, source) the methods' markers are scored against."""
    return pd.read_csv(MARKER_TABLE)


def wilcoxon_markers(split: Split, k: int) -> dict[str, list[str]]:
    """scanpy's Wilcoxon ``rank_genes_groups`` on the training cells (the marker baseline)."""
    import scanpy as sc

    data = AnnData(cp10k(split, split.train), obs=split.train.obs[[split.labels_key]].copy())
    data.var_names = split.train.var_names
    sc.tl.rank_genes_groups(data, split.labels_key, method="wilcoxon", key_added="wilcoxon")
    groups = data.uns["wilcoxon"]["names"].dtype.names
    return {g: sc.get.rank_genes_groups_df(data, group=g, key="wilcoxon")["names"].astype(str).head(k).tolist()
            for g in groups}


def score_markers(found: dict[str, list[str]], reference: pd.DataFrame, genes, k: int,
                  method: str, split: Split) -> list[dict]:
    """Precision@k (hits / k) and recall@k (hits / reference markers in the data) per type."""
    rows = []
    present = set(map(str, genes))
    for cell_type, ref in reference.groupby("cell_type"):
        wanted = set(ref["gene"]) & present
        if not wanted or cell_type not in split.train.obs[split.labels_key].astype(str).to_numpy():
            continue
        top = found.get(cell_type, [])[:k]  # a type the method gives no markers for scores 0
        hits = len(wanted & set(top))
        rows.append(dict(task=split.task, seed=split.seed, method=method, cell_type=cell_type,
                         n_reference=len(wanted), hits=hits, precision_at_k=hits / k,
                         recall_at_k=hits / len(wanted), top=" ".join(top)))
    return rows


# -- one split, every method ----------------------------------------------------------------
def run_split(split: Split, note: str, methods, budget: dict, *, k: int,
              reference: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """Every method on one split: metric rows and marker rows."""
    rows, marker_rows = [], []
    if split.markers:
        marker_rows += score_markers(wilcoxon_markers(split, k), reference, split.train.var_names, k,
                                     "Wilcoxon (scanpy)", split)
    for name in methods:
        base = dict(task=split.task, seed=split.seed, method=name, n_train=split.train.n_obs,
                    n_test=split.test.n_obs, n_genes=split.train.n_vars, note=note)
        cap = budget.get(name, {}).get("max_epochs")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scvi/lightning/celltypist chatter, per fit
                fit = measure(lambda n=name: METHODS[n](split, split.seed, budget.get(n, {})))
                pred = measure(lambda f=fit: f.value.predict(split.test))
        except NotApplicable as err:
            log.info("%s on %s: not applicable (%s)", name, split.task, err)
            continue
        except Exception as err:  # one failing method must not end an hours-long run
            log.exception("%s on %s seed %d failed", name, split.task, split.seed)
            rows.append(dict(base, error=f"{type(err).__name__}: {err}"))
            continue
        fitted = fit.value
        rows.append(dict(base, **metrics(split.y_test, pred.value), epochs=fitted.epochs,
                         capped=bool(cap is not None and fitted.epochs >= cap),
                         train_s=fit.seconds, predict_s=pred.seconds,
                         # both steps against the RSS before training (the model stays loaded)
                         peak_mb=max(fit.peak_abs_mb, pred.peak_abs_mb) - fit.start_mb,
                         method_note=fitted.note))
        print(f"{split.task} seed {split.seed} {name}: macro F1 {rows[-1]['macro_f1']:.3f}, "
              f"train {fit.seconds:.1f} s, predict {pred.seconds:.2f} s, {rows[-1]['peak_mb']:.0f} MiB",
              flush=True)
        if split.markers and fitted.markers is not None:
            rankings = {name: fitted.markers, **{f"{name} {lab}": f for lab, f in fitted.extra_markers.items()}}
            for label, rank in rankings.items():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        found = rank(k)
                except Exception:
                    log.exception("markers of %s on %s seed %d failed", label, split.task, split.seed)
                    continue
                marker_rows += score_markers(found, reference, split.train.var_names, k, label, split)
    return rows, marker_rows


def run(split: Split, note: str, methods: list[str], settings: RunSettings) -> tuple[list[dict], list[dict]]:
    """:func:`run_split` with the run's budget, `k` and the reference marker table."""
    return run_split(split, note, methods, settings.budget, k=settings.k, reference=marker_table())


# -- the run's files ------------------------------------------------------------------------
def report(rows: list[dict], marker_rows: list[dict], settings: RunSettings, header: str) -> pd.DataFrame:
    """Write the runs, the summary (under `header`), the markers and both figures; return the summary."""
    out = FAMILY.prefix(settings.out)
    runs = pd.DataFrame(rows)
    runs.to_csv(f"{out}_runs.csv", index=False)
    table = summarize(runs)
    table.to_csv(f"{out}.csv", index=False)
    Path(f"{out}.md").write_text(header + markdown_table(table))
    print(table.to_string(index=False))
    if marker_rows:
        mk = pd.DataFrame(marker_rows)
        mk.to_csv(f"{out}_markers_per_type.csv", index=False)
        msum = summarize_markers(mk)
        msum.to_csv(f"{out}_markers.csv", index=False)
        Path(f"{out}_markers.md").write_text(
            f"# Marker precision@{settings.k} against benchmarks/markers_pbmc.csv (pbmc68k_reduced, "
            f"training cells by true label, seeds {settings.seeds})\n\n" + markdown_table(msum))
        print(msum.to_string(index=False))
    if len(table):
        plot_accuracy(table, f"{out}_accuracy.png")
        plot_costs(table, f"{out}_cost.png")
    return table


FAMILY = Family(name="annotation", tasks=WITHIN + CROSS, quick_tasks=QUICK, extra_tasks=EXTRA,
                methods=METHODS, problems=problems, run=run, report=report)
