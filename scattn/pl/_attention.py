"""Plots of attention: marker dotplot, gene-gene attention heatmap, per-class attention."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from scipy import sparse

from scattn._deprecate import renamed_arguments
from scattn._docs import scattn_dsp
from scattn._read import find_key, get_markers, model_results

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


def _as_matrix(x):
    """`x`, or a scipy sparse *array* as the sparse matrix sharing its values (no copy)."""
    if not sparse.issparse(x) or sparse.isspmatrix(x):
        return x
    return sparse.csc_matrix(x) if x.format == "csc" else sparse.csr_matrix(x)


def _scanpy_readable(adata: AnnData, key: str, layer: str | None) -> AnnData:
    """`adata`, or where its expression is a scipy sparse array (``csr_array``, which
    ``anndata.settings.use_sparse_array_on_read`` gives and scanpy 1.11's ``sc.get.obs_df``
    does not densify), an AnnData of its cells, genes and markers sharing the values as
    sparse matrices. Nothing is written to `adata`."""
    raw = adata.raw
    matrices = [adata.X, adata.layers[layer] if layer in adata.layers else None,
                None if raw is None else raw.X]
    if not any(sparse.issparse(x) and not sparse.isspmatrix(x) for x in matrices):
        return adata
    # uns shallow-copied: the user's colours and dendrograms reach scanpy, nothing is written back
    return AnnData(
        X=_as_matrix(adata.X), obs=adata.obs, var=adata.var, uns=dict(adata.uns),
        layers={layer: _as_matrix(adata.layers[layer])} if layer in adata.layers else None,
        raw=None if raw is None else {"X": _as_matrix(raw.X), "var": raw.var},
    )


def _model_slots(adata: AnnData, *, groupby: str | None, layer: str | None,
                 key: str | None) -> tuple[str, str, str]:
    """Fill in the prediction column, attention layer and markers (`key`) one model wrote."""
    given = {"prediction": groupby, "attention": layer, "markers": key}
    if all(v is not None for v in given.values()):
        return groupby, layer, key
    # a given layer or markers name the model ("<key>_attention", "<key>_markers"); a given
    # groupby only when it is a model's predictions (it may be any column of obs)
    prefixes = [
        v.removesuffix(f"_{slot}") for slot, v in (("attention", layer), ("markers", key))
        if v is not None and v.endswith(f"_{slot}") and len(v) > len(slot) + 1
    ]
    if groupby is not None and groupby.endswith("_prediction"):
        if (prefix := groupby.removesuffix("_prediction")) in model_results(adata):
            prefixes.append(prefix)
    model_key = prefixes[0] if prefixes else None
    if model_key is None:
        needs = [slot for slot, v in given.items() if v is None]
        first = next(s for s in ("attention", "markers", "prediction") if s in needs)
        argument = {"prediction": "groupby", "attention": "layer", "markers": "key"}[first]
        model_key = find_key(adata, needs=needs, argument=argument, template=f"{{key}}_{first}")
    return (
        f"{model_key}_prediction" if groupby is None else groupby,
        f"{model_key}_attention" if layer is None else layer,
        f"{model_key}_markers" if key is None else key,
    )


@scattn_dsp.dedent
def marker_dotplot(
    adata: AnnData,
    *,
    key: str | None = None,
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
        Key of the markers in ``adata.uns``. Default: the markers of the one model that
        predicted into `adata` (``f"{model_key}_markers"`` for the ``key_added`` recorded in
        ``adata.uns[model_key]["params"]``); a `ValueError` says when there is none or
        several, then pass `key`.
    n_genes
        Genes per group.
    %(show)s
    **kwargs
        Passed to :func:`scanpy.pl.rank_genes_groups_dotplot`.
    """
    import scanpy as sc

    if key is None:
        model_key = find_key(adata, needs=("markers",), argument="key", template="{key}_markers")
        key = f"{model_key}_markers"
    get_markers(adata, key)
    kwargs.setdefault("cmap", "Reds")
    dp = sc.pl.rank_genes_groups_dotplot(
        _scanpy_readable(adata, key, kwargs.get("layer")), key=key, n_genes=n_genes, ax=ax,
        show=False, return_fig=True, **kwargs
    )
    dp.make_figure()
    fig = dp.fig
    main = dp.get_axes()["mainplot_ax"]
    return finish(fig, main, show=show, return_fig=return_fig, ax_given=ax is not None)


@scattn_dsp.dedent
def gene_attention_heatmap(
    adata: AnnData,
    *,
    key: str | None = None,
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
        Key written by :func:`~scattn.tl.gene_sets_from_attention`. Default: the gene sets of
        the one model result that has them (``f"{model_key}_gene_sets"`` for the
        ``key_added`` recorded in ``adata.uns[model_key]["params"]``); a `ValueError` says
        when there is none or several, then pass `key`.
    cmap
        Colour map (sequential: attention is non-negative).
    %(show)s
    """
    if key is None:
        model_key = find_key(adata, needs=("gene_sets",), argument="key", template="{key}_gene_sets")
        key = f"{model_key}_gene_sets"
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


@renamed_arguments(markers_key="key")
@scattn_dsp.dedent
def attention_heatmap(
    adata: AnnData,
    *,
    groupby: str | None = None,
    layer: str | None = None,
    key: str | None = None,
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

    `groupby`, `layer` and `key` left `None` are those one model wrote:
    ``f"{model_key}_prediction"``, ``f"{model_key}_attention"`` and ``f"{model_key}_markers"``,
    with `model_key` the prefix of the given `layer` (``"<model_key>_attention"``), else of
    `key` (``"<model_key>_markers"``), else of `groupby` when it is a model's
    ``"<model_key>_prediction"``, else the ``key_added`` of the one model that predicted into
    `adata` (from ``adata.uns[model_key]["params"]``; a `ValueError` says when there is none
    or several).

    Parameters
    ----------
    adata
        AnnData with the attention layer and markers (after ``model.predict``).
    groupby
        Column of ``adata.obs`` with the classes (rows). Default: see above.
    layer
        Attention layer. Default: see above.
    key
        Key of the markers in ``adata.uns`` choosing the columns, as in
        :func:`~scattn.pl.marker_dotplot` and scanpy's ``rank_genes_groups_heatmap(key=)`` (this was
        `markers_key` before; the old name warns for one release). Default: see above.
    n_genes
        Markers per class.
    standard_scale
        Scale each gene (column) to [0, 1] so genes with different ranges compare.
    cmap
        Colour map.
    %(show)s
    """
    groupby, layer, key = _model_slots(adata, groupby=groupby, layer=layer, key=key)
    if layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found; run `model.predict(adata)` first.")
    if groupby not in adata.obs:
        raise KeyError(f"groupby {groupby!r} is not a column of adata.obs.")
    genes, spans, marker_groups = _top_genes(get_markers(adata, key), n_genes)
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
