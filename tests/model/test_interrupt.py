"""Ctrl+C during train(): the weights of the last finished epoch stay, and training can go on."""

from __future__ import annotations

import signal

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import scattn as sa
from tests.conftest import TINY_CFAN, make_counts


class _CtrlC(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.weights = None

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch - 1:  # the last epoch that will finish
            self.weights = {k: v.detach().clone() for k, v in pl_module.module.state_dict().items()}

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def _model():
    sa.settings.seed = 0
    data = make_counts()
    sa.model.CFAN.setup_anndata(data, labels_key="cell_type", layer="counts")
    return sa.model.CFAN(data, **TINY_CFAN)


def test_interrupt_keeps_last_finished_epoch():
    model = _model()
    handler = signal.getsignal(signal.SIGINT)
    ctrl_c = _CtrlC(epoch=2)
    with pytest.warns(UserWarning, match="interrupted; the model keeps the weights of epoch 2"):
        model.train(max_epochs=5, batch_size=32, callbacks=[ctrl_c], enable_progress_bar=False)
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl+C works again afterwards
    assert model.is_trained_ and len(model.history["train_loss"]) == 2
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, ctrl_c.weights[k])
    model.predict()
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)  # continues
    assert len(model.history["train_loss"]) == 3


def test_interrupt_before_first_epoch_restores_the_model():
    model = _model()
    before = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    with pytest.warns(UserWarning, match="before its first epoch finished"):
        model.train(max_epochs=3, batch_size=32, callbacks=[_CtrlC(epoch=0)], enable_progress_bar=False)
    assert not model.is_trained_
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, before[k])


class _Exit(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise SystemExit(3)


def test_other_system_exit_is_not_taken_for_ctrl_c():
    model = _model()
    with pytest.raises(SystemExit):
        model.train(max_epochs=3, batch_size=32, callbacks=[_Exit()], enable_progress_bar=False)
    assert not model.is_trained_


def test_pretraining_interrupted_or_failed_leaves_the_model_as_it_was():
    from tests.conftest import TINY_SIMS

    sa.settings.seed = 0
    data = make_counts()
    sa.model.SIMS.setup_anndata(data, labels_key="cell_type", layer="counts")
    model = sa.model.SIMS(data, **TINY_SIMS)
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    history = model.history
    with pytest.warns(UserWarning, match="pretrain\\(\\) was interrupted before its first epoch"):
        model.pretrain(max_epochs=2, batch_size=32, callbacks=[_CtrlC(epoch=0)])
    assert not model.is_pretrained_ and model.pretrain_history_ is None
    assert model.is_trained_ and model.history is history
    with pytest.raises(TypeError):
        model.pretrain(max_epochs=1, batch_size=32, not_a_trainer_argument=1)
    assert model.is_trained_ and model.pretrain_history_ is None and model.history is history
    with pytest.warns(UserWarning, match="pretrain\\(\\) was interrupted; the model keeps"):
        model.pretrain(max_epochs=3, batch_size=32, callbacks=[_CtrlC(epoch=1)])
    assert model.is_pretrained_ and len(model.pretrain_history_["train_loss"]) == 1
    assert not model.is_trained_ and model.history is history
