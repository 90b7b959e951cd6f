"""Rank-value encoding (Geneformer's tokeniser), vectorised over sparse row blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import sparse

from scattn.nn import rank_tokens

from ._normalize import TARGET_SUM
from ._validate import iter_row_blocks

#: log10 range and bins of the streamed median histogram (values normalised to 10,000 per cell)
_LOG_LO, _LOG_HI, _N_BINS = -4.0, 5.0, 2048


def _normalised_block(block, expression: str, target_sum: float) -> sparse.csr_matrix:
    """A row block as CSR float64 of counts scaled to `target_sum` per cell (log1p undone)."""
    x = sparse.csr_matrix(block, dtype=np.float64)
    if expression == "log1p":
        x.data = np.expm1(x.data)
        return x
    total = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(target_sum, total, out=np.zeros_like(total), where=total > 0)
    x.data *= np.repeat(scale, np.diff(x.indptr))
    return x


def gene_nonzero_medians(matrix, *, expression: Literal["counts", "log1p"] = "counts",
                         target_sum: float = TARGET_SUM, chunk_size: int | None = None) -> np.ndarray:
    """Each gene's median over the cells expressing it, of its counts scaled to `target_sum` per
    cell (Geneformer's normalisation factor), streamed over row blocks.

    The values are binned on a log scale (2,048 bins from 1e-4 to 1e5, 0.44% apart) and the
    median is interpolated within its bin, so a backed matrix is read once, block by block,
    in memory proportional to the genes. A gene no cell expresses gets the median of the other
    genes' medians (it then neither gains nor loses rank by its factor).

    Parameters
    ----------
    matrix
        Cells x genes counts (or log1p of normalised counts with ``expression="log1p"``),
        dense, sparse or backed.
    expression, target_sum
        Kind of values and the per-cell total they are scaled to.
    chunk_size
        Rows per block of a backed matrix.

    Returns
    -------
    ``(genes,)`` float64 medians.
    """
    n_genes = matrix.shape[1]
    hist = np.zeros((n_genes, _N_BINS), dtype=np.int64)
    width = (_LOG_HI - _LOG_LO) / _N_BINS
    for _, _, block in iter_row_blocks(matrix, chunk_size, desc="Gene medians"):
        x = _normalised_block(block, expression, target_sum).tocoo()
        keep = x.data > 0
        b = np.clip(((np.log10(x.data[keep]) - _LOG_LO) / width).astype(np.int64), 0, _N_BINS - 1)
        np.add.at(hist, (x.col[keep], b), 1)
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1]
    medians = np.full(n_genes, np.nan)
    seen = n > 0
    half = n[seen] / 2.0
    b = (cum[seen] < half[:, None]).sum(axis=1)  # the bin holding the middle value
    before = np.where(b > 0, cum[seen, np.maximum(b - 1, 0)], 0)
    in_bin = hist[seen, b]
    frac = np.clip((half - before) / np.maximum(in_bin, 1), 0, 1)
    medians[seen] = 10 ** (_LOG_LO + (b + frac) * width)
    if seen.any():
        medians[~seen] = np.median(medians[seen])
    else:
        medians[:] = 1.0
    return medians


@dataclass
class RankTokens:
    """Rank-value tokens of cells.

    Attributes
    ----------
    input_ids
        ``(cells, max_length)`` token ids, padded with the pad id.
    lengths
        Tokens per cell (special tokens included).
    """

    input_ids: np.ndarray
    lengths: np.ndarray


def rank_value_encode(matrix, token_ids: np.ndarray, medians: np.ndarray, *, max_length: int = 2048,
                      expression: Literal["counts", "log1p"] = "counts", target_sum: float = TARGET_SUM,
                      pad_id: int = 0, cls_id: int | None = None, eos_id: int | None = None,
                      chunk_size: int | None = None) -> RankTokens:
    """Geneformer's rank-value encoding of each cell.

    Each cell's counts are scaled to `target_sum`, divided by each gene's `medians` (its
    non-zero median over the pretraining corpus, :func:`gene_nonzero_medians`), and the
    expressed genes of the vocabulary are listed by decreasing value (in float64, as
    Geneformer's tokeniser; ties by token id, whatever the order of the matrix's columns),
    truncated to `max_length` tokens, special tokens included: with `cls_id` a ``<cls>``
    first, with `eos_id` an ``<eos>`` after the genes (Geneformer V2: ``<cls>``, at most
    ``max_length - 2`` genes, ``<eos>``). A backed matrix is read block by block; each block is
    ranked by :func:`rank_tokens`, the kernel the models run on every minibatch, so files and
    models tokenise alike.

    Parameters
    ----------
    matrix
        Cells x genes counts (or log1p values with ``expression="log1p"``).
    token_ids
        ``(genes,)`` token id of each gene, -1 for genes outside the vocabulary (ignored).
    medians
        ``(genes,)`` normalisation factors (positive; ``inf`` leaves a gene out of the tokens).
    max_length
        Tokens per cell at most (Geneformer V1: 2,048; V2: 4,096).
    expression, target_sum
        Kind of values and the per-cell total.
    pad_id, cls_id, eos_id
        Padding id; the ``<cls>`` id to put first and the ``<eos>`` id to put after the genes
        (`None`: none).
    chunk_size
        Rows per block of a backed matrix.
    """
    n_cells, n_genes = matrix.shape
    token_ids = np.asarray(token_ids, dtype=np.int64)
    medians = np.asarray(medians, dtype=np.float64)
    if token_ids.shape != (n_genes,) or medians.shape != (n_genes,):
        raise ValueError(f"token_ids and medians need one entry per gene ({n_genes}).")
    if not np.all(medians > 0):  # NaN fails too
        raise ValueError("medians must be positive (inf leaves a gene out).")
    n_special = (cls_id is not None) + (eos_id is not None)
    if max_length <= n_special:
        raise ValueError(f"max_length must be > {n_special}, got {max_length}.")
    out = np.full((n_cells, max_length), pad_id, dtype=np.int64)
    lengths = np.zeros(n_cells, dtype=np.int64)
    # the vocabulary's columns in token-id order: a stable sort then breaks ties by token id
    in_vocab = np.flatnonzero(token_ids >= 0)
    cols = in_vocab[np.argsort(token_ids[in_vocab], kind="stable")]
    ids_t = torch.from_numpy(token_ids[cols])
    col_medians = medians[cols]
    rows_per_pass = max(1, min(1024, 2**24 // max(len(cols), 1)))  # dense passes of <= 64 MiB
    for start, stop, block in iter_row_blocks(matrix, chunk_size, desc="Rank-value tokens"):
        x = _normalised_block(block, expression, target_sum)[:, cols].tocsr()
        x.data /= col_medians[x.indices]
        for lo in range(0, stop - start, rows_per_pass):
            part = x[lo : lo + rows_per_pass]
            ids, n, _ = rank_tokens(torch.from_numpy(part.toarray()), ids_t, max_length=max_length,
                                    pad_id=pad_id, cls_id=cls_id, eos_id=eos_id)
            out[start + lo : start + lo + part.shape[0], : ids.shape[1]] = ids.numpy()
            lengths[start + lo : start + lo + part.shape[0]] = n.numpy()
    return RankTokens(out, lengths)
