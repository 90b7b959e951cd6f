"""Reusable torch blocks."""

from ._attention import SelfAttention
from ._expression import (
    CategoryEncoder,
    CellExpressionDecoder,
    ExpressionDecoder,
    MLPHead,
    ValueEncoder,
    reverse_gradient,
)
from ._feature_attention import FeatureExtractors, FeatureSelfAttention, sparse_rows_linear
from ._gene_panel import GenePanel, PanelInput
from ._local_attention import (
    GeneGroups,
    LocalAttentionBlock,
    LocalMultiheadAttention,
    dense_masked_attention,
    project_tokens,
    split_heads,
)
from ._patch import (
    ConvPatchStem,
    CovariateLinear,
    LinearPatchStem,
    PatchBlock,
    PatchwiseLinear,
    n_patches,
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
from ._token_model import MaskedTokenHead, TokenEncoder
from ._tokens import (
    POOLINGS,
    bin_values,
    expressed_tokens,
    pool_tokens,
    rank_tokens,
    received_attention,
    tokens_to_genes,
)
from ._transformer import TransformerBlock, padding_mask, run_blocks

__all__ = [
    "tokens_to_genes",
    "pool_tokens",
    "received_attention",
    "POOLINGS",
    "reverse_gradient",
    "expressed_tokens",
    "bin_values",
    "ValueEncoder",
    "MLPHead",
    "ExpressionDecoder",
    "CellExpressionDecoder",
    "CategoryEncoder",
    "AttentiveTransformer",
    "ConvPatchStem",
    "CovariateLinear",
    "FeatureExtractors",
    "sparse_rows_linear",
    "FeatureSelfAttention",
    "FeatureTransformer",
    "GLULayer",
    "GeneGroups",
    "GenePanel",
    "GhostBatchNorm",
    "LocalAttentionBlock",
    "LinearPatchStem",
    "LocalMultiheadAttention",
    "MaskedTokenHead",
    "PanelInput",
    "PatchBlock",
    "PatchwiseLinear",
    "SelfAttention",
    "TabNetDecoder",
    "TransformerBlock",
    "TabNetEncoder",
    "TokenEncoder",
    "dense_masked_attention",
    "n_patches",
    "padding_mask",
    "project_tokens",
    "split_heads",
    "rank_tokens",
    "run_blocks",
    "sparsemax",
]
