"""Value binning (scGPT's tokeniser input), vectorised over sparse row blocks."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from scattn.nn import bin_values

from ._validate import iter_row_blocks


def value_bins(matrix, *, n_bins: int = 51, chunk_size: int | None = None,
               rows_per_step: int = 4096) -> sparse.csr_matrix:
    """Per-cell quantile bins of every non-zero value of `matrix` (scGPT's binning), streamed.

    The kernel behind :class:`scattn.model.SCGPT`'s tokens (:func:`scattn.nn.bin_values`,
    which the model runs on each minibatch), for export or inspection: bins ``1 .. n_bins - 1``
    for a cell's expressed values by their position among them (scGPT's ``digitize`` against
    ``n_bins - 1`` quantiles of the cell's non-zero values), 0 left implicit.

    Parameters
    ----------
    matrix
        Cells x genes, dense, sparse or backed (read `chunk_size` rows at a time). Counts or
        any per-cell monotone transform of them give the same bins.
    n_bins
        Number of bins, 0 included (scGPT: 51).
    chunk_size
        Rows per block of a backed matrix.
    rows_per_step
        Rows binned together (bounds the dense working memory to ``rows_per_step x genes``).

    Returns
    -------
    Cells x genes CSR of ``uint8`` bins (``int16`` above 255 bins), with the sparsity of `matrix`.
    """
    dtype = np.uint8 if n_bins <= 256 else np.int16
    out = []
    for _, _, block in iter_row_blocks(matrix, chunk_size, desc="Binning values"):
        block = sparse.csr_matrix(block)
        for start in range(0, block.shape[0], rows_per_step):
            part = block[start : start + rows_per_step]
            bins = bin_values(torch.as_tensor(part.toarray(), dtype=torch.float32), n_bins).numpy()
            out.append(sparse.csr_matrix(bins.astype(dtype)))
    if not out:
        return sparse.csr_matrix(matrix.shape, dtype=dtype)
    return sparse.vstack(out, format="csr")
