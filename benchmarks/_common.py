"""Helpers shared by the suite (:mod:`benchmarks.suite`) and the studies
(:mod:`benchmarks.studies`): where results go, the labelled datasets and cross-study pairs,
stratified splits, the classification metrics, and the CSV/markdown writers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from anndata import AnnData
from scipy import sparse

ROOT = Path(__file__).parent  # benchmarks/
RESULTS = ROOT / "results"  # committed result files, the default output of every script
MIN_CELLS_PER_CLASS = 5


@dataclass
class Task:
    """A labelled dataset ready for a classifier."""

    name: str
    adata: AnnData  # X holds `expression`
    labels_key: str
    expression: str  # "counts" or "log1p"
    note: str = ""


def data_dir() -> Path | None:
    """The shared data folder (``$SCATTN_DATA_DIR`` or ``../shared/data``), if present."""
    from scattn.datasets import shared_data_dir

    here = Path(__file__).resolve().parents[2] / "shared" / "data"
    return shared_data_dir() or (here if here.is_dir() else None)


def _lognorm(adata: AnnData) -> AnnData:
    import scanpy as sc

    out = adata.copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    return out


def load_tasks(names: list[str] | None = None) -> list[Task]:
    """The labelled tasks: scanpy's pbmc68k_reduced plus the labelled sets of the shared folder."""
    import anndata as ad
    import scanpy as sc

    from scattn.datasets import pbmc68k_reduced

    tasks = [Task("pbmc68k_reduced", pbmc68k_reduced(), "bulk_labels", "log1p", "scanpy bundle, .raw log-normalised")]
    base = data_dir()
    if base is not None:
        paul = ad.read_h5ad(base / "paul15.h5ad")
        tasks.append(Task("paul15", paul, "cell_type", "counts", "MARS-seq counts"))
        panc = ad.read_h5ad(base / "panc8_subset.h5ad")
        # several technologies hold non-integer (already normalised) values: log-normalise all
        # cells the same way for every method
        tasks.append(Task("panc8_subset", _lognorm(panc), "cell_type", "log1p",
                          "mixed counts/normalised; library-size normalised + log1p for all methods"))
        for plat in ("celseq2", "dropseq"):
            cb = ad.read_h5ad(base / f"cellbench_3cl_{plat}.h5ad")
            sc.pp.filter_genes(cb, min_cells=1)
            tasks.append(Task(f"cellbench_{plat}", cb, "cell_type", "counts", "3 cell lines"))
    for t in tasks:
        labels = t.adata.obs[t.labels_key].astype(str)
        counts = labels.value_counts()
        rare = counts.index[counts < MIN_CELLS_PER_CLASS]
        if len(rare):  # a stratified 80/20 split needs a few cells of every class
            t.note += f"; dropped classes with < {MIN_CELLS_PER_CLASS} cells: {', '.join(rare)}"
            t.adata = t.adata[~labels.isin(rare).to_numpy()].copy()
            labels = t.adata.obs[t.labels_key].astype(str)
        t.adata.obs[t.labels_key] = labels.astype("category")
        if sparse.issparse(t.adata.X):
            t.adata.X = sparse.csr_matrix(t.adata.X)
    if names:
        tasks = [t for t in tasks if t.name in names]
    pin_threads()
    return tasks


def load_transfer_tasks(names) -> dict[str, tuple[AnnData, AnnData, str, str]]:
    """Cross-study pairs, ``{name: (reference, query, expression, note)}``, for `names` among
    ``panc8`` (inDrop -> CEL-seq/CEL-seq2/Smart-seq2, library-size normalised + log1p) and
    ``cellbench`` (CEL-seq2 -> Drop-seq, counts); only cell types with >= 5 cells on both sides.
    Used by :mod:`benchmarks.studies.transfer` and the suite's cross-study annotation tasks."""
    import anndata as ad
    import scanpy as sc

    base = data_dir()
    if base is None:
        raise SystemExit("The shared data folder is needed (../shared/data or $SCATTN_DATA_DIR).")
    tasks = {}
    if "panc8" in names:
        panc = ad.read_h5ad(base / "panc8_subset.h5ad")
        sc.pp.normalize_total(panc, target_sum=1e4)
        sc.pp.log1p(panc)
        ref = panc[panc.obs["tech"] == "indrop"].copy()
        query = panc[panc.obs["tech"].isin(["celseq", "celseq2", "smartseq2"])].copy()
        tasks["panc8"] = (ref, query, "log1p", "inDrop -> CEL-seq/CEL-seq2/Smart-seq2")
    if "cellbench" in names:
        ref = ad.read_h5ad(base / "cellbench_3cl_celseq2.h5ad")
        query = ad.read_h5ad(base / "cellbench_3cl_dropseq.h5ad")
        sc.pp.filter_genes(ref, min_cells=1)
        tasks["cellbench"] = (ref, query, "counts", "CEL-seq2 -> Drop-seq")
    out = {}
    for name, (ref, query, expression, note) in tasks.items():
        r, q = ref.obs["cell_type"].astype(str), query.obs["cell_type"].astype(str)
        keep = sorted(c for c in set(r) & set(q) if (r == c).sum() >= 5 and (q == c).sum() >= 5)
        ref, query = ref[r.isin(keep).to_numpy()].copy(), query[q.isin(keep).to_numpy()].copy()
        for a in (ref, query):
            a.obs["cell_type"] = a.obs["cell_type"].astype(str)
        out[name] = (ref, query, expression, f"{note}; types: {', '.join(keep)}")
    return out


