"""Lightning callbacks the models' training shares."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback


class BestValidationWeights(Callback):
    """Keep a copy of the module's weights at the lowest validation loss; load it when training
    ends (not after an interruption, which keeps the last finished epoch's).

    Parameters
    ----------
    monitor
        The logged metric to minimise.
    """

    def __init__(self, monitor: str = "validation_loss") -> None:
        self.monitor = monitor
        self.best = float("inf")
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if value < self.best:  # NaN never is
            self.best, self.epoch = value, trainer.current_epoch
            # on the CPU: an accelerator's memory holds the training weights only
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.module.state_dict().items()}

    def on_train_end(self, trainer, pl_module) -> None:
        if self.state is not None:
            pl_module.module.load_state_dict(self.state)


def restore_best_weights(trainer_kwargs: dict) -> None:
    """Add :class:`BestValidationWeights` to a run's trainer arguments, validating every epoch
    unless asked otherwise (also without early stopping)."""
    trainer_kwargs["callbacks"] = [*(trainer_kwargs.get("callbacks") or []), BestValidationWeights()]
    trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
