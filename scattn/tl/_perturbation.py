"""Geneformer's in-silico perturbation: delete or overexpress genes in every cell and measure
how far its embedding moves, and toward which class."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from scattn._docs import scattn_dsp
from scattn._write import write_results

from ._fitted import check_fitted

logger = logging.getLogger(__name__)

__all__ = ["in_silico_perturbation"]

_MODES = ("delete", "overexpress")


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero, a NaN row NaN)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    out[np.isnan(norm[..., 0])] = np.nan
    return out


def _default_groupby(adata: AnnData, model) -> str:
    key = getattr(model, "_key", None)
    column = f"{key}_prediction" if key else None
    if column is None or column not in adata.obs:
        where = f" (no adata.obs[{column!r}])" if column else ""
        raise ValueError(
            f"No groupby given and no predictions of the model in adata{where}: pass "
            "`groupby=` (an obs column of cell types), or run `model.predict(adata)` first."
        )
    return column


@scattn_dsp.dedent
def in_silico_perturbation(
    adata: AnnData,
    model,
    *,
    genes: str | Sequence[str],
    mode: Literal["delete", "overexpress"] = "delete",
    groupby: str | None = None,
    key_added: str = "perturbation",
    batch_size: int | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Delete or overexpress `genes` in every cell and measure the embedding shift (Geneformer).

    Each cell's embedding is computed as is and after the perturbation (the genes removed
    from its rank-value tokens, or moved to the front in the order given; see
    :meth:`scattn.model.Geneformer.get_perturbed_representation`). The class centroids are
    the means of the *original* embeddings of each group of `groupby`. Per cell, the shift is
    the cosine distance between its original and perturbed embedding, and for each class
    ``c`` the move toward it is ``cos(perturbed, centroid_c) - cos(original, centroid_c)``:
    positive when the perturbation moved the cell toward class ``c`` (Theodoris et al. 2023:
    e.g. deleting a disease gene moves diseased cells toward the healthy class).

    Parameters
    ----------
    adata
        Cells to perturb (genes matched by ID to the model's vocabulary).
    model
        Trained Geneformer-like model (``get_latent_representation`` and
        ``get_perturbed_representation``).
    genes
        Gene ID or IDs of the model's vocabulary (``model.var_names_``); an unknown gene is a
        `ValueError`.
    mode
        ``"delete"`` or ``"overexpress"``.
    groupby
        Column of ``adata.obs`` whose groups give the classes (centroids) and the rows of the
        summary, e.g. cell types or disease states. Default: the model's predictions,
        ``obs[f"{model._key}_prediction"]`` (``"geneformer_prediction"``, written by
        ``model.predict(adata)``). Cells with no group count in `shift` and `toward` but in no
        centroid or summary row.
    key_added
        Prefix of the keys written.
    %(batch_size)s
    %(copy)s

    Returns
    -------
    `None`, or a copy of `adata` with `copy=True`. Writes:

    ``adata.obs[f"{key_added}_shift"]``
        Cosine distance between each cell's original and perturbed embedding (0: unmoved);
        NaN for a cell with no count on any vocabulary gene (left out of the class centroids).
    ``adata.obsm[f"{key_added}_toward"]``
        DataFrame cells x classes (the groups of `groupby`): the change in cosine similarity
        to each class centroid (positive: toward the class).
    ``adata.uns[key_added]["summary"]``
        DataFrame groups of `groupby` (rows) x classes (columns): the mean of ``toward`` over
        the cells of each group.
    ``adata.uns[key_added]["params"]``
        ``model_class``, ``genes``, ``mode``, ``groupby`` (the one used, also by default),
        ``classes``, ``n_cells``.

    Examples
    --------
    >>> model.predict(adata)
    >>> sa.tl.in_silico_perturbation(adata, model, genes=["ENSG00000141510"], groupby="disease")
    >>> adata.uns["perturbation"]["summary"]  # mean move of each disease state toward each
    >>> sa.pl.perturbation_shift(adata, target="healthy")
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0:
        raise ValueError("adata has no cells to perturb.")
    for method in ("get_latent_representation", "get_perturbed_representation"):
        if not callable(getattr(model, method, None)):
            raise TypeError(
                f"in_silico_perturbation needs a Geneformer-like model with `{method}` (e.g. a "
                f"trained `sa.model.Geneformer`), got {type(model).__name__}."
            )
    check_fitted(model, "in_silico_perturbation")
    if mode not in _MODES:
        raise ValueError(f"mode must be 'delete' or 'overexpress', got {mode!r}.")
    genes = [str(g) for g in ([genes] if isinstance(genes, str) else genes)]
    if not genes:
        raise ValueError("Give at least one gene in `genes=`.")
    if groupby is None:
        groupby = _default_groupby(adata, model)
    elif groupby not in adata.obs:
        raise KeyError(f"groupby {groupby!r} is not a column of adata.obs; pass one of its columns.")
    groups = adata.obs[groupby].astype("category").cat.remove_unused_categories()
    if len(groups.cat.categories) == 0:
        raise ValueError(f"adata.obs[{groupby!r}] has no non-missing value; every class needs cells.")

    # the perturbed pass first: it checks the genes against the vocabulary
    perturbed = np.asarray(
        model.get_perturbed_representation(adata, genes=genes, mode=mode, batch_size=batch_size), dtype=float
    )
    original = np.asarray(model.get_latent_representation(adata, batch_size=batch_size), dtype=float)
    classes = [str(c) for c in groups.cat.categories]
    codes = groups.cat.codes.to_numpy()
    # cells without a gene token have NaN embeddings (the model warned): left out of centroids
    embedded = np.isfinite(original).all(1)
    centroids = np.full((len(classes), original.shape[1]), np.nan)
    for i in range(len(classes)):
        rows = (codes == i) & embedded
        if rows.any():
            centroids[i] = original[rows].mean(0)
    z, zp, mu = _unit(original), _unit(perturbed), _unit(centroids)
    shift = 1.0 - np.clip((z * zp).sum(1), -1.0, 1.0)
    toward = pd.DataFrame(zp @ mu.T - z @ mu.T, index=adata.obs_names, columns=classes)
    summary = toward.groupby(groups.array, observed=False).mean()
    summary = summary.reindex(groups.cat.categories)
    summary.index = pd.Index(classes, name=groupby)
    params = {
        "model_class": type(model).__name__,
        "genes": genes,
        "mode": mode,
        "groupby": groupby,
        "classes": classes,
        "n_cells": int(adata.n_obs),
    }
    adata = adata.copy() if copy else adata
    write_results(
        adata,
        [
            ("obs", f"{key_added}_shift", pd.Series(shift, index=adata.obs_names)),
            ("obsm", f"{key_added}_toward", toward),
            ("uns", key_added, {"params": params, "summary": summary}),
        ],
        by="sa.tl.in_silico_perturbation",
    )
    logger.info("in_silico_perturbation: %s %s; mean shift %.3g", mode, ", ".join(genes),
                float(np.nanmean(shift)) if np.isfinite(shift).any() else float("nan"))
    return adata if copy else None
