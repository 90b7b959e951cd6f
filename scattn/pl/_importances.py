"""SIMS feature importances: global bar chart and per-class heatmap (thesis Figures 0.11-0.14)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from scattn._docs import scattn_dsp
from scattn._read import find_key

from ._base import finish, new_axes


def _sims_key(adata: AnnData, key: str | None, *fields: str) -> str:
    """`key`, or the key of the one model result holding every one of `fields` (SIMS)."""
    if key is not None:
        return key
    return find_key(adata, needs=fields, model="SIMS", argument="key")


def _importances(adata: AnnData, key: str, field: str) -> pd.DataFrame:
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or field not in entry:
        raise KeyError(
            f"No {field} at adata.uns[{key!r}]; run `model.predict(adata, key_added={key!r})` "
            "with a SIMS model first."
        )
    return entry[field]


@scattn_dsp.dedent
def feature_importances(
    adata: AnnData,
    *,
    key: str | None = None,
    n_genes: int = 20,
    color: str = "#3a6ea5",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """The `n_genes` most important genes over all cells (SIMS thesis, Figures 0.11a, 0.12a).

    Bars are the explain matrix summed over the predicted cells, divided by the largest
    value: only the proportions between genes are meaningful.

    Parameters
    ----------
    adata
        AnnData a SIMS model predicted (``adata.uns[key]["feature_importances"]``).
    key
        The `key_added` of that prediction. Default: the key of the one model result in
        `adata` with these importances (from ``adata.uns[key]["params"]``); a `ValueError`
        says when there is none or several.
    n_genes
        Number of genes shown, most important on top.
    color
        Bar colour.
    %(show)s
    """
    if n_genes < 1:
        raise ValueError(f"n_genes must be >= 1, got {n_genes}.")
    key = _sims_key(adata, key, "feature_importances")
    imp = _importances(adata, key, "feature_importances")["importance"]
    top = imp.sort_values(ascending=False).iloc[:n_genes][::-1]
    fig, axis = new_axes(ax, (4.5, 0.25 * len(top) + 1.2))
    axis.barh(np.arange(len(top)), top.to_numpy(), color=color)
    axis.set_yticks(np.arange(len(top)), top.index, fontsize=9)
    axis.set_xlabel("importance (relative to the top gene)")
    axis.set_xlim(0, 1.02)
    axis.set_title("Global feature importance")
    axis.spines[["top", "right"]].set_visible(False)
    return finish(fig, axis, show=show, return_fig=return_fig, ax_given=ax is not None)


@scattn_dsp.dedent
def class_importances(
    adata: AnnData,
    *,
    key: str | None = None,
    n_genes: int = 50,
    cmap: str = "magma_r",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Per-class feature importance of the top genes (SIMS thesis, Figures 0.13-0.14).

    Rows are the predicted classes; each column (gene) is the class-averaged explain matrix
    divided by its largest value over classes, so 1 marks the class that uses the gene most.
    The columns are the `n_genes` genes of highest global importance (the thesis ranks the
    normalised columns by norm, which favours genes used faintly by every class), grouped by
    the class using them most.

    Parameters
    ----------
    adata
        AnnData a SIMS model predicted (``adata.uns[key]["class_importances"]``).
    key
        The `key_added` of that prediction. Default: the key of the one model result in
        `adata` with these importances (from ``adata.uns[key]["params"]``); a `ValueError`
        says when there is none or several.
    n_genes
        Number of genes (columns).
    cmap
        Colour map (sequential: 0 = unused).
    %(show)s
    """
    if n_genes < 1:
        raise ValueError(f"n_genes must be >= 1, got {n_genes}.")
    key = _sims_key(adata, key, "class_importances", "feature_importances")
    table = _importances(adata, key, "class_importances").T  # classes x genes
    ranked = _importances(adata, key, "feature_importances")["importance"].sort_values(ascending=False)
    cols = [g for g in ranked.index[:n_genes] if g in table.columns]
    sub = table[cols]
    # group the columns by the class that uses them most, classes in row order
    owner = sub.to_numpy().argmax(0)
    sub = sub.iloc[:, np.lexsort((-sub.to_numpy().max(0), owner))]
    n_rows, n_cols = sub.shape
    fig, axis = new_axes(ax, (max(4.0, 0.2 * n_cols + 2.5), max(2.0, 0.32 * n_rows + 1.5)))
    im = axis.imshow(sub.to_numpy(), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    axis.grid(False)  # a heatmap under scanpy's style (axes.grid on) gets no grid lines
    axis.set_xticks(np.arange(n_cols), sub.columns, rotation=90, fontsize=7)
    axis.set_yticks(np.arange(n_rows), sub.index, fontsize=9)
    axis.set_title("Feature importance per class (each gene / its max)")
    fig.colorbar(im, ax=axis, fraction=0.03, pad=0.01, label="relative importance")
    return finish(fig, axis, show=show, return_fig=return_fig, ax_given=ax is not None)
