"""Reusable torch blocks."""

from ._feature_attention import FeatureExtractors, FeatureSelfAttention
from ._local_attention import (
    GeneGroups,
    LocalAttentionBlock,
    LocalMultiheadAttention,
    dense_masked_attention,
    project_tokens,
)
from ._tabnet import (
    AttentiveTransformer,
    FeatureTransformer,
    GhostBatchNorm,
    GLULayer,
    TabNetDecoder,
    TabNetEncoder,
    sparsemax,
)

__all__ = [
    "AttentiveTransformer",
    "FeatureExtractors",
    "FeatureSelfAttention",
    "FeatureTransformer",
    "GLULayer",
    "GeneGroups",
    "GhostBatchNorm",
    "LocalAttentionBlock",
    "LocalMultiheadAttention",
    "TabNetDecoder",
    "TabNetEncoder",
    "dense_masked_attention",
    "project_tokens",
    "sparsemax",
]
