"""Mechanics every model shares, run on all six."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import scattn as sa
from tests.conftest import TINY_ARCH, make_counts, tiny_model


@pytest.mark.parametrize("name", list(TINY_ARCH))
def test_few_cells_train_without_validation(name, caplog):
    """Nine cells or fewer leave none for validation at the default train_size: every model
    pretrains (where it can) and trains on all of them (no early stopping, best weights or
    plateau schedule) and says so once per run, instead of Lightning's val_dataloader error or
    scvi-tools' early-stopping error."""
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    model = tiny_model(name, make_counts(9, seed=1))
    if hasattr(model, "pretrain"):
        with caplog.at_level(logging.WARNING, logger="scattn"):
            model.pretrain(max_epochs=1)
        assert "pretrain(): 9 cells leave none for validation" in caplog.text
        assert model.is_pretrained_
        caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scattn"):
        model.train(max_epochs=2)
    said = [r.getMessage() for r in caplog.records if "none for validation" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("train(): 9 cells"), said
    assert model.is_trained_
    assert np.isfinite(model.history_["train_loss"].to_numpy(dtype=float)).all()
    assert "validation_loss" not in model.history_
    assert len(model.get_latent_representation()) == 9


@pytest.mark.parametrize("name", ["Geneformer", "SCGPT"])
def test_pretrained_only_model_embeds_without_untrained_warning(name, recwarn):
    """The zero-shot embedding of a pretrained (not fine-tuned) model is what a checkpoint is
    loaded for: no "untrained model" warning; an untouched model still warns."""
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    model = tiny_model(name, make_counts(40, seed=3), labels=False)
    model.pretrain(max_epochs=1)
    z = model.get_latent_representation()
    assert z.shape[0] == 40 and np.isfinite(z).all()
    assert not [w for w in recwarn if "untrained" in str(w.message)]
    fresh = tiny_model(name, make_counts(40, seed=3), labels=False)
    with pytest.warns(UserWarning, match="untrained"):
        fresh.get_latent_representation()
