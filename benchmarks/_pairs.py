"""Reference -> query pairs across studies, shared by the suite's transfer family and the studies
(:mod:`benchmarks.studies.transfer_factors`): which pairs, how each is loaded, how a prediction
is scored on the reference's types and on the types the reference lacks."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ._common import data_dir, metrics

# cross-study pairs with more shared genes keep the reference's most variable ones, the same
# for every method (pytorch-tabnet builds a dense genes x genes matrix: 15k genes need 2.6 GiB)
N_CROSS_GENES = 2000


def variable_genes(ref: AnnData, expression: str, n: int):
    """The `n` most variable genes of the reference (scattn's own rule, as its models use)."""
    from scattn.data import log_normalize, select_variable_genes

    return ref.var_names[np.sort(select_variable_genes(log_normalize(ref.X, expression), n))]


PANC8_TECHS = ("indrop", "celseq", "celseq2", "smartseq2", "fluidigmc1")
PAIRS = {**{f"transfer_panc8_{t}": ("panc8", t) for t in PANC8_TECHS},
         "transfer_cellbench_celseq2_to_dropseq": ("cellbench", "celseq2"),
         "transfer_cellbench_dropseq_to_celseq2": ("cellbench", "dropseq")}
QUICK = ("transfer_cellbench_celseq2_to_dropseq",)
MIN_CELLS = 5  # reference types with fewer cells are left out of the reference


def load_pair(name: str):
    """``(reference, query, expression, note)`` of pair `name` (see the module docstring)."""
    import anndata as ad
    import scanpy as sc

    base = data_dir()
    kind, source = PAIRS[name]
    if kind == "panc8":
        panc = ad.read_h5ad(base / "panc8_subset.h5ad")
        sc.pp.normalize_total(panc, target_sum=1e4)
        sc.pp.log1p(panc)
        tech = panc.obs["tech"].astype(str)
        ref, query, expression = panc[tech == source].copy(), panc[tech != source].copy(), "log1p"
        note = f"panc8 {source} -> the other technologies"
    else:
        other = "dropseq" if source == "celseq2" else "celseq2"
        ref = ad.read_h5ad(base / f"cellbench_3cl_{source}.h5ad")
        query = ad.read_h5ad(base / f"cellbench_3cl_{other}.h5ad")
        sc.pp.filter_genes(ref, min_cells=1)
        expression, note = "counts", f"CellBench {source} -> {other}"
    labels = ref.obs["cell_type"].astype(str)
    counts = labels.value_counts()
    keep = counts.index[counts >= MIN_CELLS]
    ref = ref[labels.isin(keep).to_numpy()].copy()
    genes = ref.var_names.intersection(query.var_names)
    ref, query = ref[:, genes].copy(), query[:, genes].copy()
    if len(genes) > N_CROSS_GENES:
        genes = variable_genes(ref, expression, N_CROSS_GENES)
        ref, query = ref[:, genes].copy(), query[:, genes].copy()
    ref.obs["cell_type"] = ref.obs["cell_type"].astype(str).astype("category")
    query.obs["cell_type"] = query.obs["cell_type"].astype(str)
    return ref, query, expression, note


def score(y_true: np.ndarray, y_pred: np.ndarray, known: set[str], flagged: np.ndarray | None = None) -> dict:
    """Accuracy and macro F1 on the query cells of known types (`y_pred`), and from `flagged`
    (the same calls with ``"Unknown"`` where the method abstains; `None`: `y_pred`) the share
    of the other cells called ``"Unknown"`` (``novel_unknown``) and of the known types'
    cells (``known_unknown``)."""
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    flagged = y_pred if flagged is None else np.asarray(flagged, dtype=str)
    seen = np.isin(y_true, list(known))
    out = metrics(y_true[seen], y_pred[seen])
    out["novel_unknown"] = float((flagged[~seen] == "Unknown").mean()) if (~seen).any() else np.nan
    out["known_unknown"] = float((flagged[seen] == "Unknown").mean())
    out["n_novel"] = int((~seen).sum())
    return out
