"""Mixins and the base class shared by scattn models."""

from ._classifier import UNKNOWN, ClassifierMixin, validate_setup
from ._data import AlignedDataMixin
from ._panel import GenePanelClassifier
from ._query import QueryMixin
from ._results import PredictionResult

__all__ = [
    "UNKNOWN",
    "AlignedDataMixin",
    "ClassifierMixin",
    "GenePanelClassifier",
    "PredictionResult",
    "QueryMixin",
    "validate_setup",
]
