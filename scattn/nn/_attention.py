"""Multi-head self-attention that returns its weights only when asked."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention over a token sequence.

    Training and plain inference use the fused
    :func:`torch.nn.functional.scaled_dot_product_attention`; with
    ``return_attention=True`` the softmax is computed explicitly and the weights come back.
    Both paths give the same output.

    Parameters
    ----------
    d_model
        Token width (divisible by `n_heads`).
    n_heads
        Number of heads.
    dropout
        Dropout on the attention weights while training.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}).")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, *, attn_mask: torch.Tensor | None = None, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, T, d)`` tokens -> ``(B, T, d)`` and, if asked, ``(B, heads, T, T)`` weights.

        `attn_mask`: a boolean ``(T, T)`` or ``(B, 1, T, T)`` mask, `True` where a query may
        attend, or an additive float mask.
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if not return_attention:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
            weights = None
        else:
            scores = (q @ k.transpose(-2, -1)) / self.head_dim**0.5
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
                    else scores + attn_mask
            weights = scores.softmax(-1)
            out = F.dropout(weights, p) @ v
        return self.out(out.transpose(1, 2).reshape(b, t, d)), weights

    def head_norms(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``(B, heads, T)``: the norm of each head's contribution to each output token,
        ``||sum_j a_ij f_h(x_j)||`` with ``f_h`` the head's value and output maps (Kobayashi
        et al. 2020, "Attention is not only a weight").

        `x` is the attention's input and `weights` its ``(B, heads, T, T)`` attention (from
        ``forward(..., return_attention=True)``).
        """
        b, t, d = x.shape
        v = self.qkv(x)[..., 2 * d :].view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        w_out = self.out.weight.view(d, self.n_heads, self.head_dim)
        contribution = torch.einsum("bhtk,ehk->bhte", weights @ v, w_out)
        return contribution.norm(dim=-1)
