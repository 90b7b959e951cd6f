"""The best-weights rule of :class:`scattn.train.BestValidationWeights`, on logged values."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from scattn.train import BestValidationWeights


class _Module(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def _run(callback: BestValidationWeights, epochs: list[dict]) -> float:
    """Feed `epochs` (logged metrics, one dict per validation) to `callback`, the weight set to
    the epoch number before each; return the weight the callback loads at the end."""
    module = _Module()
    pl_module = SimpleNamespace(module=module)
    for epoch, metrics in enumerate(epochs):
        module.w.data.fill_(epoch)
        trainer = SimpleNamespace(sanity_checking=False, current_epoch=epoch,
                                  callback_metrics={k: torch.tensor(v) for k, v in metrics.items()})
        callback.on_validation_end(trainer, pl_module)
    module.w.data.fill_(-1.0)
    callback.on_train_end(None, pl_module)
    return float(module.w)


EPOCHS = [  # the loss rises from the first epoch while the accuracy climbs, then ties
    {"validation_loss": 1.0, "accuracy_validation": 0.2},
    {"validation_loss": 1.5, "accuracy_validation": 0.5},
    {"validation_loss": 1.2, "accuracy_validation": 0.5},
    {"validation_loss": float("nan"), "accuracy_validation": 0.9},
    {"validation_loss": 1.3, "accuracy_validation": 0.4},
]


def test_highest_accuracy_then_lowest_loss():
    """Not the untrained epoch 0 (lowest loss): the best accuracy, the tie to the lower loss;
    a NaN loss never counts."""
    callback = BestValidationWeights()
    assert _run(callback, EPOCHS) == 2.0
    assert callback.epoch == 2


def test_loss_alone_without_accuracy():
    """Without a logged accuracy (a generative model), or with `accuracy=None`: the lowest loss."""
    no_accuracy = [{"validation_loss": e["validation_loss"]} for e in EPOCHS]
    assert _run(BestValidationWeights(), no_accuracy) == 0.0
    assert _run(BestValidationWeights(accuracy=None), EPOCHS) == 0.0


def test_sanity_check_and_missing_loss_ignored():
    """Lightning's sanity check and a validation without the loss keep nothing; nothing kept,
    nothing loaded."""
    callback = BestValidationWeights()
    module = _Module()
    trainer = SimpleNamespace(sanity_checking=True, current_epoch=0,
                              callback_metrics={"validation_loss": torch.tensor(0.1)})
    callback.on_validation_end(trainer, SimpleNamespace(module=module))
    callback.on_validation_end(SimpleNamespace(sanity_checking=False, current_epoch=0, callback_metrics={}),
                               SimpleNamespace(module=module))
    module.w.data.fill_(7.0)
    callback.on_train_end(None, SimpleNamespace(module=module))
    assert float(module.w) == 7.0 and callback.epoch is None