def pin_threads() -> None:
    """Hold torch to ``$OMP_NUM_THREADS`` threads, if set.

    scanpy's numba-parallel functions (e.g. ``normalize_total``) reset the OpenMP thread
    count that torch shares (here from 1 to 2): two benchmark processes on two cores would
    then run four threads and time each other's contention.
    """
    import os

    import torch

    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def splits(labels, seeds=(0, 1, 2), test_size: float = 0.2) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Stratified 80/20 train/test splits, one per seed."""
    from sklearn.model_selection import StratifiedShuffleSplit

    y = np.asarray(labels)
    # classes with a single cell cannot be stratified: they stay in training
    for seed in seeds:
        sss = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train, test = next(sss.split(np.zeros(len(y)), y))
        yield seed, np.sort(train), np.sort(test)


#: cells every class keeps in a small training subsample (where it has them)
MIN_PER_CLASS = 3


def stratified_subsample(labels, n: int, seed: int, min_per_class: int = MIN_PER_CLASS) -> np.ndarray:
    """Positions of `n` cells of `labels`: every class gets ``min(min_per_class, its size)``
    cells, the rest is shared in proportion to the class sizes (largest remainders first);
    cells drawn at random within each class. Sorted positions."""
    labels = np.asarray(labels).astype(str)
    if n > len(labels):
        raise ValueError(f"Cannot draw {n} cells from {len(labels)}.")
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    take = np.minimum(sizes, min_per_class)
    if take.sum() > n:
        raise ValueError(f"{n} cells cannot hold {min_per_class} of each of {len(classes)} classes.")
    left = n - take.sum()
    room = sizes - take
    share = left * room / room.sum() if room.sum() else np.zeros(len(classes))
    extra = np.minimum(np.floor(share).astype(int), room)
    order = np.argsort(-(share - np.floor(share)))  # largest remainders get the cells left
    for i in order:
        if extra.sum() >= left:
            break
        if extra[i] < room[i]:
            extra[i] += 1
    take = take + extra
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


def lognorm_matrix(adata: AnnData, expression: str):
    """Log-normalised X, as the models compute it."""
    from scattn.data import log_normalize

    return log_normalize(adata.X, expression)


def metrics(y_true, y_pred) -> dict:
    """Accuracy, balanced accuracy, macro and median F1 from :func:`scattn.tl.evaluate`."""
    import anndata as ad
    import pandas as pd

    import scattn as sa

    obs = pd.DataFrame({"truth": pd.Categorical(np.asarray(y_true, dtype=str)),
                        "pred": np.asarray(y_pred, dtype=str)})
    obs.index = obs.index.astype(str)
    m = sa.tl.evaluate(ad.AnnData(obs=obs), "truth", "pred")
    return {k: float(m[k]) for k in ("accuracy", "balanced_accuracy", "macro_f1", "median_f1")}


def upsert_runs(path, new, keys: tuple[str, ...]):
    """The runs file at `path` with `new`'s rows in place of its rows of the same `keys` (e.g.
    dataset and seed): one file per study holds every seed and variant, and a rerun of some
    replaces only those. Written back and returned."""
    import pandas as pd

    path = Path(path)
    if path.exists() and len(new):
        old = pd.read_csv(path)
        if set(keys) <= set(old.columns):
            done = pd.MultiIndex.from_frame(new[list(keys)].astype(str))
            stale = pd.MultiIndex.from_frame(old[list(keys)].astype(str)).isin(done)
            new = pd.concat([old[~stale], new], ignore_index=True)
    new.to_csv(path, index=False)
    return new


def write_results(table, out, title: str) -> None:
    """Write `table` to ``<out>.csv`` and ``<out>.md`` (with `title`) and print it."""
    table.to_csv(f"{out}.csv", index=False)
    with open(f"{out}.md", "w") as fh:
        fh.write(f"# {title}\n\n")
        fh.write(markdown_table(table))
    print(table.to_string(index=False))


def markdown_table(df) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
