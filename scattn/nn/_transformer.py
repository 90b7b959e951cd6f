"""A transformer encoder block (BERT's layout) that returns its attention only when asked."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._attention import SelfAttention

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def padding_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(B, 1, 1, T)`` boolean attention mask: `True` at the first ``lengths[b]`` tokens.

    Pass it as ``attn_mask`` so that no query attends to padding.
    """
    keep = torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]
    return keep[:, None, None, :]


def run_blocks(blocks, h: torch.Tensor, mask: torch.Tensor | None, attention: str = "none"
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pass `h` through `blocks` (:class:`TransformerBlock`) under `mask`; return the last
    states and the ``(B, heads, T, T)`` attention of the last block (``attention="last"``),
    of every block (``"all"``) or of none (``"none"``: the fused kernel throughout)."""
    if attention not in ("none", "last", "all"):
        raise ValueError(f"attention must be 'none', 'last' or 'all', got {attention!r}.")
    weights = []
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        want = attention == "all" or (attention == "last" and i == last)
        h, w = block(h, attn_mask=mask, return_attention=want)
        if w is not None:
            weights.append(w)
    return h, weights


class TransformerBlock(nn.Module):
    """Self-attention and a feed-forward network, each with a residual connection and layer
    norm after it (post-norm, as BERT and Geneformer; `norm_first` for pre-norm).

    Training and plain inference run the fused attention kernel; ``return_attention=True``
    returns the ``(B, heads, T, T)`` weights too (see :class:`SelfAttention`).

    Parameters
    ----------
    d_model, n_heads
        Token width and attention heads.
    d_ff
        Width of the feed-forward network.
    dropout
        Dropout after each sub-layer (and on the attention weights unless `attention_dropout`).
    attention_dropout
        Dropout on the attention weights; `None`: `dropout`. Any non-zero value makes
        :func:`~torch.nn.functional.scaled_dot_product_attention` leave its fused kernel on
        CPU (the dropout mask alone is ``B x heads x T x T`` draws).
    activation
        ``"relu"`` (Geneformer V1) or ``"gelu"`` (BERT, scGPT).
    norm_first
        Layer norm before each sub-layer instead of after.
    eps
        Layer norm epsilon (BERT: 1e-12).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, *, dropout: float = 0.0,
                 attention_dropout: float | None = None, activation: Literal["relu", "gelu"] = "relu", norm_first: bool = False,
                 eps: float = 1e-12) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}.")
        self.attention = SelfAttention(d_model, n_heads, dropout if attention_dropout is None else attention_dropout)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.ff_in = nn.Linear(d_model, d_ff)
        self.ff_out = nn.Linear(d_ff, d_model)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation
        self.norm_first = norm_first

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        # dropout after the second linear only, as BERT (and Geneformer) place it
        return self.dropout(self.ff_out(_ACTIVATIONS[self.activation](self.ff_in(x))))

    def forward(self, x: torch.Tensor, *, attn_mask: torch.Tensor | None = None,
                return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, T, d)`` -> ``(B, T, d)`` and, if asked, the attention weights."""
        if self.norm_first:
            a, w = self.attention(self.norm1(x), attn_mask=attn_mask, return_attention=return_attention)
            x = x + self.dropout(a)
            return x + self._ff(self.norm2(x)), w
        a, w = self.attention(x, attn_mask=attn_mask, return_attention=return_attention)
        x = self.norm1(x + self.dropout(a))
        return self.norm2(x + self._ff(x)), w

    def head_norms(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``(B, heads, T)`` norms of each head's contribution for block input `x` and its
        attention `weights` (see :meth:`SelfAttention.head_norms`)."""
        return self.attention.head_norms(self.norm1(x) if self.norm_first else x, weights)
