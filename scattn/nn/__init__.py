"""Reusable torch blocks."""

from ._local_attention import (
    GeneGroups,
    LocalAttentionBlock,
    LocalMultiheadAttention,
    dense_masked_attention,
    project_tokens,
)

__all__ = [
    "GeneGroups",
    "LocalAttentionBlock",
    "LocalMultiheadAttention",
    "dense_masked_attention",
    "project_tokens",
]
