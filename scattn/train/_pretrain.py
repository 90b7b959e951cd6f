"""Masked self-supervised pretraining as an scvi-tools training plan."""

from __future__ import annotations

from scvi.train import TrainingPlan


class MaskedPretrainingPlan(TrainingPlan):
    """Train a module to reconstruct randomly hidden inputs instead of predicting labels.

    Every forward pass (training and validation) asks the module's ``inference`` for
    ``mask_ratio``-masked reconstruction (see :class:`~scattn.module.SIMSModule`), whose
    ``loss`` then returns the reconstruction error; labels are never read, so unlabelled
    cells count like labelled ones. Everything else (optimiser, learning-rate schedule,
    logging as ``train_loss`` / ``validation_loss``) is scvi-tools' :class:`~scvi.train.TrainingPlan`.

    Parameters
    ----------
    module
        A module whose ``inference`` accepts ``mask_ratio``.
    mask_ratio
        Probability that an input is hidden, in (0, 1).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``...).
    """

    def __init__(self, module, *, mask_ratio: float = 0.2, **kwargs) -> None:
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}.")
        super().__init__(module, **kwargs)
        self.mask_ratio = mask_ratio

    def forward(self, *args, **kwargs):
        """The module's forward with masked reconstruction switched on."""
        kwargs["inference_kwargs"] = {**(kwargs.get("inference_kwargs") or {}), "mask_ratio": self.mask_ratio}
        return super().forward(*args, **kwargs)
