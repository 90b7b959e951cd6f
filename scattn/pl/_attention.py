"""Plots of attention: marker dotplot, gene-gene attention heatmap, per-class attention."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from scipy import sparse

from scattn._docs import scattn_dsp
from scattn.tl._markers import get_markers

from ._base import finish, new_axes


def _top_genes(markers: dict, n_genes: int) -> tuple[list[str], list[tuple[int, int]], list[str]]:
    """Unique top genes per group, with the (start, end) span of each group's genes."""
    names = markers["names"]
    genes, spans, groups = [], [], []
    for group in names.dtype.names:
        start = len(genes)
        for g in names[group][:n_genes]:
            if g not in genes:
                genes.append(g)
        if len(genes) > start:
            spans.append((start, len(genes) - 1))
            groups.append(group)
    return genes, spans, groups


@scattn_dsp.dedent
def marker_dotplot(
    adata: AnnData,
    *,
    key: str = "cgran_markers",
    n_genes: int = 5,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """Dotplot of attention-derived markers: expression of each group's top genes.

    The paper's Figure 4a: dot size is the fraction of cells of the group expressing the gene,
    colour the mean expression. A thin wrapper of :func:`scanpy.pl.rank_genes_groups_dotplot`
    reading ``adata.uns[key]``; expression comes from ``adata.X`` (use log-normalised data
    for readable colours).

    Parameters
    ----------
    adata
        AnnData with markers from ``model.predict`` or
        :func:`~scattn.tl.marker_genes_from_attention`.
    key
        Key of the markers in ``adata.uns``.
    n_genes
        Genes per group.
    %(show)s
    **kwargs
        Passed to :func:`scanpy.pl.rank_genes_groups_dotplot`.
    """
    import scanpy as sc

    get_markers(adata, key)
    kwargs.setdefault("cmap", "Reds")
    dp = sc.pl.rank_genes_groups_dotplot(
        adata, key=key, n_genes=n_genes, ax=ax, show=False, return_fig=True, **kwargs
    )
    dp.make_figure()
    fig = dp.fig
    main = dp.get_axes()["mainplot_ax"]
    return finish(fig, main, show=show, return_fig=return_fig, ax_given=ax is not None)


@scattn_dsp.dedent
def gene_attention_heatmap(
    adata: AnnData,
    *,
    key: str = "cgran_gene_sets",
    cmap: str = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Heatmap of the attention among marker genes, ordered and outlined by gene set.

    The paper's Figure 5a. Reads :func:`~scattn.tl.gene_sets_from_attention`'s result; gene
    labels are coloured by nothing but read as ``gene (group)``, and each gene set is outlined.

    Parameters
    ----------
    adata
        AnnData with ``adata.uns[key]``.
    key
        Key written by :func:`~scattn.tl.gene_sets_from_attention`.
    cmap
        Colour map (sequential: attention is non-negative).
    %(show)s
    """
    if key not in adata.uns or "attention" not in adata.uns[key]:
        raise KeyError(f"No gene sets at adata.uns[{key!r}]; run `sa.tl.gene_sets_from_attention`.")
    res = adata.uns[key]
    att = res["attention"]
    genes = list(att.index)
    membership = res["membership"].loc[genes]
    n = len(genes)
    size = max(4.0, 0.28 * n + 2)
    fig, ax_ = new_axes(ax, (size + 1.2, size))
    # a gene's attention to itself dwarfs the rest: mask the diagonal so sets stand out
    shown = np.ma.masked_array(att.to_numpy(), mask=np.eye(n, dtype=bool))
    cm = plt.get_cmap(cmap).copy()
    cm = cm.with_extremes(bad="lightgrey")
    im = ax_.imshow(shown, cmap=cm, interpolation="nearest")
    ax_.grid(False)  # a heatmap under scanpy's style (axes.grid on) gets no grid lines
    labels = [f"{g} ({grp})" for g, grp in zip(genes, membership["marker_group"], strict=True)]
    ax_.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax_.set_yticks(range(n), labels, fontsize=8)
    sets = membership["gene_set"].to_numpy()
    start = 0
    for i in range(1, n + 1):
        if i == n or sets[i] != sets[start]:
            ax_.add_patch(
                Rectangle((start - 0.5, start - 0.5), i - start, i - start, fill=False, ec="white", lw=1.5)
            )
            start = i
    fig.colorbar(im, ax=ax_, shrink=0.7, label="attention, symmetrised (diagonal masked)")
    ax_.set_title("Gene-gene attention among markers")
    if ax is None:
        fig.tight_layout()
    return finish(fig, ax_, show=show, return_fig=return_fig, ax_given=ax is not None)


@scattn_dsp.dedent
def attention_heatmap(
    adata: AnnData,
    *,
    groupby: str = "cgran_prediction",
    layer: str = "cgran_attention",
    markers_key: str = "cgran_markers",
    n_genes: int = 5,
    standard_scale: bool = True,
    cmap: str = "Reds",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Mean attention of each class's cells to each class's top marker genes.

    Rows are classes, columns each class's top `n_genes` attention markers (grouped by the
    class they mark). A diagonal block structure means each class attends to its own markers.

    Parameters
    ----------
    adata
        AnnData with the attention layer and markers (after ``model.predict``).
    groupby
        Column of ``adata.obs`` with the classes (rows).
    layer
        Attention layer.
    markers_key
        Markers in ``adata.uns`` choosing the columns.
    n_genes
        Markers per class.
    standard_scale
        Scale each gene (column) to [0, 1] so genes with different ranges compare.
    cmap
        Colour map.
    %(show)s
    """
    if layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found; run `model.predict(adata)` first.")
    if groupby not in adata.obs:
        raise KeyError(f"groupby {groupby!r} is not a column of adata.obs.")
    genes, spans, marker_groups = _top_genes(get_markers(adata, markers_key), n_genes)
    cols = adata.var_names.get_indexer(genes)
    mat = adata.layers[layer]
    mat = mat[:, cols].toarray() if sparse.issparse(mat) else np.asarray(mat)[:, cols]
    groups = adata.obs[groupby].astype("category")
    classes = [c for c in groups.cat.categories if (groups == c).any()]
    means = pd.DataFrame(
        np.vstack([mat[(groups == c).to_numpy()].mean(0) for c in classes]), index=classes, columns=genes
    )
    shown = means
    if standard_scale:
        rng = means.max(0) - means.min(0)
        shown = (means - means.min(0)) / rng.where(rng > 0, 1)
    fig, ax_ = new_axes(ax, (max(6.0, 0.3 * len(genes) + 2.5), max(3.0, 0.35 * len(classes) + 1.5)))
    im = ax_.imshow(shown.to_numpy(), aspect="auto", cmap=cmap, interpolation="nearest")
    ax_.grid(False)  # a heatmap under scanpy's style (axes.grid on) gets no grid lines
    ax_.set_xticks(range(len(genes)), genes, rotation=90, fontsize=8)
    ax_.set_yticks(range(len(classes)), classes, fontsize=9)
    for (s, e), grp in zip(spans, marker_groups, strict=True):
        ax_.axvline(e + 0.5, color="white", lw=1)
        ax_.text((s + e) / 2, -0.7, grp, ha="center", va="bottom", fontsize=7, rotation=30)
    ax_.set_ylabel(groupby)
    fig.colorbar(im, ax=ax_, label="mean attention" + (" (scaled per gene)" if standard_scale else ""))
    if ax is None:
        fig.tight_layout()
    return finish(fig, ax_, show=show, return_fig=return_fig, ax_given=ax is not None)
