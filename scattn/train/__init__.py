"""Training plans: each names the objective (classification, masked, generative, multitask) it trains."""

from ._plans import ClassificationPlan, GenerativePlan, MultiTaskPlan, ObjectivePlan
from ._pretrain import MaskedPretrainingPlan

__all__ = ["ClassificationPlan", "GenerativePlan", "MaskedPretrainingPlan", "MultiTaskPlan",
           "ObjectivePlan"]
