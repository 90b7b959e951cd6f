"""TabNet blocks: sparsemax against the simplex projection, masks, ghost batch norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scattn.nn import GhostBatchNorm, TabNetDecoder, TabNetEncoder, sparsemax


def _simplex_projection(z: np.ndarray) -> np.ndarray:
    """argmin_p ||p - z||^2 over the simplex, by bisection on the threshold (independent check)."""
    lo, hi = z.min() - 1, z.max()
    for _ in range(200):
        tau = (lo + hi) / 2
        if np.clip(z - tau, 0, None).sum() > 1:
            lo = tau
        else:
            hi = tau
    return np.clip(z - (lo + hi) / 2, 0, None)


def test_sparsemax_is_the_simplex_projection():
    z = torch.randn(6, 20, dtype=torch.float64) * 3
    p = sparsemax(z)
    for row, zr in zip(p.numpy(), z.numpy(), strict=True):
        np.testing.assert_allclose(row, _simplex_projection(zr), atol=1e-8)
    np.testing.assert_allclose(p.sum(-1).numpy(), 1.0)
    assert (p == 0).any()  # exact zeros, unlike softmax


def test_sparsemax_gradient_matches_autograd_of_the_closed_form():
    z = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sparsemax, (z,))


def test_sparsemax_nan_propagates():
    assert torch.isnan(sparsemax(torch.tensor([[float("nan"), 1.0]]))).all()


def test_sparsemax_extremes():
    p = sparsemax(torch.tensor([[100.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(p.numpy(), [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)


def test_ghost_batch_norm_normalises_each_chunk():
    gbn = GhostBatchNorm(3, virtual_batch_size=4)
    x = torch.cat([torch.randn(4, 3), torch.randn(4, 3) * 10 + 5])
    out = gbn(x)
    for chunk in out.split(4):
        np.testing.assert_allclose(chunk.mean(0).detach().numpy(), 0, atol=1e-5)
    # 9 rows in chunks of 4: three chunks of 3, never a single row
    assert gbn(torch.randn(9, 3)).shape == (9, 3)
    gbn.eval()
    assert gbn(x).shape == x.shape
    with pytest.raises(ValueError, match="virtual_batch_size"):
        GhostBatchNorm(3, virtual_batch_size=0)


def test_encoder_masks_prior_and_explain():
    torch.manual_seed(0)
    enc = TabNetEncoder(12, n_d=4, n_a=4, n_steps=3, gamma=1.0)
    x = torch.randn(16, 12)
    out = enc(x)
    masks = out["masks"]
    assert masks.shape == (16, 3, 12) and len(out["steps"]) == 3
    np.testing.assert_allclose(masks.sum(-1).detach().numpy(), 1.0, atol=1e-5)
    # gamma = 1: a gene chosen with full weight by one step cannot be chosen again
    assert float(out["entropy"].detach()) >= 0
    expected = sum(m * d.sum(-1, keepdim=True) for m, d in zip(masks.unbind(1), out["steps"], strict=True))
    np.testing.assert_allclose(out["explain"].detach().numpy(), expected.detach().numpy(), atol=1e-6)
    # a zero prior sets a gene's mask logit to 0 (the floor under a positive logit): hidden
    # genes all get the same, usually zero, weight
    prior = torch.ones(16, 12)
    prior[:, :4] = 0
    hidden = enc(x, prior=prior)["masks"][:, :, :4].detach()
    np.testing.assert_allclose(hidden.numpy(), hidden[..., :1].expand_as(hidden).numpy())
    assert float((hidden == 0).float().mean()) > 0.5
    with pytest.raises(ValueError, match="gamma"):
        TabNetEncoder(12, gamma=0.5)


def test_decoder_shape():
    enc = TabNetEncoder(10, n_d=4, n_a=4, n_steps=2)
    dec = TabNetDecoder(10, n_d=4, n_steps=2)
    assert dec(enc(torch.randn(8, 10))["steps"]).shape == (8, 10)
