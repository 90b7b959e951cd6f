"""How fine-tuning changes a Geneformer's attention: per head and rank position (the seed
paper's Figure 4) and per head's contribution norm ``||sum_j a_ij f(x_j)||`` (Figure 6)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData

from scattn._docs import scattn_dsp
from scattn._write import write_results

from ._fitted import check_lineage

logger = logging.getLogger(__name__)

__all__ = ["attention_shift"]


def _check_geneformer_like(model, name: str) -> None:
    """A clear error unless `model` reports attention per layer, head and rank."""
    if not callable(getattr(model, "get_attention_statistics", None)):
        raise TypeError(
            f"`{name}` must be a Geneformer-like model with `get_attention_statistics` (e.g. a "
            f"trained `sa.model.Geneformer`), got {type(model).__name__}."
        )


def _head_labels(n_layers: int, n_heads: int) -> list[str]:
    return [f"layer {layer + 1} head {head + 1}" for layer in range(n_layers) for head in range(n_heads)]


def _percent_change(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``100 * (new - old) / old``; NaN where `old` is 0 or NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(old != 0, 100.0 * (new - old) / old, np.nan)


def _bin_edges(n: int, rank_bins: int | None) -> np.ndarray:
    """Edges (0-based, exclusive end) of at most `rank_bins` contiguous, near-equal bins of
    ``n`` ranks; every rank its own bin when `rank_bins` is `None`."""
    if rank_bins is None or rank_bins >= n:
        return np.arange(n + 1)
    return np.unique(np.round(np.linspace(0, n, rank_bins + 1)).astype(int))


def _binned(received: np.ndarray, count: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean attention per bin, each rank weighted by its cells (all tokens in the bin pooled)."""
    weights = count.astype(float)
    filled = np.nan_to_num(received) * weights
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        total = weights[lo:hi].sum()
        out.append(filled[..., lo:hi].sum(-1) / total if total > 0 else np.full(received.shape[:-1], np.nan))
    return np.stack(out, -1)


