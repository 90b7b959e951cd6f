"""The model core: a base class and one mixin per capability; each model declares what it is.

* :class:`ScattnModel`: set-up fields (labels optional, batch, covariates), the model's
  genes and gene alignment, fitted state through the constructor, training runs, save/load.
* :class:`LatentMixin`: ``get_latent_representation``.
* :class:`AttentionMixin`: ``get_attention``, the top-k attribution layer, markers.
* :class:`ClassifierMixin`: ``train`` for labels, ``predict``, ``predict_proba``.
* :class:`PretrainingMixin`: ``pretrain``, ``is_pretrained_``, ``from_pretrained``.
* :class:`QueryMixin`: ``load_query_data``.
* :class:`VocabularyMixin`: gene-token models matching genes by ID through a vocabulary.
"""

from ._attention import AttentionMixin
from ._base import ScattnModel, validate_setup
from ._classifier import UNKNOWN, ClassifierMixin
from ._data import AlignedDataMixin
from ._fitted import FittedState, Source, weights_fingerprint
from ._latent import LatentMixin
from ._panel import GenePanelClassifier
from ._pretraining import PretrainingMixin
from ._query import QueryMixin
from ._results import EmbeddingResult, PredictionResult
from ._vocabulary import VocabularyMixin

__all__ = [
    "UNKNOWN",
    "AlignedDataMixin",
    "AttentionMixin",
    "ClassifierMixin",
    "EmbeddingResult",
    "FittedState",
    "GenePanelClassifier",
    "LatentMixin",
    "PredictionResult",
    "PretrainingMixin",
    "QueryMixin",
    "ScattnModel",
    "Source",
    "VocabularyMixin",
    "validate_setup",
    "weights_fingerprint",
]
