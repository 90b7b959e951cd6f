"""Gene groups for CGRAN's local attention: uniform blocks, k-means clusters, or one group."""

from __future__ import annotations

from typing import Literal

import numpy as np

Grouping = Literal["uniform", "kmeans", "full"]


def pad_groups(groups: list[np.ndarray]) -> np.ndarray:
    """Stack variable-size groups into an ``(n_groups, max_size)`` index, padded with -1."""
    width = max(len(g) for g in groups)
    out = np.full((len(groups), width), -1, dtype=np.int64)
    for i, g in enumerate(groups):
        out[i, : len(g)] = np.sort(g)
    return out


def make_gene_groups(
    n_genes: int,
    grouping: Grouping = "uniform",
    *,
    group_size: int = 100,
    n_groups: int | None = None,
    features: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Assign genes to groups and return the padded group index.

    Parameters
    ----------
    n_genes
        Number of gene tokens.
    grouping
        ``"uniform"``: consecutive blocks of `group_size` genes (the paper's default, 100).
        ``"kmeans"``: k-means on `features` (one row per gene), `n_groups` clusters
        (default ``ceil(n_genes / group_size)``). ``"full"``: one group, i.e. full attention.
    features
        Gene features for k-means (CGRAN uses the gene embeddings).
    seed
        Random state of k-means.
    """
    if n_genes < 1:
        raise ValueError("There must be at least one gene.")
    if grouping == "full":
        return np.arange(n_genes, dtype=np.int64)[None, :]
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}.")
    if grouping == "uniform":
        return pad_groups([np.arange(s, min(s + group_size, n_genes)) for s in range(0, n_genes, group_size)])
    if grouping == "kmeans":
        from sklearn.cluster import KMeans

        if features is None or len(features) != n_genes:
            raise ValueError("k-means grouping needs one feature row per gene.")
        k = n_groups or int(np.ceil(n_genes / group_size))
        k = max(1, min(k, n_genes))
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
        return pad_groups([np.flatnonzero(labels == c) for c in np.unique(labels)])
    raise ValueError(f"grouping must be 'uniform', 'kmeans' or 'full', got {grouping!r}.")


def group_mask(group_index: np.ndarray, n_genes: int) -> np.ndarray:
    """The paper's dense ``(g+1) x (g+1)`` mask H (eq. 6) for a group index; token 0 is the cell.

    Only for reference and benchmarks: the model never builds it.
    """
    group_of = np.full(n_genes, -1)
    for i, row in enumerate(group_index):
        group_of[row[row >= 0]] = i
    mask = np.zeros((n_genes + 1, n_genes + 1), dtype=bool)
    mask[0, :] = True
    mask[:, 0] = True
    mask[1:, 1:] = group_of[:, None] == group_of[None, :]
    return mask
