"""Plots of the Geneformer analyses: attention shift per head and rank (seed paper, Figure 4),
per-head contribution norms (Figure 6) and in-silico perturbation shifts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from scattn._docs import scattn_dsp

from ._base import finish, new_axes

__all__ = ["attention_norms", "attention_shift", "perturbation_shift"]


def _attention_shift_result(adata: AnnData, key: str, field: str) -> dict:
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or field not in entry:
        raise KeyError(
            f"No attention shift ({field!r}) at adata.uns[{key!r}]; run "
            f"`sa.tl.attention_shift(adata, pretrained, finetuned, key_added={key!r})` first."
        )
    return entry


def _short_head(label: str) -> str:
    """``"layer 2 head 3"`` -> ``"L2 H3"`` (other labels unchanged)."""
    parts = str(label).split()
    if len(parts) == 4 and parts[0] == "layer" and parts[2] == "head":
        return f"L{parts[1]} H{parts[3]}"
    return str(label)


def _layer_of(labels: Sequence[str]) -> list[str]:
    return [str(lab).split()[1] if str(lab).startswith("layer ") else "" for lab in labels]


def _layer_boundaries(labels: Sequence[str]) -> list[int]:
    """Positions ``i`` where row ``i`` starts a new layer (i > 0)."""
    layers = _layer_of(labels)
    return [i for i in range(1, len(layers)) if layers[i] != layers[i - 1]]


@scattn_dsp.dedent
def attention_shift(
    adata: AnnData,
    *,
    key: str = "attention_shift",
    vmax: float | None = None,
    cmap: str = "RdBu_r",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Heatmap of the percentage change of attention after fine-tuning, per head and rank
    (seed paper, Figure 4).

    Rows are the heads (``L<layer> H<head>``, layers separated by white lines), columns the
    rank positions (1: the cell's most expressed gene) or rank bins; colour is
    ``100 * (fine-tuned - pretrained) / pretrained`` of the attention the gene token at that
    rank receives, red where fine-tuning raised it. Grey: no cell has a gene at that rank.

    Parameters
    ----------
    adata
        AnnData with the result of :func:`scattn.tl.attention_shift`.
    key
        Its ``key_added``.
    vmax
        Colour limit in percent (the scale runs from ``-vmax`` to ``vmax``). `None`: the 99th
        percentile of the absolute changes.
    cmap
        Diverging colour map, centred at 0.
    %(show)s
    """
    entry = _attention_shift_result(adata, key, "percent_change")
    table = pd.DataFrame(entry["percent_change"])
    values = table.to_numpy(dtype=float)
    finite = np.abs(values[np.isfinite(values)])
    if vmax is None:
        vmax = float(np.percentile(finite, 99)) if finite.size else 0.0
        vmax = vmax if vmax > 0 else 1.0  # no change at all: any scale
    elif not np.isfinite(vmax) or vmax <= 0:
        raise ValueError(f"vmax must be a positive number of percent, got {vmax}.")
    n_rows, n_cols = values.shape
    fig, axis = new_axes(ax, (min(max(5.0, 0.22 * n_cols + 3.0), 14.0), max(2.5, 0.32 * n_rows + 1.6)))
    colours = plt.get_cmap(cmap).with_extremes(bad="0.85")
    im = axis.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=colours, vmin=-vmax,
                     vmax=vmax, interpolation="nearest")
    axis.grid(False)  # a heatmap under scanpy's style (axes.grid on) gets no grid lines
    for row in _layer_boundaries(table.index):
        axis.axhline(row - 0.5, color="white", lw=2)
    axis.set_yticks(np.arange(n_rows), [_short_head(r) for r in table.index], fontsize=9)
    labels = [str(c) for c in table.columns]
    binned = any("-" in lab for lab in labels)
    if n_cols <= 32:
        ticks = np.arange(n_cols)
    else:
        ticks = np.asarray([int(t) for t in MaxNLocator(nbins=12, integer=True).tick_values(0, n_cols - 1)
                            if 0 <= t < n_cols])
    axis.set_xticks(ticks, [labels[t] for t in ticks], fontsize=8,
                    rotation=90 if binned and len(ticks) > 6 else 0)
    axis.set_xlabel("rank bin" if binned else "rank position", fontsize=10)
    axis.set_ylabel("head")
    axis.tick_params(length=0)
    for side in axis.spines.values():
        side.set_visible(False)
    axis.set_title("Attention received: fine-tuned vs pretrained\n(rank 1 = most expressed gene)",
                   fontsize=10)
    beyond = finite.size and finite.max() > vmax
    cbar = fig.colorbar(im, ax=axis, fraction=0.04, pad=0.02, extend="both" if beyond else "neither")
    cbar.set_label("% change in attention received")
    cbar.outline.set_visible(False)
    if ax is None:
        fig.tight_layout()
    return finish(fig, axis, show=show, return_fig=return_fig, ax_given=ax is not None)


