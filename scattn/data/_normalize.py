"""Normalisation shared by every model: library-size scaling then log1p, sparse-preserving."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._validate import Expression

TARGET_SUM = 1e4


def log_normalize(matrix, expression: Expression, *, target_sum: float = TARGET_SUM):
    """Return log1p(counts / library * target_sum) as float32 (CSR if the input is sparse).

    Log-normalised input (``expression="log1p"``) is returned as float32 unchanged. The same
    arithmetic runs on minibatches inside the modules, so embeddings computed here and there
    agree.
    """
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
