"""Plots (scanpy style: keyword-only, ``ax``, ``show``, ``return_fig``)."""

from ._attention import attention_heatmap, gene_attention_heatmap, marker_dotplot
from ._evaluate import confusion_matrix
from ._features import feature_attention
from ._gene_programs import gene_programs
from ._geneformer import attention_norms, attention_shift, perturbation_shift
from ._history import training_history
from ._importances import class_importances, feature_importances

__all__ = [
    "attention_heatmap",
    "attention_norms",
    "attention_shift",
    "class_importances",
    "confusion_matrix",
    "feature_attention",
    "feature_importances",
    "gene_attention_heatmap",
    "gene_programs",
    "marker_dotplot",
    "perturbation_shift",
    "training_history",
]
