"""Confusion matrix heatmap of :func:`scattn.tl.evaluate`'s results."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from scattn._docs import scattn_dsp

from ._base import finish, new_axes

_NORMALIZE = ("true", "pred", None)


def get_evaluation(adata: AnnData, key: str) -> dict:
    """The evaluation at ``adata.uns[key]``, or a clear error."""
    result = adata.uns.get(key)
    if not isinstance(result, dict) or "confusion_matrix" not in result:
        raise KeyError(
            f"No evaluation at adata.uns[{key!r}]; run "
            f"`sa.tl.evaluate(adata, labels_key, prediction_key, key_added={key!r})` first."
        )
    return result


@scattn_dsp.dedent
def confusion_matrix(
    adata: AnnData,
    *,
    key: str = "evaluation",
    normalize: Literal["true", "pred", None] = "true",
    cmap: str = "Blues",
    annotate: bool | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Heatmap of the confusion matrix written by :func:`scattn.tl.evaluate`.

    Rows are the true classes, columns the predicted labels: the true classes, then any other
    predicted label (``"Unknown"``, ...) to the right of a dashed line. The title gives the
    accuracy and macro F1.

    Parameters
    ----------
    adata
        AnnData evaluated by :func:`scattn.tl.evaluate`.
    key
        The ``key_added`` of the evaluation in ``adata.uns``.
    normalize
        ``"true"``: each row divided by its true class's cells (the diagonal is the recall);
        ``"pred"``: each column divided by the cells predicted as it (the diagonal is the
        precision); `None`: cell counts.
    cmap
        Matplotlib colour map.
    annotate
        Write the value in each cell. `None`: when the matrix has at most 15 columns.
    %(show)s
    """
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}.")
    result = get_evaluation(adata, key)
    cm = pd.DataFrame(result["confusion_matrix"])
    counts = cm.to_numpy(dtype=float)
    if normalize == "true":
        den = counts.sum(1, keepdims=True)
    elif normalize == "pred":
        den = counts.sum(0, keepdims=True)
    else:
        den = None
    values = counts if den is None else np.divide(counts, den, out=np.zeros_like(counts),
                                                  where=den > 0)
    n_rows, n_cols = values.shape
    if annotate is None:
        annotate = n_cols <= 15

    size = (min(0.5 * n_cols + 3.0, 18.0), min(0.45 * n_rows + 2.2, 16.0))
    fig, ax_ = new_axes(ax, size)
    vmax = 1.0 if normalize else max(values.max(), 1.0)
    ax_.grid(False)  # a heatmap under scanpy's style (axes.grid on) gets no grid lines
    im = ax_.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto",
                    interpolation="nearest")
    rows = [str(c) for c in cm.index]
    cols = [str(c) for c in cm.columns]
    ax_.set_xticks(np.arange(n_cols), labels=cols, rotation=45, ha="right",
                   rotation_mode="anchor")
    ax_.set_yticks(np.arange(n_rows), labels=rows)
    ax_.set_xlabel("predicted")
    ax_.set_ylabel("true")
    ax_.tick_params(length=0)
    for side in ax_.spines.values():
        side.set_visible(False)
    if n_cols > n_rows:  # predicted labels outside the true classes
        ax_.axvline(n_rows - 0.5, color="0.3", lw=1, ls="--")

    if annotate:
        fontsize = 9 if n_cols <= 10 else 7
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                text = f"{int(round(v))}" if normalize is None else (f"{v:.2f}" if v else "0")
                colour = "white" if v > 0.55 * vmax else "0.15"
                ax_.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)

    label = {"true": "fraction of true class", "pred": "fraction of predicted", None: "cells"}
    cbar = fig.colorbar(im, ax=ax_, fraction=0.046, pad=0.03)
    cbar.set_label(label[normalize])
    cbar.outline.set_visible(False)

    metrics = result.get("metrics", {})
    if "accuracy" in metrics and "macro_f1" in metrics:
        ax_.set_title(f"accuracy {float(metrics['accuracy']):.3f}   "
                      f"macro F1 {float(metrics['macro_f1']):.3f}")
    if ax is None:
        fig.tight_layout()
    return finish(fig, ax_, show=show, return_fig=return_fig, ax_given=ax is not None)
