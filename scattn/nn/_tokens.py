"""Rank-value tokens of a minibatch: the ranking kernel token models run on every minibatch."""

from __future__ import annotations

import torch


def rank_tokens(values: torch.Tensor, token_ids: torch.Tensor, *, max_length: int, pad_id: int = 0,
                cls_id: int | None = None, eos_id: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-value tokens of a dense minibatch (the kernel behind :func:`rank_value_encode`).

    Each row's positive `values` are listed by decreasing value (ties by column, a stable
    sort), truncated to `max_length` tokens, special tokens included: with `cls_id` a
    ``<cls>`` first, with `eos_id` an ``<eos>`` right after the last gene (Geneformer V2's
    ``<cls>`` + genes + ``<eos>``, the genes cut to ``max_length - 2``). Columns whose token
    id is negative (outside the vocabulary) are ignored. The sequence is as long as the
    longest row needs, not `max_length`: a minibatch of short cells gives short sequences.

    Parameters
    ----------
    values
        ``(B, G)`` each gene's value divided by its normalisation factor; the per-cell scale
        does not matter (ranks are within a cell).
    token_ids
        ``(G,)`` token id per column, -1 outside the vocabulary.
    max_length
        Tokens per cell at most, `<cls>` and `<eos>` included.
    pad_id, cls_id, eos_id
        Padding id; the ``<cls>`` id to put first and the ``<eos>`` id to put after the genes
        (`None`: none).

    Returns
    -------
    ``input_ids`` ``(B, T)``, ``lengths`` ``(B,)`` (tokens per cell, `<cls>` and `<eos>`
    included) and ``columns`` ``(B, T)``: each token's column in `values` (-1 for `<cls>`,
    `<eos>` and padding).
    """
    n_special = (cls_id is not None) + (eos_id is not None)
    if max_length <= n_special:
        raise ValueError(f"max_length must be > {n_special} (the special tokens take "
                         f"{n_special}), got {max_length}.")
    b = values.shape[0]
    values = values.masked_fill((token_ids < 0)[None, :], 0)
    n_genes = (values > 0).sum(dim=1).clamp(max=max_length - n_special)
    n = int(n_genes.max()) if b else 0
    _, order = torch.sort(values, dim=1, descending=True, stable=True)
    order = order[:, :n]
    valid = torch.arange(n, device=values.device)[None, :] < n_genes[:, None]
    ids = token_ids[order].masked_fill(~valid, pad_id)
    columns = order.masked_fill(~valid, -1)
    if eos_id is not None:  # one more position; <eos> right after each cell's last gene
        ids = torch.cat([ids, torch.full((b, 1), pad_id, dtype=ids.dtype, device=ids.device)], dim=1)
        ids.scatter_(1, n_genes[:, None], eos_id)
        columns = torch.cat([columns, torch.full((b, 1), -1, dtype=columns.dtype,
                                                 device=columns.device)], dim=1)
    if cls_id is not None:
        ids = torch.cat([torch.full((b, 1), cls_id, dtype=ids.dtype, device=ids.device), ids], dim=1)
        columns = torch.cat([torch.full((b, 1), -1, dtype=columns.dtype, device=columns.device),
                             columns], dim=1)
    return ids, n_genes + n_special, columns


def bin_values(values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Per-cell quantile bins of the non-zero values of a dense minibatch (scGPT's value
    binning, vectorised).

    Zero (or negative) stays bin 0. The positive values of a cell are mapped onto bins
    ``1 .. n_bins - 1`` by their position among the cell's own positive values, as scGPT's
    ``digitize`` against ``n_bins - 1`` quantiles from the minimum to the maximum does: a value
    ``v`` whose last copy sits at 0-based position ``j`` of the cell's ``n`` sorted positive
    values gets ``1 + floor((n_bins - 2) * j / (n - 1))`` (the minimum bin 1, the maximum bin
    ``n_bins - 1``; ``n = 1``: bin ``n_bins - 1``), ties sharing a bin. Per cell and rank-based,
    bins do not depend on the library size or on a log transform.

    Parameters
    ----------
    values
        ``(B, G)`` expression (counts or any monotone transform of them).
    n_bins
        Number of bins, bin 0 included (scGPT: 51).

    Returns
    -------
    ``(B, G)`` long bin indices in ``0 .. n_bins - 1``.
    """
    if n_bins < 3:
        raise ValueError(f"n_bins must be >= 3, got {n_bins}.")
    positive = values > 0
    x = values.masked_fill(~positive, 0)
    ordered, _ = torch.sort(x, dim=1)
    at_most = torch.searchsorted(ordered.contiguous(), x.contiguous(), right=True)  # values <= v
    n_zero = (~positive).sum(dim=1, keepdim=True)
    n_pos = positive.sum(dim=1, keepdim=True)
    j = (at_most - n_zero - 1).clamp_min(0)
    bins = 1 + torch.div((n_bins - 2) * j, (n_pos - 1).clamp_min(1), rounding_mode="floor")
    bins = torch.where(n_pos == 1, torch.full_like(bins, n_bins - 1), bins)
    return bins.masked_fill(~positive, 0)


