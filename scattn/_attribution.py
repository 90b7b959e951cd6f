"""Attention-derived markers: the pure computation shared by models and tools.

The CGRAN paper's "picked by most cells of one type" rule on a cells x genes attribution
matrix. This module sits below both :mod:`scattn.model` (whose ``predict`` writes markers) and
:mod:`scattn.tl` (whose tools recompute them); it imports neither, nor :mod:`scattn.pl`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse, stats

__all__ = ["attention_markers"]


def _picks(attention: sparse.csr_matrix, n_top: int) -> sparse.csr_matrix:
    """Binary cells x genes matrix: gene j is picked by cell i if in i's top `n_top` weights."""
    # a copy: eliminate_zeros works in place on arrays the caller's matrix may share (a float32
    # CSR input is not copied by the constructor), which left the user's layer corrupt
    att = sparse.csr_matrix(attention, dtype=np.float32, copy=True)
    att.eliminate_zeros()
    rows = np.diff(att.indptr)
    if rows.max(initial=0) > n_top:
        keep = np.zeros(att.nnz, dtype=bool)
        for i in np.flatnonzero(rows > n_top):
            lo, hi = att.indptr[i], att.indptr[i + 1]
            keep[lo + np.argpartition(-att.data[lo:hi], n_top - 1)[:n_top]] = True
        keep[np.repeat(rows <= n_top, rows)] = True
        att = sparse.csr_matrix(
            (att.data * keep, att.indices, att.indptr), shape=att.shape
        )
        att.eliminate_zeros()
    # the same sparsity pattern with ones: a new data array, the indices shared
    return sparse.csr_matrix((np.ones(att.nnz, dtype=np.float32), att.indices, att.indptr), shape=att.shape)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values."""
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


def attention_markers(
    attention,
    groups: pd.Series | pd.Categorical | np.ndarray,
    var_names: pd.Index,
    *,
    n_top: int = 50,
    n_genes: int = 100,
    groupby: str = "group",
    layer: str | None = None,
    contrast: Literal["max_other", "rest"] = "max_other",
) -> dict:
    """Rank each group's marker genes from a cells x genes attention matrix.

    A gene is *picked* by a cell when it is among the cell's `n_top` highest weights. For group
    ``c`` and gene ``j``, ``pts = P(picked | c)`` and ``pts_max_other`` the largest picking
    rate in any other group. With ``contrast="max_other"`` the score ``pts - pts_max_other`` is
    high for a gene picked by most cells of one group and rarely by any other (the paper's
    "highly differential gene"); with ``contrast="rest"`` it is ``pts - pts_rest``, the picking
    rate against all other cells pooled (scanpy's ``reference="rest"``), which keeps a marker
    that two related groups share (e.g. a T-cell gene for two T-cell subsets).
    The p-value is a one-sided hypergeometric test of picks in ``c`` against all cells
    (Benjamini-Hochberg adjusted per group); ``logfoldchanges`` is ``log2`` of the picking rate
    in ``c`` over that in the rest (a rate ratio, not an expression fold change).

    Parameters
    ----------
    attention
        Cells x genes attention or attribution (sparse or dense); only each cell's `n_top`
        highest positive weights count.
    groups
        Group of each cell (one per row of `attention`); missing values are left out.
    var_names
        Gene names, one per column of `attention`.
    n_top
        A gene is picked by a cell if in its top `n_top` weights (paper: 50).
    n_genes
        Number of genes ranked per group.
    groupby
        Name of the grouping, recorded in ``params["groupby"]``.
    layer
        Name of the attention layer, recorded in ``params["attention_layer"]``.
    contrast
        ``"max_other"`` (the paper) or ``"rest"``, see above.

    Returns
    -------
    A dict in scanpy's ``rank_genes_groups`` layout: ``names``, ``scores``, ``pvals``,
    ``pvals_adj``, ``logfoldchanges`` (record arrays, one field per group, best first),
    ``pts`` and ``pts_rest`` (genes x groups DataFrames), and ``params``.
    """
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}.")
    if n_genes < 1:
        raise ValueError(f"n_genes must be >= 1, got {n_genes}.")
    if contrast not in ("max_other", "rest"):
        raise ValueError(f"contrast must be 'max_other' or 'rest', got {contrast!r}.")
    att = sparse.csr_matrix(attention)
    if att.shape[1] != len(var_names):
        raise ValueError("attention has a different number of columns than var_names.")
    cat = pd.Categorical(np.asarray(groups, dtype=object) if not isinstance(groups, pd.Categorical) else groups)
    if len(cat) != att.shape[0]:
        raise ValueError("groups must have one entry per cell (row of attention).")
    present = [c for c in cat.categories if (cat == c).sum() > 0]
    if not present:
        raise ValueError("No cell has a group.")
    picked = _picks(att, n_top)
    codes = pd.Categorical(cat, categories=present).codes
    ok = codes >= 0
    indicator = sparse.csr_matrix(
        (np.ones(ok.sum()), (codes[ok], np.flatnonzero(ok))), shape=(len(present), att.shape[0])
    )
    counts = np.asarray((indicator @ picked).todense())  # groups x genes
    sizes = np.asarray(indicator.sum(axis=1)).ravel()
    total_picks = counts.sum(0)
    n_cells = sizes.sum()
    candidates = np.flatnonzero(total_picks > 0)
    if len(candidates) == 0:
        raise ValueError("The attention matrix has no non-zero weight.")
    rate = counts[:, candidates] / sizes[:, None]
    rest_n = n_cells - sizes
    rest_rate = (total_picks[candidates][None, :] - counts[:, candidates]) / np.maximum(rest_n, 1)[:, None]
    n_keep = min(n_genes, len(candidates))
    names, scores, pvals, padj, lfc = {}, {}, {}, {}, {}
    eps = 1.0 / max(n_cells, 1)
    for gi, group in enumerate(present):
        if contrast == "rest":
            score = rate[gi] - rest_rate[gi]
        else:
            other = np.delete(rate, gi, axis=0)
            score = rate[gi] - (other.max(0) if len(other) else np.zeros(rate.shape[1]))
        p = stats.hypergeom.sf(counts[gi, candidates] - 1, n_cells, total_picks[candidates], sizes[gi])
        order = np.lexsort((p, -score))[:n_keep]
        key = str(group)
        names[key] = np.asarray(var_names[candidates[order]], dtype=object)
        scores[key] = score[order].astype(np.float32)
        pvals[key] = p[order]
        padj[key] = benjamini_hochberg(p)[order]
        lfc[key] = np.log2((rate[gi] + eps) / (rest_rate[gi] + eps))[order].astype(np.float32)
    keys = [str(g) for g in present]

    def rec(d: dict, dtype) -> np.recarray:
        return np.rec.fromarrays([np.asarray(d[k], dtype=dtype) for k in keys], names=keys)

    cand_names = pd.Index(var_names[candidates])
    return {
        "params": {
            "groupby": groupby,
            "reference": "rest",
            "method": "attention",
            "use_raw": False,
            "layer": None,
            "corr_method": "benjamini-hochberg",
            "attention_layer": layer,
            "n_top": n_top,
            "contrast": contrast,
        },
        "names": rec(names, object),
        "scores": rec(scores, np.float32),
        "pvals": rec(pvals, np.float64),
        "pvals_adj": rec(padj, np.float64),
        "logfoldchanges": rec(lfc, np.float32),
        "pts": pd.DataFrame(rate.T, index=cand_names, columns=keys),
        "pts_rest": pd.DataFrame(rest_rate.T, index=cand_names, columns=keys),
    }
