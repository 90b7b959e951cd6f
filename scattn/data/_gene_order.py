"""Orders of the genes along the input vector, for models whose input layers see neighbours
(a convolution over genes, patches of consecutive genes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse

GeneOrder = Literal["given", "correlation", "mean", "random"]
#: the gene orders :func:`order_genes` knows by name (also ``SCVIT(gene_order=...)``)
GENE_ORDERS = ("given", "correlation", "mean", "random")


def order_genes(lognorm, method: GeneOrder | Sequence[str] = "correlation", *,
                var_names: pd.Index | None = None, n_cells: int = 5000, n_components: int = 30,
                seed: int = 0) -> np.ndarray:
    """An order of the genes (a permutation of their positions).

    Parameters
    ----------
    lognorm
        Cells x genes log-normalised expression (dense or sparse).
    method
        ``"given"``: the order of the columns. ``"correlation"``: co-expressed genes next to
        each other: genes are described by their standardised loadings on the top
        `n_components` principal components of (at most `n_cells` sampled) cells and ordered
        by the leaves of an average-linkage tree on cosine distance (with more than 3,000
        genes, k-means first groups them into 1,000 clusters, ordered the same way; genes in a
        cluster follow their loading on the first component; genes constant over the sampled
        cells come last). ``"mean"``: by decreasing mean
        expression. ``"random"``: a random permutation (seeded). A sequence of gene names
        (`var_names` required): exactly that order.
    var_names
        The genes' names, for an explicit order.
    n_cells, n_components, seed
        Cells sampled, components and seed of the correlation order.

    Returns
    -------
    ``(g,)`` int array: the gene positions in their new order.
    """
    n_obs, n_genes = lognorm.shape
    if not isinstance(method, str):
        if var_names is None:
            raise ValueError("An explicit gene order needs var_names.")
        names = pd.Index([str(g) for g in method])
        pos = pd.Index(var_names).get_indexer(names)
        if len(names) != n_genes or names.has_duplicates or (pos < 0).any():
            raise ValueError(f"An explicit gene order must name each of the {n_genes} genes once.")
        return pos.astype(np.int64)
    if method not in GENE_ORDERS:
        raise ValueError(f"gene_order must be one of {', '.join(GENE_ORDERS)} or a list of genes, "
                         f"got {method!r}.")
    if method == "given" or n_genes < 3:
        return np.arange(n_genes)
    rng = np.random.default_rng(seed)
    if method == "random":
        return rng.permutation(n_genes)
    if method == "mean":
        mean = np.asarray(lognorm.mean(axis=0)).ravel()
        return np.argsort(-mean, kind="stable")
    return _correlation_order(lognorm, n_cells=n_cells, n_components=n_components, rng=rng)


def _correlation_order(lognorm, *, n_cells: int, n_components: int, rng) -> np.ndarray:
    from scipy.cluster.hierarchy import leaves_list, linkage
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.utils.extmath import randomized_svd

    n_obs, n_genes = lognorm.shape
    rows = np.sort(rng.choice(n_obs, min(n_cells, n_obs), replace=False))
    x = lognorm[rows]
    x = np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float64)
    x -= x.mean(0)
    sd = x.std(0)
    x /= np.where(sd > 0, sd, 1)
    k = max(1, min(n_components, min(x.shape) - 1))
    _, s, vt = randomized_svd(x, k, random_state=int(rng.integers(2**31)))
    loadings = vt.T * s  # genes x components
    norm = np.linalg.norm(loadings, axis=1)
    # genes constant over the sampled cells (e.g. never expressed) have no direction: they go last
    varying = np.flatnonzero(norm > 1e-12)
    constant = np.flatnonzero(norm <= 1e-12)
    if len(varying) < 3:
        return np.concatenate([varying, constant]).astype(np.int64)
    unit = loadings[varying] / norm[varying, None]
    if len(varying) <= 3000:
        order = leaves_list(linkage(unit, method="average", metric="cosine"))
    else:
        km = MiniBatchKMeans(1000, random_state=int(rng.integers(2**31)), n_init=3).fit(unit)
        centres = km.cluster_centers_
        centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
        cluster_order = leaves_list(linkage(centres, method="average", metric="cosine"))
        rank = np.empty(len(cluster_order), dtype=np.int64)
        rank[cluster_order] = np.arange(len(cluster_order))
        order = np.lexsort((-unit[:, 0], rank[km.labels_]))
    return np.concatenate([varying[order], constant]).astype(np.int64)
