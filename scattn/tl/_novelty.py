"""Novel cell types from prediction confidence: the CFAN/CGRAN paper's statistic (section 4.5).

A cell is *ambiguous* when its highest class probability is below a threshold t. ``p_ref`` is
the ambiguous fraction among reference cells of known types, ``p`` the fraction in a new
sample; a sample where ``p`` is significantly above ``p_ref`` likely holds cell types the
model was not trained on.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from scattn._attribution import benjamini_hochberg
from scattn._docs import scattn_dsp
from scattn._read import find_key
from scattn._write import write_results

logger = logging.getLogger(__name__)


def _confidence(source, key: str, *, what: str, unread: str = "drop") -> np.ndarray:
    """Confidences from an AnnData (``obs[f"{key}_confidence"]``) or an array-like.

    NaN marks a cell the model could not read (no counts on its genes; ``predict`` labels it
    "Unknown"): with ``unread="drop"`` it is left out (a reference), with ``"ambiguous"`` it
    counts as confidence 0, below any threshold (a sample tested for novelty).
    """
    if isinstance(source, AnnData):
        col = f"{key}_confidence"
        if col not in source.obs:
            raise KeyError(
                f"{what} has no obs[{col!r}]; predict it first with the same model "
                f"(`model.predict({what}, key_added={key!r})`)."
            )
        values = source.obs[col].to_numpy(dtype=float)
    else:
        values = np.asarray(source, dtype=float)
        if values.ndim != 1:
            raise ValueError(
                f"{what}'s confidences must be one value per cell (1-D), got shape {values.shape}; "
                "for class probabilities, pass their row maximum (e.g. `proba.max(1)`)."
            )
    nan = np.isnan(values)
    values = values[~nan] if unread == "drop" else np.where(nan, 0.0, values)
    if values.size == 0:
        raise ValueError(f"{what} has no cells{' with a confidence' if nan.any() else ''}.")
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"{what}'s confidences must be finite probabilities in [0, 1].")
    return values


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}.")
    return threshold


def _resolve_key(adata: AnnData, key: str | None) -> str:
    """`key`, or the key of the one model that wrote confidences into `adata`."""
    if key is not None:
        return key
    return find_key(adata, needs=("confidence",), argument="key")


def unknown_threshold(reference, *, p_ref: float = 0.05, key: str | None = None) -> float:
    """The confidence threshold under which a fraction `p_ref` of reference cells falls.

    Use it for ``model.predict(..., unknown_threshold=t)`` and :func:`novelty`. Take the
    reference cells from data the model did not train on (e.g. a held-out part of the
    reference), or the threshold will be too low: a model is over-confident on its own
    training cells.

    Parameters
    ----------
    reference
        AnnData of reference cells (of known types) predicted by the model (reads
        ``obs[f"{key}_confidence"]``), or an array of their confidences.
    p_ref
        Target fraction of ambiguous reference cells, in (0, 1).
    key
        The ``key_added`` of the prediction (reads ``obs[f"{key}_confidence"]``). `None`: the
        key of the one model that predicted into `reference` (from
        ``reference.uns[key]["params"]``); a `ValueError` says when there is none or several.
        Not used when `reference` is an array.

    Returns
    -------
    The threshold t, the `p_ref` quantile of the reference confidences (clipped into (0, 1)).
    """
    if not 0 < p_ref < 1:
        raise ValueError(f"p_ref must be in (0, 1), got {p_ref}.")
    if isinstance(reference, AnnData):
        key = _resolve_key(reference, key)
    conf = _confidence(reference, key, what="reference")
    t = float(np.quantile(conf, p_ref))
    return float(np.clip(t, 1e-6, 1 - 1e-6))


@scattn_dsp.dedent
def novelty(
    adata: AnnData,
    reference,
    *,
    threshold: float | None = None,
    p_ref: float = 0.05,
    key: str | None = None,
    groupby: str | None = None,
    alpha: float = 0.05,
    key_added: str = "novelty",
    copy: bool = False,
) -> AnnData | None:
    """Test whether samples hold cell types the model does not know (paper, section 4.5).

    A cell is ambiguous when its prediction confidence is below `threshold`. For each sample
    (each category of `groupby`, or all cells), ``p`` is its ambiguous fraction, and a
    one-sided test asks whether ``p`` exceeds the reference's ``p_ref``: Fisher's exact test
    on the 2 x 2 table of ambiguous/confident cells in the sample and the reference, or, when
    the reference is given only as a fraction, a binomial test against it. P-values are
    Benjamini-Hochberg adjusted across samples.

    Parameters
    ----------
    adata
        Query cells predicted by the model (``obs[f"{key}_confidence"]``). Cells with confidence
        NaN (no counts on the model's genes, predicted "Unknown") count as ambiguous; in a
        reference they are left out.
    reference
        Reference cells of known types predicted by the same model: an AnnData (reads
        ``obs[f"{key}_confidence"]``), an array of their confidences, or a float, the
        reference's ambiguous fraction ``p_ref`` itself (then `threshold` is required).
    threshold
        Confidence under which a cell is ambiguous, in (0, 1). `None`: chosen from the
        reference confidences so that a fraction `p_ref` of them is ambiguous (see
        :func:`unknown_threshold`).
    p_ref
        Target ambiguous fraction of the reference when `threshold` is `None`.
    key
        The ``key_added`` of the predictions (reads ``obs[f"{key}_confidence"]`` of `adata`
        and of an AnnData `reference`). `None`: the key of the one model that predicted into
        `adata` (from ``adata.uns[key]["params"]``); a `ValueError` says when there is none
        or several, then pass `key`.
    groupby
        Column of ``adata.obs`` naming samples or batches; one test per observed category.
        `None`: all cells are one sample.
    alpha
        Level at which a sample is called novel (on the adjusted p-value).
    key_added
        Where to write the results.
    %(copy)s

    Returns
    -------
    Writes (or, with `copy`, returns a copy with):

    ``adata.obs[f"{key_added}_ambiguous"]``
        Whether each cell's confidence is below the threshold.
    ``adata.uns[key_added]["table"]``
        DataFrame, one row per sample: ``n_cells``, ``n_ambiguous``, ``p``, ``p_ref``,
        ``pval``, ``pval_adj``, ``novel`` (``pval_adj < alpha``).
    ``adata.uns[key_added]["params"]``
        ``threshold``, ``test``, ``key`` (the one used, also when found), ``groupby``, ``alpha``, ``n_reference`` (reference
        cells; -1 when the reference is given as a fraction).
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0:
        raise ValueError("adata has no cells: there is no sample to test.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
    key = _resolve_key(adata, key)
    conf = _confidence(adata, key, what="adata", unread="ambiguous")
    if not isinstance(reference, AnnData | bool) and np.ndim(reference) == 0:
        ref_fraction = float(reference)
        if not 0 <= ref_fraction < 1:
            raise ValueError(f"A reference fraction must be in [0, 1), got {ref_fraction}.")
        if threshold is None:
            raise ValueError("Give `threshold` when the reference is a fraction p_ref.")
        threshold = _check_threshold(threshold)
        n_ref = k_ref = None
        test = "binomial"
    else:
        ref_conf = _confidence(reference, key, what="reference")
        threshold = unknown_threshold(ref_conf, p_ref=p_ref) if threshold is None else _check_threshold(threshold)
        n_ref, k_ref = len(ref_conf), int((ref_conf < threshold).sum())
        ref_fraction = k_ref / n_ref
        test = "fisher"
    if groupby is None:
        groups = pd.Series("all", index=adata.obs_names, dtype="category")
    else:
        if groupby not in adata.obs:
            raise KeyError(f"groupby {groupby!r} is not a column of adata.obs.")
        groups = adata.obs[groupby].astype("category")
        if groups.isna().any():
            raise ValueError(f"adata.obs[{groupby!r}] has missing values; every cell needs a sample.")
        groups = groups.cat.remove_unused_categories()

    ambiguous = conf < threshold
    rows = []
    for name in groups.cat.categories:
        mask = (groups == name).to_numpy()
        n, k = int(mask.sum()), int(ambiguous[mask].sum())
        if test == "fisher":
            pval = stats.fisher_exact([[k, n - k], [k_ref, n_ref - k_ref]], alternative="greater")[1]
        else:
            pval = stats.binomtest(k, n, ref_fraction, alternative="greater").pvalue if ref_fraction > 0 \
                else float(k == 0)
        rows.append({"sample": str(name), "n_cells": n, "n_ambiguous": k, "p": k / n,
                     "p_ref": ref_fraction, "pval": float(pval)})
    table = pd.DataFrame(rows).set_index("sample")
    table["pval_adj"] = benjamini_hochberg(table["pval"].to_numpy())
    table["novel"] = table["pval_adj"] < alpha
    params = {"threshold": threshold, "test": test, "key": key, "groupby": groupby, "alpha": alpha,
              "n_reference": -1 if n_ref is None else n_ref}

    adata = adata.copy() if copy else adata
    write_results(adata, [("obs", f"{key_added}_ambiguous", ambiguous),
                          ("uns", key_added, {"table": table, "params": params})],
                  by="sa.tl.novelty")
    logger.info("novelty: threshold %.3f, p_ref %.3f; %d of %d samples novel", threshold,
                ref_fraction, int(table["novel"].sum()), len(table))
    return adata if copy else None
