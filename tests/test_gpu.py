"""Every model trains, pretrains and predicts on CUDA, in fp32 and in bf16 mixed precision.

Marked ``gpu`` and skipped without CUDA (CI has none); run on a GPU machine with
``python -m pytest -q -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scattn as sa
from tests.conftest import TINY_ARCH, make_counts, tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("name", list(TINY_ARCH))
def test_trains_and_predicts_on_cuda(name, precision):
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    data = make_counts(120, seed=2)
    model = tiny_model(name, data)
    if hasattr(model, "pretrain"):
        model.pretrain(max_epochs=1, accelerator="gpu", devices=1, precision=precision)
        assert model.is_pretrained_
    model.train(max_epochs=2, accelerator="gpu", devices=1, precision=precision)
    assert model.is_trained_
    assert next(model.module.parameters()).device.type == "cuda"
    assert np.isfinite(model.history_["train_loss"].to_numpy(dtype=float)).all()
    z = model.get_latent_representation()
    assert z.shape[0] == data.n_obs and np.isfinite(z).all()
    query = make_counts(40, seed=3)
    if name == "SCVIT":
        model.predict(query)
        assert np.isfinite(query.obsm["X_scvit"]).all()
    else:
        result = model.predict(query, inplace=False)
        assert len(result.prediction) == 40
        assert np.isfinite(result.probabilities.to_numpy(dtype=float)).all()
