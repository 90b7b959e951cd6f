"""What an annotation method sees and returns, and the helpers the adapters share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from anndata import AnnData

from ..._common import lognorm_matrix


@dataclass
class Split:
    """One train/test problem: a within-dataset split or a cross-study pair."""

    task: str
    seed: int
    train: AnnData
    test: AnnData  # labels hidden ("Unknown")
    y_test: np.ndarray
    labels_key: str
    expression: str  # "counts" or "log1p"
    markers: bool = False  # score the method's markers on this task


@dataclass
class Fitted:
    """A trained method: how it predicts, how long it trained, and its markers (if any)."""

    predict: Callable[[AnnData], np.ndarray]
    epochs: float = np.nan
    markers: Callable[[int], dict[str, list[str]]] | None = None
    note: str = ""
    # further marker rankings of the same model, scored as "<method> <label>"
    extra_markers: dict[str, Callable[[int], dict[str, list[str]]]] = field(default_factory=dict)
    # another study (the transfer family): labels as the method's own reference -> query path
    # gives them, and the same with "Unknown" where it abstains; `None`: `predict`, no abstaining
    predict_query: Callable[[AnnData], tuple[np.ndarray, np.ndarray]] | None = None


class NotApplicable(Exception):
    """The method cannot run on this task (e.g. scANVI without counts)."""


def train_labels(split: Split) -> np.ndarray:
    """The training cells' labels, as strings."""
    return split.train.obs[split.labels_key].astype(str).to_numpy()


def cp10k(split: Split, adata: AnnData):
    """log1p(CP10k) of `adata` (the peers' input)."""
    return lognorm_matrix(adata, split.expression)


def dense(m) -> np.ndarray:
    return np.asarray(m.todense() if hasattr(m, "todense") else m, dtype=np.float32)


def top_from_scores(scores: np.ndarray, classes, genes, k: int) -> dict[str, list[str]]:
    """Top-`k` genes per class from a classes x genes score matrix (positive scores only)."""
    out = {}
    for c, row in zip(classes, np.asarray(scores), strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        out[str(c)] = [str(genes[j]) for j in order if row[j] > 0]
    return out


def markers_from_layer(adata: AnnData, layer: str, groupby: str, k: int,
                       contrast: str = "max_other") -> dict[str, list[str]]:
    """Top-`k` markers per group from an attribution layer (the CGRAN paper's picking rule)."""
    import scanpy as sc

    import scattn as sa

    sa.tl.marker_genes_from_attention(adata, groupby=groupby, layer=layer, key_added="_bench_markers",
                                      contrast=contrast)
    groups = adata.uns["_bench_markers"]["names"].dtype.names
    return {g: sc.get.rank_genes_groups_df(adata, group=g, key="_bench_markers")["names"]
            .astype(str).head(k).tolist() for g in groups}
