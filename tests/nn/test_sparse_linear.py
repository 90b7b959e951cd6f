"""The inference shortcuts: sparse-input linear layers and the top-k sparsemax threshold."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scattn as sa
from scattn.nn._tabnet import _newton_threshold


def _sorted_sparsemax(z: torch.Tensor) -> torch.Tensor:
    """The textbook rule: sort, cumulative sums, support size (Martins & Astudillo 2016)."""
    z = z - z.max(dim=-1, keepdim=True).values
    zs, _ = torch.sort(z, dim=-1, descending=True)
    cs = zs.cumsum(-1) - 1
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    kz = ((k * zs) > cs).sum(-1, keepdim=True)
    return torch.clamp(z - cs.gather(-1, kz - 1) / kz.to(z.dtype), min=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.floats(1e-3, 30.0), st.integers(0, 2**31 - 1))
def test_sparsemax_equals_the_sorting_rule(n, scale, seed):
    z = torch.randn(7, n, generator=torch.Generator().manual_seed(seed)) * scale
    expected = _sorted_sparsemax(z)
    torch.testing.assert_close(sa.nn.sparsemax(z), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close((z - _newton_threshold(z)).clamp_min(0), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(sa.nn.sparsemax(z).sum(-1), torch.ones(7), atol=1e-4, rtol=0)


def test_sparsemax_large_supports_and_ties():
    z = torch.cat([torch.zeros(2, 500), torch.randn(2, 500) * 1e-3])  # supports of hundreds
    torch.testing.assert_close(sa.nn.sparsemax(z), _sorted_sparsemax(z), atol=1e-6, rtol=0)
    assert torch.isnan(sa.nn.sparsemax(torch.tensor([[float("nan"), 1.0]]))).all()


def test_sparse_rows_linear_equals_dense():
    torch.manual_seed(0)
    linear = torch.nn.Linear(300, 64)
    x = torch.rand(50, 300)
    x[x < 0.95] = 0  # 5% non-zero, as single-cell expression
    x[3] = 0  # a row without any
    with torch.no_grad():
        torch.testing.assert_close(sa.nn.sparse_rows_linear(x, linear), linear(x), atol=1e-5, rtol=1e-5)
        dense = torch.rand(4, 300)  # above the density threshold: the dense product
        torch.testing.assert_close(sa.nn.sparse_rows_linear(dense, linear), linear(dense))
