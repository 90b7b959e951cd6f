"""Normalisation shared by every model: library-size scaling then log1p, sparse-preserving."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from scipy import sparse

from scattn._constants import TARGET_SUM

from ._validate import Expression, is_backed, iter_row_blocks


def log_normalize(matrix, expression: Expression, *, target_sum: float = TARGET_SUM):
    """Return log1p(counts / library * target_sum) as float32 (CSR if the input is sparse).

    Log-normalised input (``expression="log1p"``) is returned as float32 unchanged. The same
    arithmetic runs on minibatches inside the modules, so embeddings computed here and there
    agree.

    A backed matrix (a backed AnnData's X) is not read here: the result is a
    :class:`BackedLogNorm`, which normalises blocks of rows as they are read (the
    normalisation is per cell, so a block's result is that block of the whole's).
    """
    if is_backed(matrix):
        return BackedLogNorm(matrix, expression, target_sum=target_sum)
    if sparse.issparse(matrix):
        out = sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
        if expression == "counts":
            lib = np.asarray(out.sum(axis=1)).ravel()
            scale = np.divide(target_sum, lib, out=np.zeros_like(lib), where=lib > 0)
            out = sparse.csr_matrix(sparse.diags(scale.astype(np.float32)) @ out)
            np.log1p(out.data, out=out.data)
        return out
    out = np.asarray(matrix, dtype=np.float32).copy()
    if expression == "counts":
        lib = out.sum(axis=1, keepdims=True)
        out = np.divide(out * target_sum, lib, out=np.zeros_like(out), where=lib > 0)
        np.log1p(out, out=out)
    return out


class BackedLogNorm:
    """:func:`log_normalize` of a backed matrix, computed a block of rows at a time.

    What :func:`log_normalize` returns for a backed matrix: nothing is read until asked for.
    :meth:`blocks` streams normalised row blocks (:func:`scattn.data.select_variable_genes`
    computes gene statistics from them); indexing (``lognorm[:, genes]``) and
    :meth:`to_memory` build an in-memory result (CSR for sparse data, else a float32 array)
    block by block, keeping only the selected columns.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, matrix, expression: Expression, *, target_sum: float = TARGET_SUM):
        self.matrix = matrix
        self.expression = expression
        self.target_sum = target_sum

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    def __repr__(self) -> str:
        return f"BackedLogNorm({self.expression!r}, shape={self.shape}, of {type(self.matrix).__name__})"

    def blocks(self, chunk_size: int | None = None) -> Iterator[tuple[int, int, object]]:
        """``(start, stop, block)``: the normalised rows ``start:stop``, in memory."""
        for start, stop, block in iter_row_blocks(self.matrix, chunk_size, desc="Gene statistics"):
            yield start, stop, log_normalize(block, self.expression, target_sum=self.target_sum)

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        parts = [block[:, cols] for _, _, block in self.blocks()]
        if not parts:  # no rows
            empty = sparse.csr_matrix(self.shape, dtype=np.float32)
            return (empty if hasattr(self.matrix, "format") else empty.toarray())[rows, cols]
        out = sparse.vstack(parts, format="csr") if sparse.issparse(parts[0]) else np.vstack(parts)
        return out if _is_full(rows) else out[rows]

    def to_memory(self):
        """The whole normalised matrix in memory (what :func:`log_normalize` gives in memory)."""
        return self[:, :]


def _is_full(index) -> bool:
    return isinstance(index, slice) and index == slice(None)


def gene_mean_var(matrix, *, transform=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and unbiased variance (float64), read a block of rows at a time.

    `matrix` is in memory, backed or a :class:`BackedLogNorm`; `transform` is applied to each
    (in-memory, dense or CSR) block first. As scanpy's ``_get_mean_var`` computes them, so
    that statistics of a backed matrix match those of the same matrix in memory.
    """
    blocks = matrix.blocks() if isinstance(matrix, BackedLogNorm) else \
        iter_row_blocks(matrix, desc="Gene means and variances")
    n_rows, n_genes = matrix.shape
    total = np.zeros(n_genes, dtype=np.float64)
    total_sq = np.zeros(n_genes, dtype=np.float64)
    for _, _, block in blocks:
        x = block if transform is None else transform(block)
        if sparse.issparse(x):
            x = sparse.csr_matrix(x, dtype=np.float64)
            total += np.asarray(x.sum(axis=0)).ravel()
            total_sq += np.asarray(x.multiply(x).sum(axis=0)).ravel()
        else:
            x = np.asarray(x, dtype=np.float64)
            total += x.sum(axis=0)
            total_sq += (x * x).sum(axis=0)
    mean = total / max(n_rows, 1)
    var = total_sq / max(n_rows, 1) - mean**2
    if n_rows > 1:
        var *= n_rows / (n_rows - 1)
    return mean, var


def seurat_dispersions_norm(mean: np.ndarray, var: np.ndarray, *, n_bins: int = 20) -> np.ndarray:
    """Normalised dispersions of scanpy's ``flavor="seurat"`` from per-gene mean and variance.

    `mean` and `var` are of the expression on the count scale (``expm1`` of log-normalised
    data). As ``sc.pp.highly_variable_genes(flavor="seurat")``: log dispersion, z-scored within
    `n_bins` bins of log1p mean; a gene alone in its bin gets 1.
    """
    mean = np.array(mean, dtype=np.float64)
    mean[mean == 0] = 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.asarray(var, dtype=np.float64) / mean
        dispersion[dispersion == 0] = np.nan
        dispersion = np.log(dispersion)
    df = pd.DataFrame({"means": np.log1p(mean), "dispersions": dispersion})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    alone = stats["dev"].isnull()
    stats.loc[alone, "dev"] = stats.loc[alone, "avg"]
    stats.loc[alone, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    return ((df["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy(dtype=float)
