"""Cell and gene embeddings by matrix factorisation (CGRAN section 3.2.1), with fold-in.

Both factorisations end in the same pair: a gene embedding ``B`` (genes x m) and a linear
fold-in ``P`` (genes x m) such that a cell's embedding is ``a = x @ P`` for its normalised
profile ``x``. For the training cells this reproduces the factorisation's own cell
embeddings, and new cells are folded into the same basis with no refit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import sparse

EmbeddingMethod = Literal["svd", "gd"]


@dataclass
class Embedding:
    """Gene embeddings and the cell fold-in of one factorisation."""

    gene_embedding: np.ndarray  # genes x m
    projection: np.ndarray  # genes x m, cell embedding = x @ projection
    singular_values: np.ndarray | None = None


def svd_embedding(matrix, n_components: int, *, seed: int = 0) -> Embedding:
    """Truncated SVD ``M ~ X S Y^T`` with ``A = X S^1/2`` and ``B = Y S^1/2`` (first m dims).

    The fold-in is ``P = Y S^-1/2``: ``M P = X S^1/2 = A``. The matrix is not centred (the
    paper factorises ``M`` itself) and a sparse matrix stays sparse.
    """
    from sklearn.utils.extmath import randomized_svd

    n_components = _check_components(matrix, n_components)
    mat = matrix.astype(np.float32) if sparse.issparse(matrix) else np.asarray(matrix, np.float32)
    _, s, vt = randomized_svd(mat, n_components, n_iter=7, random_state=seed)
    sqrt_s = np.sqrt(s)
    keep = s > s[0] * 1e-7
    inv = np.divide(1.0, sqrt_s, out=np.zeros_like(sqrt_s), where=keep)
    v = vt.T
    return Embedding(
        gene_embedding=(v * sqrt_s).astype(np.float32),
        projection=(v * inv).astype(np.float32),
        singular_values=s.astype(np.float32),
    )


def gd_embedding(
    matrix,
    n_components: int,
    *,
    seed: int = 0,
    n_epochs: int = 200,
    lr: float = 1e-2,
    batch_size: int = 1024,
) -> Embedding:
    """Factorise ``M ~ A B^T`` by gradient descent on the mean squared error (paper eq. 4).

    ``A`` and ``B`` start random (seeded) and are fitted with Adam over minibatches of cells.
    Cells are then folded in by least squares against the fitted ``B``:
    ``P = B (B^T B)^-1``, which is the optimal ``A`` for a fixed ``B``.
    """
    n_components = _check_components(matrix, n_components)
    n_cells, n_genes = matrix.shape
    gen = torch.Generator().manual_seed(seed)
    a = torch.nn.Parameter(0.1 * torch.randn(n_cells, n_components, generator=gen))
    b = torch.nn.Parameter(0.1 * torch.randn(n_genes, n_components, generator=gen))
    opt = torch.optim.Adam([a, b], lr=lr)
    csr = sparse.csr_matrix(matrix, dtype=np.float32)
    for _ in range(n_epochs):
        order = torch.randperm(n_cells, generator=gen).numpy()
        for start in range(0, n_cells, batch_size):
            idx = order[start : start + batch_size]
            target = torch.from_numpy(csr[idx].toarray())
            loss = torch.nn.functional.mse_loss(a[idx] @ b.T, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    gene = b.detach().numpy().astype(np.float64)
    proj = gene @ np.linalg.pinv(gene.T @ gene)
    return Embedding(gene_embedding=gene.astype(np.float32), projection=proj.astype(np.float32))


def factorize(matrix, n_components: int, *, method: EmbeddingMethod = "svd", seed: int = 0):
    """Dispatch to :func:`svd_embedding` or :func:`gd_embedding`."""
    if method == "svd":
        return svd_embedding(matrix, n_components, seed=seed)
    if method == "gd":
        return gd_embedding(matrix, n_components, seed=seed)
    raise ValueError(f"embedding_method must be 'svd' or 'gd', got {method!r}.")


def _check_components(matrix, n_components: int) -> int:
    if n_components < 1:
        raise ValueError(f"n_embedding must be >= 1, got {n_components}.")
    limit = min(matrix.shape) - 1
    if limit < 1:
        raise ValueError(f"Cannot factorise a {matrix.shape[0]} x {matrix.shape[1]} matrix.")
    return min(n_components, limit)
