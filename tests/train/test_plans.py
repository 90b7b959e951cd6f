"""Training plans name the objective; the module runs it."""

from __future__ import annotations

import pytest
import torch
from scvi import REGISTRY_KEYS

from scattn.module import OBJECTIVES, CFANModule, SIMSModule
from scattn.train import ClassificationPlan, GenerativePlan, MaskedPretrainingPlan


def _sims():
    return SIMSModule(20, 3, torch.arange(10), n_d=4, n_a=4, n_steps=2, virtual_batch_size=8)


def test_plans_pass_their_objective():
    module = _sims()
    assert ClassificationPlan(module).loss_kwargs["objective"] == OBJECTIVES.CLASSIFICATION
    masked = MaskedPretrainingPlan(module, mask_ratio=0.25)
    assert masked.loss_kwargs["objective"] == OBJECTIVES.MASKED
    assert masked.inference_kwargs() == {"mask_ratio": 0.25}
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedPretrainingPlan(module, mask_ratio=1.0)


def test_plan_refuses_an_objective_the_module_lacks():
    cfan = CFANModule(20, 3, torch.arange(10), n_extractors=2, n_features=4, n_qk=4, n_values=4,
                      conv_channels=2)
    with pytest.raises(ValueError, match="cannot be trained for 'masked'"):
        MaskedPretrainingPlan(cfan)
    with pytest.raises(ValueError, match="cannot be trained for 'generative'"):
        GenerativePlan(cfan)


def test_masked_plan_forward_reconstructs_and_never_reads_labels():
    module = _sims()
    plan = MaskedPretrainingPlan(module, mask_ratio=0.5)
    x = torch.rand(8, 20) * 5
    labels = torch.full((8, 1), 99)  # nonsense labels: a classification loss would fail on them
    inference, _, loss = plan.forward({REGISTRY_KEYS.X_KEY: x, REGISTRY_KEYS.LABELS_KEY: labels},
                                      loss_kwargs=plan.loss_kwargs)
    assert "reconstruction" in inference and torch.isfinite(loss.loss)
