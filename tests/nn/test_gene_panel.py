"""The gene panel block: counts, library size, log-normalised values, observed genes."""

from __future__ import annotations

import pytest
import torch

from scattn.nn import GenePanel


def test_views_and_observed_mask():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 5.0, 0.0, 5.0]])
    panel = GenePanel(4, torch.tensor([3, 4, 1]))  # gene 2 of the model is absent (index 4)
    out = panel.read(x)
    torch.testing.assert_close(out.counts, torch.tensor([[4.0, 0.0, 2.0], [5.0, 0.0, 5.0]]))
    torch.testing.assert_close(out.library, torch.tensor([[10.0], [10.0]]))
    torch.testing.assert_close(out.lognorm, torch.log1p(out.counts / out.library * 1e4))
    torch.testing.assert_close(panel(x), out.lognorm)
    assert out.observed.tolist() == [True, False, True]
    panel.set_unobserved(torch.tensor([True, False, False]))
    assert panel.observed.tolist() == [False, False, True]
    panel.set_unobserved(None)
    assert panel.observed.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="one entry per model gene"):
        panel.set_unobserved(torch.tensor([True]))


def test_log_normalised_input_is_used_as_given():
    x = torch.rand(3, 5)
    out = GenePanel(5, torch.tensor([0, 2]), normalize_counts=False).read(x)
    assert out.library is None
    torch.testing.assert_close(out.lognorm, x[:, [0, 2]])
    with pytest.raises(ValueError, match="no counts"):
        _ = out.counts
