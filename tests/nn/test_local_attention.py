import numpy as np
import pytest
import torch

from scattn.data import group_mask, make_gene_groups
from scattn.nn import (
    GeneGroups,
    LocalAttentionBlock,
    LocalMultiheadAttention,
    dense_masked_attention,
)


@pytest.mark.parametrize("grouping, n_genes", [("uniform", 300), ("uniform", 250), ("kmeans", 250), ("full", 40)])
def test_local_equals_dense_masked(grouping, n_genes):
    """Group-wise attention gives exactly the paper's masked (g+1)^2 attention."""
    torch.manual_seed(0)
    gi = make_gene_groups(n_genes, grouping, group_size=100, n_groups=4,
                          features=np.random.default_rng(0).normal(size=(n_genes, 5)))
    groups = GeneGroups(torch.tensor(gi))
    att = LocalMultiheadAttention(16, 4, 8).eval()
    cell, genes = torch.randn(3, 16), torch.randn(3, n_genes, 16)
    c, g, w = att(cell, genes, groups=groups, return_attention=True)
    c_ref, g_ref = dense_masked_attention(att, cell, genes, torch.tensor(group_mask(gi, n_genes)))
    torch.testing.assert_close(c, c_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-4)
    assert w.shape == (3, 4, n_genes + 1)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))


def test_gene_base_shortcut_is_exact():
    """Gene tokens s_j = B_j + s_0 projected via linearity equal the explicit tokens."""
    torch.manual_seed(1)
    gi = make_gene_groups(120, "uniform", group_size=50)
    groups = GeneGroups(torch.tensor(gi))
    block = LocalAttentionBlock(16, 2, 4, dropout=0.0).eval()
    cell, base = torch.randn(5, 16), torch.randn(120, 16)
    c1, g1, _ = block(cell, gene_base=base, groups=groups)
    c2, g2, _ = block(cell, base.unsqueeze(0) + cell.unsqueeze(1), groups=groups)
    torch.testing.assert_close(c1, c2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)
    # outputs are L2-normalised; cell_only gives the same cell output
    torch.testing.assert_close(c1.norm(dim=-1), torch.ones(5))
    c3, g3, _ = block(cell, gene_base=base, groups=groups, cell_only=True)
    assert g3 is None
    torch.testing.assert_close(c1, c3)


def test_gradients_flow_through_groups():
    gi = make_gene_groups(30, "kmeans", n_groups=3, features=np.random.default_rng(0).normal(size=(30, 3)))
    att = LocalMultiheadAttention(8, 2, 4)
    genes = torch.randn(2, 30, 8, requires_grad=True)
    c, g, _ = att(torch.randn(2, 8), genes, groups=GeneGroups(torch.tensor(gi)))
    (c.sum() + g.sum()).backward()
    assert torch.isfinite(genes.grad).all() and genes.grad.abs().sum() > 0
