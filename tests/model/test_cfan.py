"""CFAN mechanics on tiny data: the same contract as CGRAN, plus input perturbation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from scipy import sparse

import scattn as sa
from tests.conftest import TINY_CFAN, make_counts


def test_train_and_summary(trained_cfan):
    model, _ = trained_cfan
    assert model.is_trained_ and "accuracy_validation" in model.history
    assert "CFAN: 60 genes, 3 classes, u=4" in model._model_summary_string
    assert model.classes_ == ["type0", "type1", "type2"]


def test_predict_writes_every_documented_field(trained_cfan):
    model, adata = trained_cfan
    adata = adata.copy()
    model.predict(adata, unknown_threshold=0.5)
    pred = adata.obs["cfan_prediction"]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    assert ((adata.obs["cfan_confidence"] < 0.5) == (pred == "Unknown")).all()
    assert list(adata.obsm["cfan_probabilities"].columns) == model.classes_
    assert adata.obsm["X_cfan"].shape == (adata.n_obs, 4 * 4)  # conv channels x extractors
    att = adata.layers["cfan_attention"]
    assert sparse.issparse(att) and att.shape == adata.shape
    assert (att.data > 0).all() and (np.diff(att.tocsr().indptr) <= 50).all()
    df = sc.get.rank_genes_groups_df(adata, group=None, key="cfan_markers")
    assert len(df) and adata.uns["cfan"]["params"]["model"] == "CFAN"
    assert "gradient" in adata.uns["cfan"]["params"]["attention"]


def test_attribution_is_the_negative_input_gradient(trained_cfan):
    model, adata = trained_cfan
    model.module.eval()
    x = torch.as_tensor(adata.layers["counts"][:5].toarray())
    e = model.module.genes(x).requires_grad_(True)
    logits = model.module.forward_expression(e)["logits"]
    loss = torch.nn.functional.cross_entropy(logits, logits.argmax(-1), reduction="sum")
    (grad,) = torch.autograd.grad(loss, e)
    got = model.get_attention(indices=np.arange(5))
    np.testing.assert_allclose(got.to_numpy(), -grad.numpy(), rtol=1e-4, atol=1e-6)
    assert list(got.columns) == list(model.var_names_)


def test_feature_attention(trained_cfan):
    model, _ = trained_cfan
    att, feats = model.get_feature_attention(indices=np.arange(7), return_features=True)
    assert att.shape == (7, 4, 4) and feats.shape == (7, 4, 8)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(model.get_feature_attention(indices=np.arange(7)), att)


def test_save_load_identical(trained_cfan, tmp_path):
    model, adata = trained_cfan
    before = model.predict(inplace=False)
    model.save(tmp_path / "m", overwrite=True)
    loaded = sa.model.CFAN.load(tmp_path / "m", adata=adata)
    after = loaded.predict(inplace=False)
    np.testing.assert_allclose(after.probabilities, before.probabilities, atol=1e-6)
    assert list(loaded.var_names_) == list(model.var_names_)
    with pytest.raises(ValueError, match="holds a saved CFAN model, not a CGRAN"):
        sa.model.CGRAN.load(tmp_path / "m", adata=adata)


def test_new_data_aligned_by_name(trained_cfan):
    model, adata = trained_cfan
    shuffled = adata[:, np.random.default_rng(0).permutation(adata.n_vars)].copy()
    a = model.predict_proba(adata)
    b = model.predict_proba(shuffled)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), atol=1e-6)


def test_deterministic_under_seed():
    def run():
        sa.settings.seed = 3
        data = make_counts(90)
        sa.model.CFAN.setup_anndata(data, labels_key="cell_type", layer="counts")
        m = sa.model.CFAN(data, **TINY_CFAN)
        m.train(max_epochs=2, batch_size=32)
        return m.predict_proba().to_numpy()

    np.testing.assert_array_equal(run(), run())


def test_all_genes_and_gene_list():
    data = make_counts(60)
    sa.model.CFAN.setup_anndata(data, labels_key="cell_type", layer="counts")
    assert len(sa.model.CFAN(data, n_top_genes=None).var_names_) == data.n_vars
    m = sa.model.CFAN(data, genes=["MK0_0", "G40", "MK1_2"])
    assert list(m.var_names_) == ["MK0_0", "G40", "MK1_2"]
    with pytest.raises(ValueError, match="kernel_size"):
        sa.model.CFAN(data, kernel_size=2)
    with pytest.raises(ValueError, match="dropout"):
        sa.model.CFAN(data, dropout=1.5)


def test_bad_input_is_clear():
    data = make_counts(60)
    data.layers["counts"] = data.layers["counts"] * 0.5
    with pytest.raises(ValueError, match="counts"):
        sa.model.CFAN.setup_anndata(data, labels_key="cell_type", layer="counts")
