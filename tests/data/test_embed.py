import numpy as np
import pytest
from scipy import sparse

from scattn.data import factorize, log_normalize, make_gene_groups, svd_embedding


def test_svd_fold_in_reproduces_cell_embedding(adata):
    x = log_normalize(adata.X, "counts")
    emb = svd_embedding(x, 10, seed=0)
    dense = x.toarray()
    u, s, vt = np.linalg.svd(dense, full_matrices=False)
    a_fold = x @ emb.projection  # A = x Y S^-1/2 = X S^1/2
    # leading components: A = X S^1/2 and B = Y S^1/2 exactly (up to each component's sign)
    a_exact, b_exact = u[:, :3] * np.sqrt(s[:3]), vt[:3].T * np.sqrt(s[:3])
    signs = np.sign((a_fold[:, :3] * a_exact).sum(0))
    np.testing.assert_allclose(a_fold[:, :3], a_exact * signs, atol=2e-3)
    np.testing.assert_allclose(emb.gene_embedding[:, :3], b_exact * signs, atol=2e-3)
    np.testing.assert_allclose(emb.singular_values[:3], s[:3], rtol=1e-4)
    # A B^T is (nearly) the best rank-10 approximation of M
    err = np.linalg.norm(dense - a_fold @ emb.gene_embedding.T)
    best = np.sqrt((s[10:] ** 2).sum())
    assert err <= 1.01 * best


def test_svd_keeps_sparse_and_is_deterministic(adata):
    x = log_normalize(adata.X, "counts")
    assert sparse.issparse(x)
    e1, e2 = svd_embedding(x, 8, seed=3), svd_embedding(x, 8, seed=3)
    np.testing.assert_array_equal(e1.projection, e2.projection)


def test_gd_embedding_reconstructs(adata):
    x = log_normalize(adata.X, "counts").toarray()
    emb = factorize(x, 8, method="gd", seed=0)
    a = x @ emb.projection
    err_gd = np.mean((x - a @ emb.gene_embedding.T) ** 2)
    assert err_gd < 0.5 * np.mean(x**2)
    with pytest.raises(ValueError, match="embedding_method"):
        factorize(x, 8, method="pca")


def test_groups():
    g = make_gene_groups(250, "uniform", group_size=100)
    assert g.shape == (3, 100) and (g[2, 50:] == -1).all()
    assert make_gene_groups(10, "full").shape == (1, 10)
    km = make_gene_groups(30, "kmeans", n_groups=3, features=np.random.default_rng(0).normal(size=(30, 4)))
    assert sorted(km[km >= 0].tolist()) == list(range(30))
    with pytest.raises(ValueError, match="grouping must be"):
        make_gene_groups(10, "random")
