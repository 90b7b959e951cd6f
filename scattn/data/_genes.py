"""Gene choice (highly variable genes) and alignment of new data to a model's genes by name."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from scattn._quiet import user_stacklevel

from ._normalize import BackedLogNorm, gene_mean_var, seurat_dispersions_norm
from ._validate import is_backed, iter_row_blocks

logger = logging.getLogger(__name__)


def select_variable_genes(lognorm, n_top_genes: int) -> np.ndarray:
    """Positions of the `n_top_genes` most variable genes of a log-normalised matrix.

    Uses scanpy's ``flavor="seurat"`` normalised dispersion (binned by mean expression), as in
    the CGRAN paper's preprocessing. Returns positions in the original gene order.

    A backed `lognorm` (a :class:`~scattn.data.BackedLogNorm`, as :func:`log_normalize` gives
    for a backed matrix, or a backed log-normalised matrix) is read a block of rows at a time:
    the gene means and variances are accumulated and the same dispersions computed from them
    (:func:`~scattn.data.seurat_dispersions_norm`), so it never loads whole.
    """
    n_genes = lognorm.shape[1]
    if n_top_genes >= n_genes:
        return np.arange(n_genes)
    if isinstance(lognorm, BackedLogNorm) or is_backed(lognorm):
        mean, var = gene_mean_var(lognorm, transform=_expm1)
        disp = seurat_dispersions_norm(mean, var)
    else:
        import scanpy as sc
        from anndata import AnnData

        tmp = AnnData(X=lognorm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hvg = sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat", inplace=False)
        disp = hvg["dispersions_norm"].to_numpy(dtype=float)
    disp = np.nan_to_num(disp, nan=-np.inf)
    # stable order: highest dispersion first, ties broken by position
    top = np.argsort(-disp, kind="stable")[:n_top_genes]
    return np.sort(top)


def _expm1(block):
    """expm1 of a dense or sparse block, keeping its dtype (as scanpy's seurat flavour does)."""
    return block.expm1() if sparse.issparse(block) else np.expm1(block)


def genes_to_positions(var_names: pd.Index, genes: Sequence[str]) -> np.ndarray:
    """Positions of a user's gene list in `var_names`; raise naming genes that are absent."""
    genes = pd.Index(list(genes))
    if not genes.is_unique:
        raise ValueError("The gene list has duplicated names.")
    pos = var_names.get_indexer(genes)
    missing = genes[pos < 0]
    if len(missing):
        raise ValueError(
            f"{len(missing)} of the requested genes are not in adata.var_names: "
            f"{', '.join(map(str, missing[:5]))}{', ...' if len(missing) > 5 else ''}."
        )
    return pos


def gene_selector(
    var_names: pd.Index,
    target_genes: pd.Index,
    *,
    model_genes: pd.Index | None = None,
    min_overlap: float = 0.5,
    warn_missing: bool = True,
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The genes x target-genes 0/1 matrix that reorders columns named `var_names` to `target_genes`.

    ``block @ selector`` is a block of rows aligned to `target_genes` (absent genes zero), so
    data larger than memory is aligned a block at a time. Checks the overlap once, as
    :func:`align_to_genes` describes; returns the selector and a boolean mask over
    `target_genes` of genes present.
    """
    model_genes = target_genes if model_genes is None else model_genes
    present_model = model_genes.isin(var_names)
    n_present = int(present_model.sum())
    if n_present == 0:
        raise ValueError(
            "The data shares no gene with the model. Check that var_names use the same "
            "identifiers (symbols vs Ensembl IDs) as the data the model was trained on."
        )
    frac = n_present / len(model_genes)
    if frac < min_overlap:
        raise ValueError(
            f"Only {n_present} of the model's {len(model_genes)} genes ({frac:.0%}) are in the "
            f"data, below the minimum overlap of {min_overlap:.0%}; predictions would be "
            "unreliable. Use data measured on the same genes (or lower `min_gene_overlap`)."
        )
    if warn_missing and n_present < len(model_genes):
        warnings.warn(
            f"{len(model_genes) - n_present} of the model's {len(model_genes)} genes are missing "
            "from the data and are filled with zeros.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    src = var_names.get_indexer(target_genes)
    present = src >= 0
    cols = np.flatnonzero(present)
    selector = sparse.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (src[present], cols)),
        shape=(len(var_names), len(target_genes)),
    )
    return selector, present


def select_columns(block, selector: sparse.csr_matrix) -> sparse.csr_matrix:
    """A block of rows (dense or sparse) aligned by a :func:`gene_selector`: float32 CSR."""
    if not sparse.issparse(block):
        block = sparse.csr_matrix(np.asarray(block))
    return sparse.csr_matrix(block @ selector, dtype=np.float32)


def align_to_genes(
    matrix,
    var_names: pd.Index,
    target_genes: pd.Index,
    *,
    model_genes: pd.Index | None = None,
    min_overlap: float = 0.5,
    warn_missing: bool = True,
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Reorder the columns of `matrix` to `target_genes`, zero-filling absent genes.

    Parameters
    ----------
    matrix
        Cells x genes, dense, sparse or backed (read a block of rows at a time), columns
        named by `var_names`.
    var_names
        Gene names of `matrix`.
    target_genes
        Gene names of the model's input, in the model's order.
    model_genes
        The genes the model actually reads (a subset of `target_genes`); the overlap is judged
        on these. Defaults to `target_genes`.
    min_overlap
        Smallest fraction of `model_genes` that must be present; below it is an error.
    warn_missing
        Warn when some of `model_genes` are absent (models with a vocabulary larger than any
        one dataset warn about the data's genes instead).

    Returns
    -------
    The aligned CSR matrix and a boolean mask over `target_genes` of genes present.
    """
    selector, present = gene_selector(var_names, target_genes, model_genes=model_genes,
                                      min_overlap=min_overlap, warn_missing=warn_missing)
    parts = [select_columns(block, selector) for _, _, block in iter_row_blocks(matrix)]
    if len(parts) == 1:
        return parts[0], present
    if not parts:  # a backed matrix without cells
        return sparse.csr_matrix((0, len(target_genes)), dtype=np.float32), present
    return sparse.vstack(parts, format="csr", dtype=np.float32), present
