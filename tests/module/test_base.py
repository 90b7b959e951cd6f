"""The module contract: declared inputs, objectives chosen by name, the optional head, fitted state."""

from __future__ import annotations

import pytest
import torch
from scvi import REGISTRY_KEYS

from scattn.module import MODULE_KEYS, OBJECTIVES, CFANModule, CGRANModule, SIMSModule


def _cgran(n_labels=3):
    g = 10
    return CGRANModule(20, n_labels, torch.arange(g), torch.randn(g, 8), torch.randn(g, 8),
                       torch.arange(g).view(2, 5), n_heads=2, head_dims=(4, 4))


def test_inference_input_is_what_the_module_declares():
    module = CFANModule(20, 3, torch.arange(10), n_extractors=2, n_features=4, n_qk=4, n_values=4,
                        conv_channels=2)
    x = torch.rand(4, 20)
    inputs = module._get_inference_input({REGISTRY_KEYS.X_KEY: x, REGISTRY_KEYS.LABELS_KEY: x[:, :1]})
    assert set(inputs) == {"x"} and inputs["x"] is x
    with pytest.raises(KeyError, match="needs the registered fields"):
        module._get_inference_input({REGISTRY_KEYS.LABELS_KEY: x})


def test_objective_is_named_not_sniffed():
    module = SIMSModule(20, 3, torch.arange(10), n_d=4, n_a=4, n_steps=2, virtual_batch_size=8)
    x, y = torch.rand(8, 20) * 5, torch.tensor([[0], [1], [2], [3], [0], [1], [2], [0]])
    tensors = {REGISTRY_KEYS.X_KEY: x, REGISTRY_KEYS.LABELS_KEY: y}
    plain = module.inference(x)
    assert module.loss(tensors, plain, {}, objective=OBJECTIVES.CLASSIFICATION).loss.ndim == 0
    masked = module.inference(x, mask_ratio=0.5)
    assert float(module.loss(tensors, masked, {}, objective=OBJECTIVES.MASKED).loss) >= 0
    with pytest.raises(ValueError, match="needs inference with mask_ratio"):
        module.loss(tensors, plain, {}, objective=OBJECTIVES.MASKED)
    with pytest.raises(ValueError, match="cannot be trained for 'generative'"):
        module.loss(tensors, plain, {}, objective=OBJECTIVES.GENERATIVE)


def test_head_is_optional_and_added_later():
    module = _cgran(n_labels=None)
    x = torch.rand(4, 20)
    out = module.inference(x)
    assert MODULE_KEYS.Z in out and MODULE_KEYS.LOGITS not in out and not module.has_head
    with pytest.raises(ValueError, match="no classifier head"):
        module.loss({REGISTRY_KEYS.LABELS_KEY: torch.zeros(4, 1)}, out, {})
    module.add_head(4)
    assert module.inference(x)[MODULE_KEYS.LOGITS].shape == (4, 4)
    assert module.head_parameter_names() == ["classifier.logit_scale", "classifier.linear.weight",
                                             "classifier.linear.bias"]
    with pytest.raises(ValueError, match="at least two classes"):
        module.add_head(1)


def test_fitted_state_round_trips_through_the_constructor():
    module = _cgran()
    state = module.fitted_state()
    assert set(state) == {"gene_embedding", "projection", "group_index"}
    assert module.fitted_state_keys() == {"genes.gene_index", "gene_embedding", "projection",
                                          "groups.group_index"}
    rebuilt = CGRANModule(20, 3, torch.arange(10), **state, n_heads=2, head_dims=(4, 4))
    for k, v in rebuilt.fitted_state().items():
        torch.testing.assert_close(v, state[k])
    sims = SIMSModule(20, 3, torch.arange(10), class_weights=torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(sims.fitted_state()["class_weights"], torch.tensor([1.0, 2.0, 3.0]))
