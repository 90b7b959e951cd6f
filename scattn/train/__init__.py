"""Training plans that scvi-tools lacks."""

from ._pretrain import MaskedPretrainingPlan

__all__ = ["MaskedPretrainingPlan"]
