"""Reusable torch blocks."""

from ._feature_attention import FeatureExtractors, FeatureSelfAttention
from ._local_attention import (
    GeneGroups,
    LocalAttentionBlock,
    LocalMultiheadAttention,
    dense_masked_attention,
    project_tokens,
)

__all__ = [
    "FeatureExtractors",
    "FeatureSelfAttention",
    "GeneGroups",
    "LocalAttentionBlock",
    "LocalMultiheadAttention",
    "dense_masked_attention",
    "project_tokens",
]