def _annotate_bars(axis: Axes, x: np.ndarray, heights: np.ndarray, texts: list[str], top: float) -> None:
    """Write `texts` above bars, vertically when the bars are too narrow for them, and raise
    the y limit so that they fit inside the axes."""
    fontsize = 7
    bbox = axis.get_window_extent()
    dpi = axis.figure.dpi
    width_in, height_in = bbox.width / dpi, bbox.height / dpi
    longest = max((len(t) for t in texts), default=0) * 0.6 * fontsize / 72  # inches
    vertical = longest > 0.9 * width_in / max(len(x), 1)
    need = (longest if vertical else 1.3 * fontsize / 72) + 0.05  # text extent above a bar
    share = min(1.3 * need / max(height_in, 1e-6), 0.6)  # room for a later tight_layout
    axis.set_ylim(0, top * 1.02 / (1 - share))
    for xi, hi, text in zip(x, heights, texts, strict=True):
        if text:
            axis.annotate(text, (xi, hi), xytext=(0, 2), textcoords="offset points", ha="center",
                          va="bottom", fontsize=fontsize, rotation=90 if vertical else 0)


@scattn_dsp.dedent
def attention_norms(
    adata: AnnData,
    *,
    key: str = "attention_shift",
    colors: tuple[str, str] = ("#a0a0a0", "#3a6ea5"),
    annotate: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Per-head contribution norm ``||sum_j a_ij f_h(x_j)||`` of the pretrained and the
    fine-tuned model (seed paper, Figure 6; Kobayashi et al. 2020).

    One pair of bars per head (pretrained, fine-tuned), layers separated by dotted lines; with
    `annotate`, the percentage change is written above each pair.

    Parameters
    ----------
    adata
        AnnData with the result of :func:`scattn.tl.attention_shift`.
    key
        Its ``key_added``.
    colors
        Bar colours of the pretrained and the fine-tuned model.
    annotate
        Write the percentage change above each head's bars.
    %(show)s
    """
    entry = _attention_shift_result(adata, key, "norms")
    norms = pd.DataFrame(entry["norms"])
    missing = [c for c in ("pretrained", "finetuned") if c not in norms]
    if missing:
        raise KeyError(f"adata.uns[{key!r}]['norms'] lacks {missing}; rerun `sa.tl.attention_shift`.")
    if len(colors) != 2:
        raise ValueError(f"colors must be two colours (pretrained, fine-tuned), got {colors!r}.")
    n = len(norms)
    x = np.arange(n)
    width = 0.38
    fig, axis = new_axes(ax, (min(max(4.0, 0.55 * n + 1.8), 16.0), 3.6))
    pt = norms["pretrained"].to_numpy(dtype=float)
    ft = norms["finetuned"].to_numpy(dtype=float)
    axis.bar(x - width / 2, pt, width, color=colors[0], label="pretrained")
    axis.bar(x + width / 2, ft, width, color=colors[1], label="fine-tuned")
    top = float(np.nanmax(np.r_[pt, ft, 0.0]))
    axis.set_ylim(0, top * 1.05 if top > 0 else 1.0)
    if annotate and top > 0:
        change = (norms["percent_change"].to_numpy(dtype=float) if "percent_change" in norms
                  else 100.0 * (ft - pt) / pt)
        texts = ["" if not np.isfinite(c) else f"{c:+.0f}%" if abs(c) >= 100 else f"{c:+.1f}%"
                 for c in change]
        _annotate_bars(axis, x, np.fmax(pt, ft), texts, top)
    for row in _layer_boundaries(norms.index):
        axis.axvline(row - 0.5, color="0.6", lw=0.8, ls=":")
    axis.set_xticks(x, [_short_head(r) for r in norms.index], fontsize=8,
                    rotation=45 if n > 8 else 0, ha="right" if n > 8 else "center")
    axis.set_xlim(-0.6, n - 0.4)
    axis.set_ylabel(r"mean $\|\Sigma_j\, a_{ij}\, f(x_j)\|$")
    axis.set_title("Head contribution norms", fontsize=10)
    axis.grid(False, axis="x")
    axis.spines[["top", "right"]].set_visible(False)
    axis.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if ax is None:
        fig.tight_layout()
    return finish(fig, axis, show=show, return_fig=return_fig, ax_given=ax is not None)


def _perturbation_result(adata: AnnData, key: str) -> tuple[dict, pd.DataFrame]:
    entry = adata.uns.get(key)
    column = f"{key}_toward"
    if not isinstance(entry, dict) or "params" not in entry or column not in adata.obsm:
        raise KeyError(
            f"No in-silico perturbation at adata.uns[{key!r}] and adata.obsm[{column!r}]; run "
            f"`sa.tl.in_silico_perturbation(adata, model, genes=..., key_added={key!r})` first."
        )
    toward = adata.obsm[column]
    if not isinstance(toward, pd.DataFrame):
        classes = [str(c) for c in np.atleast_1d(entry["params"].get("classes", []))]
        toward = pd.DataFrame(np.asarray(toward), index=adata.obs_names,
                              columns=classes if len(classes) == np.shape(toward)[1] else None)
    return entry, toward


def _distribution(axis: Axes, data: list[np.ndarray], positions: np.ndarray, width: float,
                  color, kind: str) -> None:
    """A violin (or box) per array at `positions`; a flat or single-value array as a tick."""
    if kind == "box":
        parts = axis.boxplot(data, positions=positions, widths=width, patch_artist=True,
                             showfliers=False, manage_ticks=False,
                             medianprops={"color": "black", "lw": 1})
        for box in parts["boxes"]:
            box.set_facecolor(color)
            box.set_alpha(0.75)
        return
    for values, pos in zip(data, positions, strict=True):
        if values.size >= 2 and np.ptp(values) > 0:
            try:
                parts = axis.violinplot([values], positions=[pos], widths=width, showmedians=True,
                                        showextrema=False)
            except np.linalg.LinAlgError:
                pass
            else:
                for body in parts["bodies"]:
                    body.set_facecolor(color)
                    body.set_edgecolor("0.3")
                    body.set_alpha(0.75)
                parts["cmedians"].set_color("black")
                continue
        if values.size:
            axis.hlines(np.median(values), pos - width / 2, pos + width / 2, color=color, lw=2)


@scattn_dsp.dedent
def perturbation_shift(
    adata: AnnData,
    *,
    key: str = "perturbation",
    target: str | Sequence[str] | None = None,
    groupby: str | None = None,
    kind: Literal["violin", "box"] = "violin",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Per group of cells, how far the in-silico perturbation moved them toward a class.

    For each group of `groupby` (x axis), the distribution over its cells of
    ``toward[target]``, the change in cosine similarity to the `target` class centroid
    written by :func:`scattn.tl.in_silico_perturbation`: above the dashed 0 line, the
    perturbation moved the cells toward `target`.

    Parameters
    ----------
    adata
        AnnData with the result of :func:`scattn.tl.in_silico_perturbation`.
    key
        Its ``key_added`` (reads ``obsm[f"{key}_toward"]`` and ``uns[key]``).
    target
        Class (a column of ``obsm[f"{key}_toward"]``, a group of the tool's `groupby`) or
        classes to show the move toward; several are drawn side by side per group, coloured
        by class. `None`: every class.
    groupby
        Column of ``adata.obs`` grouping the cells on the x axis. `None`: the `groupby` the
        tool used (``uns[key]["params"]["groupby"]``).
    kind
        ``"violin"`` (median marked) or ``"box"`` (quartiles, whiskers to 1.5 IQR).
    %(show)s
    """
    if kind not in ("violin", "box"):
        raise ValueError(f"kind must be 'violin' or 'box', got {kind!r}.")
    entry, toward = _perturbation_result(adata, key)
    params = entry["params"]
    classes = [str(c) for c in toward.columns]
    if target is None:
        targets = classes
    else:
        targets = [str(t) for t in ([target] if isinstance(target, str) else target)]
        unknown = [t for t in targets if t not in classes]
        if unknown or not targets:
            raise ValueError(f"target must be among the classes of the perturbation ({', '.join(classes)}), "
                             f"got {unknown or target!r}.")
    if groupby is None:
        groupby = params.get("groupby")
    if groupby is None or groupby not in adata.obs:
        raise KeyError(f"groupby {groupby!r} is not a column of adata.obs; pass `groupby=` (an obs "
                       "column).")
    groups = adata.obs[groupby].astype("category").cat.remove_unused_categories()
    names = list(groups.cat.categories)
    if not names:
        raise ValueError(f"adata.obs[{groupby!r}] has no non-missing value to group cells by.")
    codes = groups.cat.codes.to_numpy()
    values = toward[targets].to_numpy(dtype=float)

    n_groups, n_targets = len(names), len(targets)
    slot = 0.8 / n_targets
    fig, axis = new_axes(ax, (min(max(3.5, 0.45 * n_groups * n_targets + 2.2), 16.0), 3.8))
    palette = (["#3a6ea5"] if n_targets == 1 else
               [plt.get_cmap("tab10" if n_targets <= 10 else "tab20")(j % 20) for j in range(n_targets)])
    for j in range(n_targets):
        positions = np.arange(n_groups) - 0.4 + slot * (j + 0.5)
        data = [values[codes == i, j] for i in range(n_groups)]
        data = [d[np.isfinite(d)] for d in data]
        _distribution(axis, data, positions, slot * 0.9, palette[j], kind)
    axis.axhline(0, color="0.3", lw=0.8, ls="--", zorder=0)
    axis.set_xticks(np.arange(n_groups), [str(n) for n in names], fontsize=9,
                    rotation=45 if n_groups > 4 else 0, ha="right" if n_groups > 4 else "center")
    axis.set_xlim(-0.6, n_groups - 0.4)
    axis.set_xlabel(groupby)
    what = f"to {targets[0]} centroid" if n_targets == 1 else "to class centroid"
    axis.set_ylabel(f"change in cosine similarity\n{what}")
    axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useMathText=True)
    genes = [str(g) for g in np.atleast_1d(params.get("genes", []))]
    shown = ", ".join(genes[:3]) + (f" (+{len(genes) - 3})" if len(genes) > 3 else "")
    axis.set_title(f"In-silico {params.get('mode', 'perturbation')}: {shown}", fontsize=10)
    axis.grid(False, axis="x")
    axis.spines[["top", "right"]].set_visible(False)
    if n_targets > 1:
        handles = [Patch(facecolor=palette[j], alpha=0.75, label=t) for j, t in enumerate(targets)]
        axis.legend(handles=handles, title="toward", frameon=False, fontsize=8, title_fontsize=8,
                    loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if ax is None:
        fig.tight_layout()
    return finish(fig, axis, show=show, return_fig=return_fig, ax_given=ax is not None)
