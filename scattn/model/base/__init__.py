"""Mixins shared by scattn models."""

from ._classifier import UNKNOWN, ClassifierMixin, validate_setup
from ._data import AlignedDataMixin
from ._results import PredictionResult

__all__ = ["UNKNOWN", "AlignedDataMixin", "ClassifierMixin", "PredictionResult", "validate_setup"]
