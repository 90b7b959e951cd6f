"""Gene sets from gene-gene attention among attention-derived markers (CGRAN Figure 5a; any
model with ``get_gene_attention``, e.g. SCGPT, too)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from scattn._deprecate import renamed_arguments
from scattn._docs import scattn_dsp
from scattn._read import find_key, get_markers
from scattn._write import write_results

from ._fitted import check_fitted


def _check_model(model) -> None:
    """A clear error unless `model` can give gene-to-gene attention."""
    if model is None:
        raise TypeError(
            "gene_sets_from_attention needs the trained model that gives gene-to-gene "
            "attention (a CGRAN or SCGPT): call `sa.tl.gene_sets_from_attention(adata, model)`, got "
            "model=None."
        )
    if not callable(getattr(model, "get_gene_attention", None)):
        raise TypeError(
            f"{type(model).__name__} has no gene-to-gene attention (`get_gene_attention`), "
            "which gene sets are built from; pass a trained CGRAN or SCGPT model. For "
            f"{type(model).__name__}'s markers alone, use `adata.uns['<key>_markers']` or "
            "`sa.tl.marker_genes_from_attention`."
        )
    check_fitted(model, "gene_sets_from_attention")


@renamed_arguments(markers_key="key")
@scattn_dsp.dedent
def gene_sets_from_attention(
    adata: AnnData,
    model,
    *,
    key: str | None = None,
    n_genes: int = 5,
    n_sets: int | None = None,
    max_cells: int | None = 2000,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Group marker genes into gene sets by the attention they pay each other (CGRAN).

    Takes the top `n_genes` markers of every group from ``adata.uns[key]``, asks the
    model for the first block's gene-to-gene attention among them (averaged over cells, see
    :meth:`scattn.model.CGRAN.get_gene_attention`), symmetrises it, and clusters the genes
    hierarchically (average linkage on ``1 - scaled attention``) into `n_sets` sets. Genes
    with high attention to one another form a set (the paper's Figure 5a; e.g. CD3D and CD3E).

    Parameters
    ----------
    adata
        AnnData holding the markers (e.g. after ``model.predict(adata)``).
    model
        Trained model with ``get_gene_attention`` (CGRAN, SCGPT); another model (e.g. CFAN,
        SIMS) or `None` is a `TypeError`.
    key
        Key of the markers in ``adata.uns`` (``rank_genes_groups`` layout), as
        :func:`~scattn.pl.marker_dotplot`'s `key` (this was `markers_key` before; the old
        name warns for one release). Default: the markers a model's ``predict`` wrote,
        ``f"{model_key}_markers"`` for the ``key_added`` recorded in
        ``adata.uns[model_key]["params"]``; when several models' markers are there, those of
        `model`'s own class (e.g. CGRAN's beside a CFAN's). A `ValueError` says when there is
        none or several, then pass `key`.
    n_genes
        Markers taken per group.
    n_sets
        Number of gene sets; default the number of marker groups.
    max_cells
        Average the attention over at most this many cells (evenly spaced); `None`: all.
    key_added
        Key in ``adata.uns``; default `key` with ``_markers`` replaced by ``_gene_sets``
        (``"cgran_markers"`` -> ``"cgran_gene_sets"``).
    %(copy)s

    Returns
    -------
    `None`, or a copy with `copy=True`. Writes ``adata.uns[key_added]``:

    ``genes``
        The marker genes, in the clustering's leaf order.
    ``attention``
        DataFrame genes x genes: mean attention gene (row) pays gene (column), symmetrised.
    ``membership``
        DataFrame indexed by gene: ``marker_group`` (the group it is a marker of) and
        ``gene_set`` (its set).
    ``gene_sets``
        Dict ``set name -> array of genes``.
    ``params``
        ``markers_key`` (the markers' key used: `key`, or the one found), ``n_genes``, ``n_sets``,
        ``max_cells``, ``linkage``.
    """
    _check_model(model)
    if key is None:
        model_key = find_key(adata, needs=("markers",), model=type(model).__name__,
                             argument="key", template="{key}_markers")
        key = f"{model_key}_markers"
    names = get_markers(adata, key)["names"]
    if n_genes < 1:
        raise ValueError(f"n_genes must be >= 1, got {n_genes}.")
    model_genes = set(model.var_names_)
    genes, group_of = [], {}
    for group in names.dtype.names:
        taken = 0
        for g in names[group]:
            if taken == n_genes:
                break
            if g in model_genes and g not in group_of:
                genes.append(g)
                group_of[g] = group
                taken += 1
    if len(genes) < 2:
        raise ValueError("Fewer than two marker genes are used by the model; nothing to group.")
    n_sets = len(names.dtype.names) if n_sets is None else n_sets
    if not 1 <= n_sets <= len(genes):
        raise ValueError(f"n_sets must be between 1 and the number of genes ({len(genes)}).")
    indices = None
    if max_cells is not None and adata.n_obs > max_cells:
        indices = np.linspace(0, adata.n_obs - 1, max_cells).astype(int)
    att = model.get_gene_attention(adata=adata, indices=indices, genes=genes)
    sym = (att.to_numpy() + att.to_numpy().T) / 2
    off = sym[~np.eye(len(genes), dtype=bool)]
    lo, hi = off.min(), off.max()
    scaled = (sym - lo) / (hi - lo) if hi > lo else np.zeros_like(sym)
    dist = np.clip(1.0 - scaled, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    link = hierarchy.linkage(squareform(dist, checks=False), method="average")
    labels = hierarchy.fcluster(link, t=n_sets, criterion="maxclust")
    order = hierarchy.leaves_list(link)
    ordered = [genes[i] for i in order]
    set_of = pd.Series([f"set_{labels[i]}" for i in range(len(genes))], index=genes)
    result = {
        "genes": ordered,
        "attention": pd.DataFrame(sym, index=genes, columns=genes).loc[ordered, ordered],
        "membership": pd.DataFrame(
            {"marker_group": pd.Series(group_of).loc[ordered], "gene_set": set_of.loc[ordered]}
        ),
        "gene_sets": {
            s: np.asarray([g for g in ordered if set_of[g] == s], dtype=object)
            for s in pd.unique(set_of.loc[ordered])
        },
        "params": {
            "markers_key": key,
            "n_genes": n_genes,
            "n_sets": n_sets,
            "max_cells": max_cells,
            "linkage": "average",
        },
    }
    if key_added is None:
        key_added = key.replace("_markers", "") + "_gene_sets"
    adata = adata.copy() if copy else adata
    write_results(adata, [("uns", key_added, result)], by="sa.tl.gene_sets_from_attention")
    return adata if copy else None
