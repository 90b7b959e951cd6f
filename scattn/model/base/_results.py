"""Typed result of ``predict(..., inplace=False)``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse


@dataclass
class PredictionResult:
    """Everything `predict` would write into `adata`, returned instead.

    Attributes
    ----------
    prediction
        Predicted class per cell (categorical; ``"Unknown"`` below the unknown threshold).
    confidence
        Maximum class probability per cell.
    probabilities
        Cells x classes probabilities.
    embedding
        Cells x latent dims cell embedding.
    attention
        Sparse cells x genes attribution (top-k per cell), columns named by `var_names`
        (`None` for a model without attribution).
    var_names
        Gene names of the columns of `attention`.
    markers
        Attention-derived markers per predicted class, in scanpy's ``rank_genes_groups``
        layout (the dict that would go into ``adata.uns[f"{key}_markers"]``).
    params
        What was run.
    uns
        Model-specific results stored beside `params` in ``adata.uns[key]`` (SIMS: feature
        importances).
    """

    prediction: pd.Series
    confidence: pd.Series
    probabilities: pd.DataFrame
    embedding: np.ndarray
    attention: sparse.csr_matrix | None
    var_names: pd.Index
    markers: dict | None = None
    params: dict = field(default_factory=dict)
    uns: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        counts = self.prediction.value_counts().to_dict()
        return (
            f"PredictionResult(n_cells={len(self.prediction)}, classes={list(self.probabilities.columns)}, "
            f"predicted={counts})"
        )


@dataclass
class EmbeddingResult:
    """What an unsupervised model's `predict` would write into `adata`, returned instead.

    Attributes
    ----------
    embedding
        Cells x latent dims cell embedding.
    attention
        Sparse cells x genes attribution (top-k per cell), columns named by `var_names`.
    var_names
        Gene names of the columns of `attention`.
    params
        What was run.
    """

    embedding: np.ndarray
    attention: sparse.csr_matrix | None
    var_names: pd.Index
    params: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"EmbeddingResult(n_cells={self.embedding.shape[0]}, n_latent={self.embedding.shape[1]})"
