"""Training plans that name the objective the module is trained for."""

from __future__ import annotations

from scvi.train import TrainingPlan

from scattn.module import OBJECTIVES


class ObjectivePlan(TrainingPlan):
    """scvi-tools' :class:`~scvi.train.TrainingPlan` that tells the module which loss to use.

    The module's ``loss`` receives ``objective=self.objective`` (see
    :class:`~scattn.module.ScattnModule`); optimiser, schedule and logging are scvi-tools'.
    Subclasses set ``objective`` and may add inference arguments in
    :meth:`inference_kwargs`.

    Parameters
    ----------
    module
        A scattn module implementing the objective.
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``...).
    """

    objective: str = OBJECTIVES.CLASSIFICATION

    def __init__(self, module, **kwargs) -> None:
        if self.objective not in getattr(module, "objectives", ()):
            raise ValueError(f"{type(module).__name__} cannot be trained for {self.objective!r}.")
        super().__init__(module, **kwargs)
        self.loss_kwargs["objective"] = self.objective

    def inference_kwargs(self) -> dict:
        """Extra arguments of the module's ``inference`` in every forward pass."""
        return {}

    def forward(self, *args, **kwargs):
        """The module's forward with this plan's inference arguments."""
        extra = self.inference_kwargs()
        if extra:
            kwargs["inference_kwargs"] = {**(kwargs.get("inference_kwargs") or {}), **extra}
        return super().forward(*args, **kwargs)


class ClassificationPlan(ObjectivePlan):
    """Train a classifier: cross-entropy over the labelled cells (the module's
    ``classification_loss``)."""

    objective = OBJECTIVES.CLASSIFICATION


class GenerativePlan(ObjectivePlan):
    """Train a generative model (e.g. an autoencoder) on the likelihood of the observed data
    (the module's ``generative_loss``); labels are never read."""

    objective = OBJECTIVES.GENERATIVE
