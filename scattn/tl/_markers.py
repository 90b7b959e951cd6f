"""Marker genes from attention: the CGRAN paper's "picked by most cells of one type" rule."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse, stats

from scattn._docs import scattn_dsp


def get_markers(adata: AnnData, key: str) -> dict:
    """The marker result at ``adata.uns[key]`` (``rank_genes_groups`` layout), or a clear error."""
    if key not in adata.uns or "names" not in adata.uns[key]:
        raise KeyError(
            f"No markers at adata.uns[{key!r}]; run `model.predict(adata)` or "
            "`sa.tl.marker_genes_from_attention` first."
        )
    return adata.uns[key]


def _picks(attention: sparse.csr_matrix, n_top: int) -> sparse.csr_matrix:
    """Binary cells x genes matrix: gene j is picked by cell i if in i's top `n_top` weights."""
    att = sparse.csr_matrix(attention, dtype=np.float32)
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
    picked = att.copy()
    picked.data[:] = 1.0
    return picked


def _bh(p: np.ndarray) -> np.ndarray:
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
        padj[key] = _bh(p)[order]
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


@scattn_dsp.dedent
def marker_genes_from_attention(
    adata: AnnData,
    *,
    groupby: str | None = None,
    layer: str = "cgran_attention",
    n_top: int = 50,
    n_genes: int = 100,
    contrast: Literal["max_other", "rest"] = "max_other",
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Marker genes per group from a cells x genes attention (or attribution) layer.

    The CGRAN paper's rule (section 4.2.1): a gene is *picked* by a cell when it is among the
    cell's top-`n_top` attention weights; a gene picked by most cells of one group and rarely by
    any other group is that group's marker. Genes are ranked by
    ``score = P(picked | group) - max over other groups of P(picked | other)``.
    Works on any model's attribution layer (``cgran_attention``, ...).

    Parameters
    ----------
    adata
        AnnData with the attention layer, e.g. written by ``model.predict()``.
    groupby
        Column of ``adata.obs`` with the groups (cell types or predictions). Default: the
        predictions written with the layer, ``"<prefix>_prediction"`` for a layer named
        ``"<prefix>_attention"``.
    layer
        Layer with the cells x genes attention.
    n_top
        A gene is picked by a cell if in its top `n_top` weights (paper: 50).
    n_genes
        Number of genes to rank per group.
    contrast
        ``"max_other"`` (the paper): a group's picking rate minus the highest picking rate of
        any *other group*, so a gene shared by two related groups scores low in both.
        ``"rest"``: minus the picking rate of all other cells pooled, as scanpy's
        ``reference="rest"``; it keeps markers shared by related groups (on pbmc68k_reduced it
        found more of a reference table's canonical markers, see the benchmarks).
    key_added
        Key in ``adata.uns``; default ``"<prefix>_markers"`` for a layer named
        ``"<prefix>_attention"``, else ``"attention_markers"``.
    %(copy)s

    Returns
    -------
    `None`, or a copy of `adata` with `copy=True`. Writes ``adata.uns[key_added]`` in scanpy's
    ``rank_genes_groups`` layout, so ``sc.pl.rank_genes_groups_dotplot(adata, key=key_added)``
    and ``sc.get.rank_genes_groups_df(adata, group=None, key=key_added)`` read it:

    ``names``, ``scores``
        Genes per group, best first, and their score (picking rate in the group minus the
        highest picking rate in any other group, or minus the rate in the rest).
    ``pvals``, ``pvals_adj``
        One-sided hypergeometric test of picks in the group against all cells; BH-adjusted.
    ``logfoldchanges``
        ``log2`` ratio of picking rates, group vs rest (not an expression fold change).
    ``pts``, ``pts_rest``
        Picking rate per gene in the group and in the rest (genes x groups).
    ``params``
        ``groupby``, ``reference="rest"``, ``method="attention"``, ``attention_layer``,
        ``n_top``, ``contrast``.

    Examples
    --------
    >>> model.predict(adata)  # writes adata.layers["cgran_attention"]
    >>> sa.tl.marker_genes_from_attention(adata, groupby="cell_type")
    >>> sc.pl.rank_genes_groups_dotplot(adata, key="cgran_markers", n_genes=5)
    """
    prefix = layer.removesuffix("_attention") if layer.endswith("_attention") else None
    if groupby is None:
        if prefix is None:
            raise ValueError(f"Pass `groupby=`: no default for a layer named {layer!r}.")
        groupby = f"{prefix}_prediction"
    if groupby not in adata.obs:
        raise KeyError(f"groupby {groupby!r} is not a column of adata.obs.")
    if layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} not found in adata.layers; run `model.predict(adata)` first or "
            "name the attribution layer with `layer=`."
        )
    if key_added is None:
        key_added = f"{prefix}_markers" if prefix else "attention_markers"
    groups = adata.obs[groupby]
    labelled = groups.notna().to_numpy()
    if not labelled.any():
        raise ValueError(f"adata.obs[{groupby!r}] has no non-missing value.")
    result = attention_markers(
        adata.layers[layer], groups.astype("category"), adata.var_names,
        n_top=n_top, n_genes=n_genes, groupby=groupby, layer=layer, contrast=contrast,
    )
    adata = adata.copy() if copy else adata
    adata.uns[key_added] = result
    return adata if copy else None
