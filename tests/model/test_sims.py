"""SIMS mechanics on tiny data: the classifier contract, the explain matrix, class weights,
masked pretraining, several files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
import torch.nn.functional as F
from scipy import sparse

import scattn as sa
from tests.conftest import TINY_SIMS, make_counts


def _setup(n_cells=90, seed=0, **kwargs):
    data = make_counts(n_cells, seed=seed)
    sa.model.SIMS.setup_anndata(data, labels_key="cell_type", layer="counts", **kwargs)
    return data


def test_train_and_summary(trained_sims):
    model, _ = trained_sims
    assert model.is_trained_ and "accuracy_validation" in model.history
    assert "mask_entropy_train" in model.history and "lr-Adam" in model.history
    assert "SIMS (TabNet): 80 genes, 3 classes" in model._model_summary_string  # every gene
    assert model.classes_ == ["type0", "type1", "type2"]


def test_predict_writes_every_documented_field(trained_sims, tmp_path):
    model, adata = trained_sims
    adata = adata.copy()
    model.predict(adata, unknown_threshold=0.4)
    pred = adata.obs["sims_prediction"]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    assert ((adata.obs["sims_confidence"] < 0.4) == (pred == "Unknown")).all()
    assert list(adata.obsm["sims_probabilities"].columns) == model.classes_
    assert adata.obsm["X_sims"].shape == (adata.n_obs, 4)  # n_d
    att = adata.layers["sims_attention"]
    assert sparse.issparse(att) and att.shape == adata.shape and (att.data > 0).all()
    assert len(sc.get.rank_genes_groups_df(adata, group=None, key="sims_markers"))
    uns = adata.uns["sims"]
    assert uns["params"]["model"] == "SIMS" and "explain" in uns["params"]["attention"]
    imp = uns["feature_importances"]["importance"]
    assert imp.iloc[0] == pytest.approx(1.0) and imp.is_monotonic_decreasing
    per_class = uns["class_importances"]  # genes x classes
    assert set(per_class.columns) <= set(model.classes_) and list(per_class.index) == list(model.var_names_)
    assert per_class.to_numpy().max() == pytest.approx(1.0)
    glob, table = model.get_feature_importances(adata)  # the same, computed again
    pd.testing.assert_frame_equal(table, per_class)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = sc.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(back.uns["sims"]["class_importances"], per_class, check_dtype=False)


def test_attribution_is_the_normalised_explain_matrix(trained_sims):
    model, adata = trained_sims
    module = model.module.eval()
    with torch.no_grad():
        enc = module.encoder(module.genes(torch.as_tensor(adata.layers["counts"][:6].toarray())))
    explain = sum(m * d.sum(-1, keepdim=True) for m, d in zip(enc["masks"].unbind(1), enc["steps"], strict=True))
    expected = (explain / explain.sum(-1, keepdim=True)).numpy()
    got = model.get_attention(indices=np.arange(6))
    np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_feature_importances_by_hand(trained_sims):
    model, adata = trained_sims
    explain = model.get_attention().to_numpy()
    groups = adata.obs["cell_type"].astype(str).to_numpy()
    glob, per_class = model.get_feature_importances(groupby="cell_type")
    total = explain.sum(0)
    np.testing.assert_allclose(glob["importance"].reindex(model.var_names_).to_numpy(), total / total.max(),
                               rtol=1e-4)
    means = np.stack([explain[groups == c].mean(0) for c in per_class.columns])
    colmax = means.max(0)
    expected = np.divide(means, colmax, out=np.zeros_like(means), where=colmax > 0)
    np.testing.assert_allclose(per_class.to_numpy().T, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="entries"):
        model.get_feature_importances(groupby=["a", "b"])


def test_importances_leave_out_genes_the_data_lack(trained_sims):
    model, adata = trained_sims
    part = adata[:, 30:].copy()
    with pytest.warns(UserWarning, match="missing"):
        res = model.predict(part, inplace=False, min_gene_overlap=0.3)
    absent = ~pd.Index(model.var_names_).isin(part.var_names)
    assert (res.uns["feature_importances"].loc[model.var_names_[absent], "importance"] == 0).all()
    assert (res.uns["class_importances"].loc[model.var_names_[absent]].to_numpy() == 0).all()


def test_class_weights_and_loss():
    data = make_counts(90)
    data.obs["label"] = data.obs["cell_type"].astype(str)
    data.obs.loc[data.obs_names[:20], "label"] = "Unknown"  # type0 loses 20 labelled cells
    sa.model.SIMS.setup_anndata(data, labels_key="label", layer="counts")
    model = sa.model.SIMS(data, **TINY_SIMS)
    counts = np.array([10, 30, 30])
    np.testing.assert_allclose(model.module.class_weights.numpy(), counts.sum() / (3 * counts), rtol=1e-6)
    unweighted = sa.model.SIMS(data, weighted_loss=False, **TINY_SIMS)
    np.testing.assert_array_equal(unweighted.module.class_weights.numpy(), 1.0)
    # the loss is weighted cross-entropy over labelled cells + lambda * mask entropy
    module = model.module.eval()
    x = torch.as_tensor(data.layers["counts"][:40].toarray())
    y = torch.as_tensor(data.obs["_scvi_labels"].to_numpy()[:40]).view(-1, 1)
    out = module.inference(x)
    loss = module.loss({"X": x, "labels": y}, out, {}).loss
    lab = y.view(-1) < 3
    expected = F.cross_entropy(out["logits"][lab], y.view(-1)[lab], weight=module.class_weights)
    assert float(loss.detach()) == pytest.approx(float((expected + 1e-3 * out["entropy"]).detach()), rel=1e-5)


def test_pretrain_then_train():
    data = _setup()
    sa.settings.seed = 0
    model = sa.model.SIMS(data, **TINY_SIMS)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.pretrain(max_epochs=2, batch_size=32)
    after = model.module.state_dict()
    assert not torch.equal(before["encoder.steps.0.layers.1.fc.weight"], after["encoder.steps.0.layers.1.fc.weight"])
    assert not torch.equal(before["decoder.reconstruct.weight"], after["decoder.reconstruct.weight"])
    assert torch.equal(before["head.weight"], after["head.weight"])  # labels never read
    assert not model.is_trained_ and model.history_ is None and model.train_indices is None
    assert len(model.pretrain_history_["train_loss"]) == 2 and "validation_loss" in model.pretrain_history_
    model.train(max_epochs=2, batch_size=32)
    assert model.is_trained_ and len(model.history["train_loss"]) == 2
    with pytest.warns(UserWarning, match="train it again"):
        model.pretrain(max_epochs=1, batch_size=32)
    assert not model.is_trained_ and len(model.history["train_loss"]) == 2


def test_pretrain_on_other_unlabelled_data():
    data = _setup()
    other = make_counts(60, seed=5)[:, 10:].copy()  # no labels, fewer genes
    del other.obs["cell_type"]
    model = sa.model.SIMS(data, **TINY_SIMS)
    with pytest.warns(UserWarning, match="missing"):
        model.pretrain(other, max_epochs=1, batch_size=32)
    assert "_scvi_uuid" not in other.uns  # the user's object is untouched
    bad = other.copy()
    bad.layers["counts"] = bad.layers["counts"] * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        model.pretrain(bad, max_epochs=1)
    with pytest.raises(ValueError, match="mask_ratio"):
        model.pretrain(max_epochs=1, mask_ratio=1.0)


def test_reconstruction_loss_by_hand():
    from scattn.module._sims import reconstruction_loss

    target = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0]])
    recon = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    hidden = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    var = torch.tensor([1.0, 1.0, 1.0])  # gene 0: population variance 1; gene 1 constant -> 1
    cell0 = (1 / var[0] + 1 / var[2]) / 2
    cell1 = 4 / var[1]
    assert float(reconstruction_loss(recon, target, hidden).loss) == pytest.approx(float((cell0 + cell1) / 2))


def test_single_cell_last_batch_is_dropped():
    data = _setup(65)
    model = sa.model.SIMS(data, **TINY_SIMS)
    model.train(max_epochs=1, batch_size=32, train_size=1.0)  # 65 = 2 x 32 + 1
    assert model.is_trained_


def test_save_load_identical(trained_sims, tmp_path):
    model, adata = trained_sims
    before = model.predict(inplace=False)
    model.save(tmp_path / "m", overwrite=True)
    loaded = sa.model.SIMS.load(tmp_path / "m", adata=adata)
    after = loaded.predict(inplace=False)
    np.testing.assert_allclose(after.probabilities, before.probabilities, atol=1e-6)
    torch.testing.assert_close(loaded.module.class_weights, model.module.class_weights)
    with pytest.raises(ValueError, match="holds a saved SIMS model, not a CFAN"):
        sa.model.CFAN.load(tmp_path / "m", adata=adata)


def test_deterministic_under_seed():
    def run():
        sa.settings.seed = 3
        data = _setup()
        m = sa.model.SIMS(data, **TINY_SIMS)
        m.pretrain(max_epochs=1, batch_size=32)
        m.train(max_epochs=2, batch_size=32)
        return m.predict_proba().to_numpy()

    np.testing.assert_array_equal(run(), run())


def test_query_model_fine_tunes_the_head_only(trained_sims):
    model, _ = trained_sims
    query = make_counts(60, seed=9)
    query.obs["label"] = query.obs["cell_type"].astype(str)
    qm = sa.model.SIMS.load_query_data(query, model, unfrozen=False)
    trainable = {n for n, p in qm.module.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    np.testing.assert_allclose(qm.module.class_weights.numpy(), 1.0, rtol=1e-6)  # balanced query
    qm.train(max_epochs=1, batch_size=32)
    assert qm.predict_proba(query).shape == (60, 3)


def test_bad_input_is_clear():
    data = make_counts(60)
    data.layers["counts"] = data.layers["counts"] * 0.5
    with pytest.raises(ValueError, match="counts"):
        sa.model.SIMS.setup_anndata(data, labels_key="cell_type", layer="counts")
    data = _setup(60)
    with pytest.raises(ValueError, match="gamma"):
        sa.model.SIMS(data, gamma=0.5)
    with pytest.raises(ValueError, match="lambda_sparse"):
        sa.model.SIMS(data, lambda_sparse=-1)
    with pytest.raises(ValueError, match="batch_size"):
        sa.model.SIMS(data, **TINY_SIMS).train(max_epochs=1, batch_size=1)


def test_trains_on_several_backed_files(tmp_path):
    a, b = make_counts(60, seed=1), make_counts(60, seed=2)[:, 5:].copy()
    a.obs["cell_type"] = a.obs["cell_type"].astype(str)
    b.obs["cell_type"] = b.obs["cell_type"].astype(str)
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    data = sa.data.read_h5ads([tmp_path / "a.h5ad", tmp_path / "b.h5ad"], labels_key="cell_type",
                              layer="counts", out=tmp_path / "all.h5ad")
    assert data.isbacked and data.n_vars == 75
    sa.model.SIMS.setup_anndata(data, labels_key="cell_type")
    model = sa.model.SIMS(data, **TINY_SIMS)
    model.pretrain(max_epochs=1, batch_size=32)
    model.train(max_epochs=1, batch_size=32)
    model.predict()
    assert data.obs["sims_prediction"].notna().all()
    data.file.close()


def test_pretrain_unlabelled_then_from_pretrained(tmp_path):
    sa.settings.seed = 0
    unlabelled = make_counts(120, seed=4)
    del unlabelled.obs["cell_type"]
    sa.model.SIMS.setup_anndata(unlabelled, layer="counts")
    encoder = sa.model.SIMS(unlabelled, **TINY_SIMS)
    assert not encoder.module.has_head
    with pytest.raises(ValueError, match="no classifier.*from_pretrained"):
        encoder.train(max_epochs=1)
    encoder.pretrain(max_epochs=2, batch_size=32)
    assert encoder.is_pretrained_ and not encoder.is_trained_
    with pytest.raises(ValueError, match="no classifier"):
        encoder.predict()
    encoder.save(tmp_path / "pre")  # a pretrained-only model saves like any other
    labelled = _setup()
    model = sa.model.SIMS.from_pretrained(str(tmp_path / "pre"), labelled)
    state, pre = model.module.state_dict(), encoder.module.state_dict()
    shared = [k for k in pre if k.startswith("encoder.")]
    assert shared and all(torch.equal(state[k], pre[k]) for k in shared)
    assert model.classes_ == ["type0", "type1", "type2"] and model.module.class_weights.shape == (3,)
    model.train(max_epochs=2, batch_size=32)
    result = model.predict(inplace=False)
    assert result.attention.shape == (labelled.n_obs, labelled.n_vars)
