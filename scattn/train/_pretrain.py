"""Masked self-supervised pretraining as an scvi-tools training plan."""

from __future__ import annotations

from scattn.module import OBJECTIVES

from ._plans import ObjectivePlan


class MaskedPretrainingPlan(ObjectivePlan):
    """Train a module to reconstruct randomly hidden inputs instead of predicting labels.

    Every forward pass (training and validation) asks the module's ``inference`` for
    ``mask_ratio``-masked reconstruction and its ``masked`` objective (see
    :class:`~scattn.module.SIMSModule`); labels are never read, so unlabelled cells count like
    labelled ones. Everything else (optimiser, learning-rate schedule, logging as
    ``train_loss`` / ``validation_loss``) is scvi-tools' :class:`~scvi.train.TrainingPlan`.

    Parameters
    ----------
    module
        A module with the ``masked`` objective whose ``inference`` accepts ``mask_ratio``.
    mask_ratio
        Probability that an input is hidden, in (0, 1).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``...).
    """

    objective = OBJECTIVES.MASKED

    def __init__(self, module, *, mask_ratio: float = 0.2, **kwargs) -> None:
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}.")
        super().__init__(module, **kwargs)
        self.mask_ratio = mask_ratio

    def inference_kwargs(self) -> dict:
        """Masked reconstruction switched on."""
        return {"mask_ratio": self.mask_ratio}
