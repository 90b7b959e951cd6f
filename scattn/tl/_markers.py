"""Marker genes from attention: the CGRAN paper's "picked by most cells of one type" rule."""

from __future__ import annotations

from typing import Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from scattn._attribution import attention_markers
from scattn._docs import scattn_dsp
from scattn._read import find_key
from scattn._write import write_results

__all__ = ["attention_markers", "marker_genes_from_attention"]


@scattn_dsp.dedent
def marker_genes_from_attention(
    adata: AnnData,
    *,
    groupby: str | None = None,
    layer: str | None = None,
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
    Works on any model's attribution layer (``cgran_attention``, ``cfan_attention``,
    ``sims_attention``, ...) or any cells x genes layer of weights.

    Parameters
    ----------
    adata
        AnnData with the attention layer, e.g. written by ``model.predict()``.
    groupby
        Column of ``adata.obs`` with the groups (cell types or predictions). Default: the
        predictions written with the layer, ``"<prefix>_prediction"`` for a layer named
        ``"<prefix>_attention"``.
    layer
        Layer with the cells x genes attention. Default: the attention layer of the one
        model that predicted into `adata` (``f"{key}_attention"`` for the model's
        ``key_added``, found from ``adata.uns[key]["params"]``; with `groupby` `None`, one
        that also wrote ``obs[f"{key}_prediction"]``). A `ValueError` says when no model
        or several did: then pass `layer`.
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
        ``groupby``, ``reference="rest"``, ``method="attention"``, ``attention_layer`` (the
        layer used, also when found), ``n_top``, ``contrast``.

    Examples
    --------
    >>> model = sa.model.CFAN(adata)
    >>> model.train()
    >>> model.predict(adata)  # writes adata.layers["cfan_attention"], obs["cfan_prediction"]
    >>> sa.tl.marker_genes_from_attention(adata)  # per predicted class, into uns["cfan_markers"]
    >>> sa.tl.marker_genes_from_attention(adata, groupby="cell_type", key_added="by_type")
    >>> sc.pl.rank_genes_groups_dotplot(adata, key="by_type", n_genes=5)

    With several models' results in `adata`, name the layer:

    >>> sa.tl.marker_genes_from_attention(adata, layer="cgran_attention")
    """
    if layer is None:
        needs = ("attention",) if groupby is not None else ("attention", "prediction")
        key = find_key(adata, needs=needs, argument="layer", template="{key}_attention")
        layer = f"{key}_attention"
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
    weights = adata.layers[layer]
    values = weights.data if sparse.issparse(weights) else np.asarray(weights)
    if values.size and not (values > 0).any():
        raise ValueError(
            f"adata.layers[{layer!r}] has no positive weight; markers rank genes by positive "
            "attribution. Is it an attention layer written by a scattn model?"
        )
    result = attention_markers(
        weights, groups.astype("category"), adata.var_names,
        n_top=n_top, n_genes=n_genes, groupby=groupby, layer=layer, contrast=contrast,
    )
    adata = adata.copy() if copy else adata
    write_results(adata, [("uns", key_added, result)], by="sa.tl.marker_genes_from_attention")
    return adata if copy else None
