"""CFAN's feature attention by class (paper, Figure 3)."""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from scvi.model.base import BaseModelClass

from scattn._deprecate import warn_deprecated
from scattn._docs import scattn_dsp

from ._base import finish, new_axes


def _model_first_deprecated(plot):
    """Accept the order before every plot took `adata` first, ``(model, adata=None, ...)``,
    with a warning: told apart by type, a scvi-tools model first (and an AnnData, `None` or
    nothing after it)."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        if args and isinstance(args[0], BaseModelClass) and "model" not in kwargs:
            model, rest = args[0], args[1:]
            if rest and not isinstance(rest[0], AnnData | None):
                raise TypeError(f"Expected an AnnData after the model, got {type(rest[0]).__name__}.")
            if rest and "adata" in kwargs:
                raise TypeError("feature_attention() got adata twice.")
            adata = rest[0] if rest else kwargs.pop("adata", None)
            warn_deprecated(
                "sa.pl.feature_attention(model, adata) is deprecated and will be removed in the "
                "next release; call sa.pl.feature_attention(adata, model), adata first as every "
                "plot (adata=None: the model's AnnData)."
            )
            return plot(adata, model, *rest[1:], **kwargs)
        return plot(*args, **kwargs)

    return wrapper


@_model_first_deprecated
@scattn_dsp.dedent
def feature_attention(
    adata: AnnData | None,
    model=None,
    *,
    groupby: str | None = None,
    n_cells: int = 3,
    what: Literal["attention", "features"] = "attention",
    seed: int = 0,
    cmap: str = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """A CFAN's per-cell feature attention (or renewed features), a few cells per class.

    A mosaic as in the CFAN paper's Figure 3: one row of tiles per class, `n_cells` random
    cells of that class side by side, then the class mean. Each tile is the u x u attention
    among a cell's features (row i: how feature i attends to the others) or, with
    ``what="features"``, its u x m renewed features. Cells of one class sharing a pattern that
    differs between classes is what the paper reads from it.

    Parameters
    ----------
    adata
        Cells to show (aligned by gene name); `None`: the model's AnnData.
    model
        A trained :class:`~scattn.model.CFAN`.
    groupby
        Column of ``adata.obs`` with the classes. `None`: the model's labels column. Cells
        with the model's unlabelled category are left out.
    n_cells
        Random cells per class (fewer if the class is smaller).
    what
        ``"attention"`` (u x u) or ``"features"`` (u x m renewed features).
    seed
        Seed of the cell sampling.
    cmap
        Colour map.
    %(show)s
    """
    if model is None:
        raise TypeError(
            "sa.pl.feature_attention needs the trained CFAN: call "
            "`sa.pl.feature_attention(adata, model)` (adata=None: the model's AnnData)."
        )
    if not isinstance(adata, AnnData | None):
        raise TypeError(f"Expected an AnnData or None, got {type(adata).__name__}.")
    if not hasattr(model, "get_feature_attention"):
        raise TypeError(f"{type(model).__name__} has no feature attention; use a CFAN.")
    if what not in ("attention", "features"):
        raise ValueError(f"what must be 'attention' or 'features', got {what!r}.")
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}.")
    data = model.adata if adata is None else adata
    groupby = groupby or model._setup_args["labels_key"]
    if groupby not in data.obs:
        raise KeyError(f"groupby {groupby!r} is not a column of adata.obs.")
    groups = data.obs[groupby].astype("category")
    unlabeled = model._setup_args.get("unlabeled_category")
    if unlabeled in groups.cat.categories:  # unlabelled cells are no class
        groups = groups.cat.remove_categories([unlabeled])
    rng = np.random.default_rng(seed)
    classes = [c for c in groups.cat.categories if (groups == c).any()]
    members = {c: np.flatnonzero((groups == c).to_numpy()) for c in classes}
    picks = {c: np.sort(rng.choice(m, min(n_cells, len(m)), replace=False)) for c, m in members.items()}
    everyone = np.unique(np.concatenate([members[c] for c in classes]))
    att, feats = model.get_feature_attention(adata, indices=everyone, return_features=True)
    tiles_all = att if what == "attention" else feats
    where = {cell: i for i, cell in enumerate(everyone)}
    h, w = tiles_all.shape[1:]
    gap = 1
    n_cols = n_cells + 1
    mosaic = np.full((len(classes) * (h + gap) - gap, n_cols * (w + gap) - gap), np.nan)
    for r, c in enumerate(classes):
        tiles = [tiles_all[where[i]] for i in picks[c]]
        tiles += [np.full((h, w), np.nan)] * (n_cells - len(tiles))
        tiles.append(tiles_all[[where[i] for i in members[c]]].mean(0))
        for k, tile in enumerate(tiles):
            mosaic[r * (h + gap): r * (h + gap) + h, k * (w + gap): k * (w + gap) + w] = tile
    fig, ax_ = new_axes(ax, (0.85 * n_cols * w / h + 4.5, 0.85 * len(classes) + 1.4))
    im = ax_.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, interpolation="nearest", aspect="equal")
    ax_.grid(False)  # a heatmap under scanpy's style (axes.grid on) gets no grid lines
    ax_.set_yticks([r * (h + gap) + (h - 1) / 2 for r in range(len(classes))], classes, fontsize=9)
    labels = [f"cell {k + 1}" for k in range(n_cells)] + ["class mean"]
    ax_.set_xticks([k * (w + gap) + (w - 1) / 2 for k in range(n_cols)], labels, fontsize=8)
    ax_.xaxis.tick_top()
    ax_.set_ylabel(groupby)
    ax_.set_title("Feature attention (u x u)" if what == "attention" else "Renewed features (u x m)", pad=20)
    for side in ax_.spines.values():
        side.set_visible(False)
    fig.colorbar(im, ax=ax_, fraction=0.05, pad=0.03, label="attention weight" if what == "attention" else "feature value")
    if ax is None:
        fig.tight_layout()
    return finish(fig, ax_, show=show, return_fig=return_fig, ax_given=ax is not None)
