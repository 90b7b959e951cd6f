"""The benchmark's train/test problems: within-dataset splits and cross-study pairs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from anndata import AnnData

from ._common import MIN_CELLS_PER_CLASS, Task, data_dir, load_tasks, splits
from ._methods import Split

# labelled sets scored with stratified 80/20 splits; CellBench's cell lines are separated
# perfectly by every method (benchmarks/results/cgran_accuracy_h100.md), so by default they
# serve only the cross-study task
WITHIN = ("pbmc68k_reduced", "paul15", "panc8_subset")
CROSS = ("panc8_inDrop_to_others", "cellbench_CELseq2_to_Dropseq")
MARKER_TASK = "pbmc68k_reduced"  # benchmarks/markers_pbmc.csv lists PBMC markers
# cross-study pairs with more shared genes keep the reference's most variable ones, the same
# for every method (pytorch-tabnet builds a dense genes x genes matrix: 15k genes need 2.6 GiB)
N_CROSS_GENES = 2000


def _variable_genes(ref: AnnData, expression: str, n: int):
    """The `n` most variable genes of the reference (scattn's own rule, as its models use)."""
    from scattn.data import log_normalize, select_variable_genes

    return ref.var_names[np.sort(select_variable_genes(log_normalize(ref.X, expression), n))]


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
    from .transfer import load_transfer_tasks

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
