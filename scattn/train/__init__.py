"""Training: plans named by objective (classification, masked, generative, multitask), the
callbacks they share, every model's training defaults and the one runner all training goes
through."""

from ._callbacks import BestValidationWeights, LastEpochWeights, restore_best_weights
from ._defaults import (
    SCVI_EPOCHS,
    SETTINGS_BATCH_SIZE,
    SHARED_ARGUMENTS,
    Rule,
    StepBudget,
    TrainArgs,
    TrainDefaults,
    defaults_table,
    steps_per_epoch,
    training_cells,
)
from ._plans import ClassificationPlan, GenerativePlan, MultiTaskPlan, ObjectivePlan
from ._pretrain import MaskedPretrainingPlan
from ._runner import TrainingRunnerMixin, n_training_processes

__all__ = ["SCVI_EPOCHS", "SETTINGS_BATCH_SIZE", "SHARED_ARGUMENTS", "BestValidationWeights", "ClassificationPlan", "GenerativePlan",
           "LastEpochWeights", "MaskedPretrainingPlan", "MultiTaskPlan", "ObjectivePlan", "Rule",
           "StepBudget", "TrainArgs", "TrainDefaults", "TrainingRunnerMixin", "defaults_table",
           "n_training_processes", "restore_best_weights", "steps_per_epoch", "training_cells"]
