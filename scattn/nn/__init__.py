"""Reusable torch blocks."""

from ._feature_attention import FeatureExtractors, FeatureSelfAttention
from ._gene_panel import GenePanel, PanelInput
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
    "GenePanel",
    "GhostBatchNorm",
    "LocalAttentionBlock",
    "LocalMultiheadAttention",
    "PanelInput",
    "TabNetDecoder",
    "TabNetEncoder",
    "dense_masked_attention",
    "project_tokens",
    "sparsemax",
]
