"""A directed gene network from an scGPT-like model's gene-to-gene attention: each gene's
strongest attention targets (Cui et al. 2024, attention-based gene networks)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from scattn._docs import scattn_dsp
from scattn._read import check_method, is_int, model_genes
from scattn._write import write_results

from ._fitted import check_fitted
from ._gene_programs import match_genes

logger = logging.getLogger(__name__)

__all__ = ["gene_network"]


def top_edges(weights: np.ndarray, top_k: int, min_weight: float) -> tuple[np.ndarray, ...]:
    """``(rows, columns, values)`` of each row's `top_k` largest entries above `min_weight`,
    off the diagonal and ignoring NaN; per row by decreasing value (ties: lower column first)."""
    w = np.array(weights, dtype=float)
    np.fill_diagonal(w, np.nan)
    w[~(w > min_weight)] = -np.inf  # NaN, the diagonal and weak entries never qualify
    order = np.argsort(-w, axis=1, kind="stable")[:, :top_k]
    rows = np.repeat(np.arange(w.shape[0]), order.shape[1])
    cols = order.ravel()
    values = w[rows, cols]
    keep = np.isfinite(values)
    return rows[keep], cols[keep], values[keep]


@scattn_dsp.dedent
def gene_network(
    adata: AnnData,
    model,
    *,
    genes: Sequence[str] | np.ndarray | pd.Series | None = None,
    top_k: int = 10,
    min_weight: float = 0.0,
    gene_id_key: str | None = None,
    batch_size: int | None = None,
    key_added: str = "gene_network",
    copy: bool = False,
) -> AnnData | None:
    """A directed gene network from the model's gene-to-gene attention: each gene's `top_k`
    strongest attention targets.

    The model's attention from gene ``i`` (query) to gene ``j`` (key) on the cells of `adata`
    (:meth:`get_gene_attention`: for scGPT-like models, the last layer's attention averaged
    over heads and over the cells in which both genes are tokens) is read for the chosen genes;
    for each gene, the `top_k` other chosen genes it attends to most, with an attention above
    `min_weight`, become edges ``source -> target`` (the direction is kept: ``i -> j`` and
    ``j -> i`` are separate edges, with their own weights). Pairs of genes never seen together
    in a cell (NaN) and self-attention are ignored. The model is asked for the chosen genes
    only, through the signature every model shares,
    ``get_gene_attention(adata=None, indices=None, *, genes=None, batch_size=None)`` (e.g.
    :meth:`scattn.model.SCGPT.get_gene_attention`, :meth:`scattn.model.CGRAN.get_gene_attention`).

    Parameters
    ----------
    adata
        Cells to compute the attention on (genes matched by ID to the model's genes).
    model
        Trained model with ``get_gene_attention`` (e.g. :class:`scattn.model.SCGPT`): a
        DataFrame genes x genes (rows: query, columns: key) indexed by the model's gene IDs.
    genes
        Genes of the network (both ends of every edge), by ``adata.var_names``, or a boolean
        mask over ``adata.var`` (e.g. ``adata.var["highly_variable"]``). `None`: every gene of
        `adata` the model has. Genes the model lacks are left out with a warning; a name not in
        ``adata.var_names`` is a `ValueError`.
    top_k
        Largest number of targets per source gene.
    min_weight
        Only attention strictly above this becomes an edge (the default 0 drops zeros).
    gene_id_key
        Column of ``adata.var`` holding the model's gene IDs (e.g. Ensembl IDs). `None`:
        ``adata.var_names`` are the model's IDs.
    %(batch_size)s
    key_added
        Key in ``adata.uns``.
    %(copy)s

    Returns
    -------
    `None`, or a copy of `adata` with `copy=True`. Writes ``adata.uns[key_added]``:

    ``edges``
        DataFrame with columns ``source``, ``target`` (``adata.var_names``) and ``weight`` (the
        attention from source to target), one row per edge, sorted by source (in adata's gene
        order) and then by decreasing weight.
    ``params``
        ``model_class``, ``top_k``, ``min_weight``, ``gene_id_key``, ``n_genes`` (genes of the
        network), ``n_edges``, ``n_cells``.

    Examples
    --------
    >>> sa.tl.gene_network(adata, model, genes=adata.var["highly_variable"], top_k=5)
    >>> edges = adata.uns["gene_network"]["edges"]
    >>> edges[edges["source"] == "CD3D"]
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0:
        raise ValueError("adata has no cells: there is no attention to read.")
    check_method(model, "get_gene_attention", "gene_network")
    check_fitted(model, "gene_network")
    if not is_int(top_k, 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}.")
    if (
        isinstance(min_weight, bool)
        or not isinstance(min_weight, int | float | np.number)
        or not np.isfinite(min_weight)
    ):
        raise ValueError(f"min_weight must be a finite number, got {min_weight!r}.")
    vocabulary = getattr(model, "var_names_", None)
    if vocabulary is None:
        raise TypeError(
            f"gene_network needs the model's gene IDs (`var_names_`), which "
            f"{type(model).__name__} lacks."
        )
    pos, ids = match_genes(
        adata,
        pd.Index(vocabulary).astype(str),
        genes=genes,
        gene_id_key=gene_id_key,
        need=2,
        tool="gene_network",
    )

    attention = model.get_gene_attention(adata=adata, genes=list(ids), batch_size=batch_size)
    rows = model_genes(attention, "gene attention")
    columns = pd.Index(attention.columns.astype(str))
    missing = ids[~ids.isin(rows) | ~ids.isin(columns)]
    if len(missing):
        raise ValueError(
            f"The model's gene attention lacks {len(missing)} of its own genes (e.g. "
            f"{missing[:3].tolist()}); it must cover the model's genes."
        )
    if rows.has_duplicates or columns.has_duplicates:
        raise ValueError("The model's gene attention has repeated gene IDs.")
    frame = attention.set_axis(rows, axis=0).set_axis(columns, axis=1)
    weights = frame.loc[ids, ids].to_numpy(dtype=float)
    src, dst, values = top_edges(weights, int(top_k), float(min_weight))
    names = adata.var_names.astype(str)[pos]
    edges = pd.DataFrame(
        {
            "source": names[src].to_numpy(dtype=object),
            "target": names[dst].to_numpy(dtype=object),
            "weight": values,
        }
    )
    params = {
        "model_class": type(model).__name__,
        "top_k": int(top_k),
        "min_weight": float(min_weight),
        "gene_id_key": gene_id_key,
        "n_genes": len(ids),
        "n_edges": len(edges),
        "n_cells": int(adata.n_obs),
    }
    if edges.empty:
        logger.warning(
            "gene_network: no attention above min_weight=%g between the %d genes.",
            min_weight,
            len(ids),
        )
    adata = adata.copy() if copy else adata
    write_results(
        adata, [("uns", key_added, {"edges": edges, "params": params})], by="sa.tl.gene_network"
    )
    logger.info("gene_network: %d genes, %d edges", len(ids), len(edges))
    return adata if copy else None
