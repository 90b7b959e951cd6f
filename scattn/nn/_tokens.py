"""Rank-value tokens of a minibatch: the ranking kernel token models run on every minibatch."""

from __future__ import annotations

import torch


def rank_tokens(values: torch.Tensor, token_ids: torch.Tensor, *, max_length: int, pad_id: int = 0,
                cls_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-value tokens of a dense minibatch (the kernel behind :func:`rank_value_encode`).

    Each row's positive `values` are listed by decreasing value (ties by column, a stable
    sort), truncated to `max_length` tokens (with `cls_id`, a ``<cls>`` first). Columns whose
    token id is negative (outside the vocabulary) are ignored. The sequence is as long as the
    longest row needs, not `max_length`: a minibatch of short cells gives short sequences.

    Parameters
    ----------
    values
        ``(B, G)`` each gene's value divided by its normalisation factor; the per-cell scale
        does not matter (ranks are within a cell).
    token_ids
        ``(G,)`` token id per column, -1 outside the vocabulary.
    max_length
        Tokens per cell at most, `<cls>` included.
    pad_id, cls_id
        Padding id; the ``<cls>`` id to put first (`None`: none).

    Returns
    -------
    ``input_ids`` ``(B, T)``, ``lengths`` ``(B,)`` (tokens per cell, `<cls>` included) and
    ``columns`` ``(B, T)``: each token's column in `values` (-1 for `<cls>` and padding).
    """
    offset = 0 if cls_id is None else 1
    if max_length <= offset:
        raise ValueError(f"max_length must be > {offset}, got {max_length}.")
    values = values.masked_fill((token_ids < 0)[None, :], 0)
    n_expressed = (values > 0).sum(dim=1)
    n = int(min(int(n_expressed.max()) if values.shape[0] else 0, max_length - offset))
    _, order = torch.sort(values, dim=1, descending=True, stable=True)
    order = order[:, :n]
    valid = torch.arange(n, device=values.device)[None, :] < n_expressed[:, None]
    ids = token_ids[order].masked_fill(~valid, pad_id)
    columns = order.masked_fill(~valid, -1)
    lengths = n_expressed.clamp(max=max_length - offset) + offset
    if cls_id is not None:
        b = values.shape[0]
        ids = torch.cat([torch.full((b, 1), cls_id, dtype=ids.dtype, device=ids.device), ids], dim=1)
        columns = torch.cat([torch.full((b, 1), -1, dtype=columns.dtype, device=columns.device),
                             columns], dim=1)
    return ids, lengths, columns
