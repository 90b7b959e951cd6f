"""Training plans: each names the objective (classification, masked, generative) it trains."""

from ._plans import ClassificationPlan, GenerativePlan, ObjectivePlan
from ._pretrain import MaskedPretrainingPlan

__all__ = ["ClassificationPlan", "GenerativePlan", "MaskedPretrainingPlan", "ObjectivePlan"]