@scattn_dsp.dedent
def attention_shift(
    adata: AnnData,
    pretrained,
    finetuned,
    *,
    n_ranks: int = 256,
    rank_bins: int | None = None,
    key_added: str = "attention_shift",
    batch_size: int | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Compare a pretrained and a fine-tuned Geneformer's attention on the same cells.

    For every layer and head, the attention the gene token at each rank position receives
    (from ``<cls>``, or averaged over all tokens with ``pooling="mean"``; see
    :meth:`scattn.model.Geneformer.get_attention_statistics`), averaged over the cells of
    `adata`, for both models, and its percentage change ``100 * (fine-tuned - pretrained) /
    pretrained`` (the seed paper's Figure 4: which heads move their attention toward the
    highly or lowly expressed genes). And, per head, the mean norm of its contribution
    ``||sum_j a_ij f_h(x_j)||`` (Kobayashi et al. 2020) in both models and its percentage change
    (Figure 6: attention weights alone ignore how large the attended vectors are).

    Parameters
    ----------
    adata
        Cells to run both models on (genes matched by ID to each model's vocabulary).
    pretrained
        The pretrained model (e.g. after :meth:`~scattn.model.Geneformer.pretrain`): any
        model with ``get_attention_statistics``.
    finetuned
        The fine-tuned model (e.g. :meth:`~scattn.model.Geneformer.from_pretrained`, then
        :meth:`~scattn.model.Geneformer.train`), with the same number of layers and heads.
    n_ranks
        Rank positions compared (the first `n_ranks` gene tokens, most expressed first).
        Positions that no cell reaches in either model (beyond its longest cell, or beyond the
        model's ``max_length``) are dropped.
    rank_bins
        Number of contiguous bins of rank positions to average into (e.g. 32), for readable
        plots; each bin pools its tokens (ranks weighted by their number of cells). `None`:
        one column per rank position. At most one bin per rank position.
    key_added
        Key in ``adata.uns``.
    %(batch_size)s
    %(copy)s

    Returns
    -------
    `None`, or a copy of `adata` with `copy=True`. Writes ``adata.uns[key_added]``:

    ``pretrained``, ``finetuned``
        DataFrames heads x rank positions: mean attention received. Rows
        ``"layer l head h"`` (1-based), columns the rank positions ``"1" .. "n"`` (strings, so
        that the AnnData writes to h5ad), or with `rank_bins` the bins' labels (``"1-8"``,
        ``"9-16"``, ...). NaN where no cell has a gene
        at that rank.
    ``percent_change``
        Same layout: ``100 * (finetuned - pretrained) / pretrained``.
    ``norms``
        DataFrame, one row per head (same labels): ``layer``, ``head`` (1-based), and the
        mean contribution norm ``pretrained``, ``finetuned``, and ``percent_change``.
    ``count``
        DataFrame indexed by rank position ``1 .. n`` (not binned), columns ``pretrained``
        and ``finetuned``: the cells with a gene at that rank for each model (the same when
        the fine-tuned model shares the pretrained one's vocabulary and ``max_length``).
    ``params``
        ``pretrained_class``, ``finetuned_class`` (model class names), ``n_ranks`` (asked),
        ``n_ranks_used`` (after dropping unreached positions), ``rank_bins`` (asked),
        ``n_bins`` (columns written), ``n_layers``, ``n_heads``, ``n_cells``.

    Examples
    --------
    >>> base = sa.model.Geneformer(unlabelled)
    >>> base.pretrain()
    >>> model = sa.model.Geneformer.from_pretrained(base, labelled)
    >>> model.train()
    >>> sa.tl.attention_shift(labelled, base, model, rank_bins=32)
    >>> sa.pl.attention_shift(labelled)
    >>> sa.pl.attention_norms(labelled)
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0:
        raise ValueError("adata has no cells: there is no attention to compare.")
    _check_geneformer_like(pretrained, "pretrained")
    _check_geneformer_like(finetuned, "finetuned")
    if pretrained is finetuned:
        raise ValueError(
            "pretrained and finetuned are the same model; pass the pretrained model and the "
            "model fine-tuned from it (`Geneformer.from_pretrained(pretrained, labelled)`)."
        )
    check_lineage(pretrained, finetuned, "attention_shift")
    if isinstance(n_ranks, bool) or not isinstance(n_ranks, int | np.integer) or n_ranks < 1:
        raise ValueError(f"n_ranks must be an integer >= 1, got {n_ranks!r}.")
    if rank_bins is not None and (
        isinstance(rank_bins, bool) or not isinstance(rank_bins, int | np.integer) or rank_bins < 1
    ):
        raise ValueError(f"rank_bins must be None or an integer >= 1, got {rank_bins!r}.")

    # one cell first: a mismatched architecture fails before a pass over all cells
    shapes = {}
    for name, model in (("pretrained", pretrained), ("finetuned", finetuned)):
        probe = model.get_attention_statistics(adata, indices=[0], n_ranks=1, batch_size=1)
        shapes[name] = tuple(np.shape(probe["norms"]))
    if shapes["pretrained"] != shapes["finetuned"]:
        (lp, hp), (lf, hf) = shapes["pretrained"], shapes["finetuned"]
        raise ValueError(
            f"The models differ in architecture: pretrained has {lp} layers x {hp} heads, "
            f"finetuned {lf} layers x {hf} heads. Compare a model with the one it was fine-tuned "
            "from (`Geneformer.from_pretrained(pretrained, labelled)` keeps the architecture)."
        )
    stats = {
        name: model.get_attention_statistics(adata, n_ranks=int(n_ranks), batch_size=batch_size)
        for name, model in (("pretrained", pretrained), ("finetuned", finetuned))
    }
    n_layers, n_heads = shapes["pretrained"]
    count_pt = np.asarray(stats["pretrained"]["count"])
    count_ft = np.asarray(stats["finetuned"]["count"])
    reached = np.flatnonzero((count_pt > 0) | (count_ft > 0))
    if reached.size == 0:
        raise ValueError(
            "No cell of adata has a gene of the models' vocabulary; check that adata's genes "
            "(var_names or the model's gene_id_key column) are the models' gene IDs."
        )
    n_used = int(reached[-1]) + 1
    edges = _bin_edges(n_used, rank_bins)
    if rank_bins is None:
        columns = [str(rank) for rank in range(1, n_used + 1)]
    else:
        columns = [f"{lo + 1}-{hi}" if hi - lo > 1 else f"{hi}"
                   for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    heads = _head_labels(n_layers, n_heads)

    tables = {}
    for name, count in (("pretrained", count_pt), ("finetuned", count_ft)):
        received = np.asarray(stats[name]["received"], dtype=float)[..., :n_used]
        values = _binned(received, count[:n_used], edges) if rank_bins is not None else received
        tables[name] = values.reshape(n_layers * n_heads, -1)
    frames = {
        name: pd.DataFrame(values, index=heads, columns=columns)
        for name, values in (
            ("pretrained", tables["pretrained"]),
            ("finetuned", tables["finetuned"]),
            ("percent_change", _percent_change(tables["finetuned"], tables["pretrained"])),
        )
    }
    norm_pt = np.asarray(stats["pretrained"]["norms"], dtype=float).ravel()
    norm_ft = np.asarray(stats["finetuned"]["norms"], dtype=float).ravel()
    norms = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(1, n_layers + 1), n_heads),
            "head": np.tile(np.arange(1, n_heads + 1), n_layers),
            "pretrained": norm_pt,
            "finetuned": norm_ft,
            "percent_change": _percent_change(norm_ft, norm_pt),
        },
        index=heads,
    )
    count = pd.DataFrame(
        {"pretrained": count_pt[:n_used].astype(np.int64), "finetuned": count_ft[:n_used].astype(np.int64)},
        index=pd.RangeIndex(1, n_used + 1, name="rank"),
    )
    params = {
        "pretrained_class": type(pretrained).__name__,
        "finetuned_class": type(finetuned).__name__,
        "n_ranks": int(n_ranks),
        "n_ranks_used": n_used,
        "rank_bins": rank_bins,
        "n_bins": len(columns),
        "n_layers": int(n_layers),
        "n_heads": int(n_heads),
        "n_cells": int(adata.n_obs),
    }
    result = {"params": params, **frames, "norms": norms, "count": count}
    adata = adata.copy() if copy else adata
    write_results(adata, [("uns", key_added, result)], by="sa.tl.attention_shift")
    logger.info("attention_shift: %d layers x %d heads, %d rank positions in %d columns",
                n_layers, n_heads, n_used, len(columns))
    return adata if copy else None