def expressed_tokens(values: torch.Tensor, token_ids: torch.Tensor, *, max_length: int, pad_id: int = 0,
                     cls_id: int | None = None, generator: torch.Generator | None = None,
                     sample: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens of each cell's expressed genes (scGPT's input: non-zero genes only).

    Like :func:`rank_tokens` (same outputs), but when a cell expresses more than
    ``max_length`` (minus ``<cls>``) genes, ``sample=True`` keeps a uniform random subset of
    them (scGPT's training) and ``sample=False`` the most expressed ones (deterministic, for
    inference). Token order carries no meaning for a model without position embeddings.
    """
    if sample:
        keys = torch.rand(values.shape, generator=generator, device=values.device) + 1.0
        keys = keys.masked_fill(~(values > 0), 0)
    else:
        keys = values
    return rank_tokens(keys, token_ids, max_length=max_length, pad_id=pad_id, cls_id=cls_id)


def tokens_to_genes(per_token: torch.Tensor, columns: torch.Tensor, n_genes: int) -> torch.Tensor:
    """``(B, T)`` values of tokens -> ``(B, n_genes)`` by each token's column (`columns` from
    :func:`rank_tokens`, -1 for special tokens and padding, which are dropped); 0 where a
    cell has no token of that gene."""
    out = per_token.new_zeros(per_token.shape[0], n_genes)
    is_gene = columns >= 0
    return out.scatter_add_(1, columns.clamp_min(0), per_token * is_gene.to(per_token.dtype))


#: how a token model turns its token states into one cell embedding
POOLINGS = ("cls", "mean")


def pool_tokens(h: torch.Tensor, columns: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(B, T, d)`` token states -> ``(B, d)`` cell embedding: the first token's state
    (``pooling="cls"``, the ``<cls>`` token) or the mean of the gene tokens' states (``"mean"``;
    `columns` ``(B, T)`` is each token's gene, negative for special tokens and padding, which
    are left out; a cell with no gene token gets zeros)."""
    if pooling == "cls":
        return h[:, 0]
    if pooling != "mean":
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    is_gene = (columns >= 0).unsqueeze(-1).to(h.dtype)
    return (h * is_gene).sum(1) / is_gene.sum(1).clamp_min(1.0)


def received_attention(weights: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(B, heads, T, T)`` attention -> ``(B, heads, T)`` the attention each token receives,
    read as the pooling reads the tokens: from the first token (``"cls"``) or averaged over the
    ``lengths`` real (non-padding) querying tokens (``"mean"``)."""
    if pooling == "cls":
        return weights[:, :, 0, :]
    t = weights.shape[-1]
    real = (torch.arange(t, device=weights.device)[None, :] < lengths[:, None]).to(weights.dtype)
    return (weights * real[:, None, :, None]).sum(2) / lengths[:, None, None].to(weights.dtype).clamp_min(1.0)
