"""load_query_data for CGRAN and CFAN: registration, gene alignment, weights, freezing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import scattn as sa
from tests.conftest import make_counts


def _query(seed=1, n=90, drop_genes=0):
    q = make_counts(n, seed=seed)
    q.obs["label"] = q.obs["cell_type"].astype(str)
    if drop_genes:
        q = q[:, drop_genes:].copy()
    return q


@pytest.fixture(params=["cgran", "cfan"])
def reference(request, trained, trained_cfan):
    return trained if request.param == "cgran" else trained_cfan


def _head_weight(module) -> torch.Tensor:
    """The classifier head's (classes x dims) weight."""
    state = module.state_dict()
    (weight,) = [state[k] for k in module.head_parameter_names() if state[k].dim() == 2]
    return weight


def test_query_copies_weights_and_trains(reference):
    model, _ = reference
    q = _query()
    qm = type(model).load_query_data(q, model)
    assert qm.classes_ == model.classes_ and not qm.is_trained_
    assert list(qm.var_names_) == list(model.var_names_)
    ref_state, state = model.module.state_dict(), qm.module.state_dict()
    head = model.module.head_parameter_names()
    assert head and head == qm.module.head_parameter_names()
    for key in head:
        torch.testing.assert_close(state[key], ref_state[key])
    # genes found by name: the query model reads the same genes as the reference
    np.testing.assert_allclose(qm.predict_proba(q), model.predict_proba(q), atol=1e-5)
    qm.train(max_epochs=1, batch_size=32)
    assert qm.is_trained_
    qm.predict()
    assert "label" in q.obs and f"{qm._key}_prediction" in q.obs


def test_fine_tune_classifier_freezes_the_rest(reference):
    model, _ = reference
    qm = type(model).load_query_data(_query(), model, unfrozen=False)
    trainable = {n for n, p in qm.module.named_parameters() if p.requires_grad}
    assert trainable and trainable == set(qm.module.head_parameter_names())
    before = {n: p.detach().clone() for n, p in qm.module.named_parameters()}
    qm.train(max_epochs=1, batch_size=32, lr=1e-2)
    changed = {n for n, p in qm.module.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= trainable


def test_missing_query_genes_read_as_zero(reference):
    model, _ = reference
    q = _query(drop_genes=5)  # MK0_* gone
    with pytest.warns(UserWarning, match="5 of the reference model's 60 genes are missing"):
        qm = type(model).load_query_data(q, model)
    assert qm.module.genes.has_missing
    same = np.allclose(qm.predict_proba(q), model.predict_proba(q), atol=1e-5)
    # CFAN reads missing genes as zero, like predicting with the reference; CGRAN's default
    # fits the cells' embeddings over the genes present instead, which changes them
    assert same == (type(model) is sa.model.CFAN)


def test_query_label_set_differs(reference):
    model, _ = reference
    q = _query()
    q.obs.loc[q.obs_names[:10], "label"] = "novel"
    snap = set(q.obs.columns), set(q.uns)
    with pytest.raises(ValueError, match="labels outside the model's classes: 'novel'"):
        type(model).load_query_data(q, model)
    assert (set(q.obs.columns), set(q.uns)) == snap  # nothing registered
    qm = type(model).load_query_data(q, model, extend_classes=True)
    assert qm.classes_ == [*model.classes_, "novel"]
    w, ref_w = _head_weight(qm.module), _head_weight(model.module)
    assert w.shape[0] == 4
    torch.testing.assert_close(w[:3], ref_w)
    qm.train(max_epochs=1, batch_size=32)


def test_query_errors(reference):
    model, _ = reference
    no_shared = _query()
    no_shared.var_names = [f"X{i}" for i in range(no_shared.n_vars)]
    with pytest.raises(ValueError, match="shares no gene"):
        type(model).load_query_data(no_shared, model)
    unknown_label = _query()
    unknown_label.obs["label"] = np.where(np.arange(unknown_label.n_obs) == 0, "a type never seen", "Unknown")
    with pytest.raises(ValueError, match="a type never seen"):
        type(model).load_query_data(unknown_label, model)
    with pytest.raises(ValueError, match="fine_tune"):
        type(model).load_query_data(_query(), model, fine_tune="some")
    other = sa.model.CFAN if type(model) is sa.model.CGRAN else sa.model.CGRAN
    with pytest.raises(TypeError, match="reference_model must be a trained"):
        other.load_query_data(_query(), model)


def test_cgran_query_embeddings(trained):
    model, _ = trained
    ref = sa.model.CGRAN.load_query_data(_query(), model, embedding="reference")
    # with every gene present, the least-squares fold-in is the reference's own projection
    np.testing.assert_allclose(ref.module.projection.numpy(), model.module.projection.numpy(), atol=1e-4)
    q = _query(drop_genes=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ls = sa.model.CGRAN.load_query_data(q, model, embedding="reference")
    p = ls.module.projection.numpy()
    assert np.abs(p[:5]).max() == 0 and not np.allclose(p[5:], model.module.projection.numpy()[5:])
    new = sa.model.CGRAN.load_query_data(_query(), model, embedding="query", unfrozen=False)
    assert new.module.gene_embedding.shape == model.module.gene_embedding.shape
    assert not np.allclose(new.module.gene_embedding.numpy(), model.module.gene_embedding.numpy())
    new.train(max_epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="embedding"):
        sa.model.CGRAN.load_query_data(_query(), model, embedding="both")


def test_query_model_save_load(trained, tmp_path):
    model, _ = trained
    q = _query(drop_genes=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qm = sa.model.CGRAN.load_query_data(q, model)
    qm.train(max_epochs=1, batch_size=32)
    qm.save(tmp_path / "q", overwrite=True)
    loaded = sa.model.CGRAN.load(tmp_path / "q", adata=q)
    np.testing.assert_allclose(loaded.predict_proba(), qm.predict_proba(), atol=1e-6)
    assert list(loaded.var_names_) == list(model.var_names_)


def test_unread_genes_count_as_missing_later(trained_cfan):
    model, _ = trained_cfan
    q = _query(drop_genes=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qm = sa.model.CFAN.load_query_data(q, model)
    assert len(qm._read_genes) == 55
    full = _query(seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = qm.predict(full, inplace=False)
    # the genes the query lacked are never read, and get no attribution
    assert res.attention[:, :5].nnz == 0
    only_unread = full[:, :5].copy()
    with pytest.raises(ValueError):
        qm.predict(only_unread, inplace=False)


def test_numeric_labels_match_across_nan():
    ref = make_counts(90)
    ref.obs["num"] = ref.obs["cell_type"].cat.codes.astype(int)
    sa.model.CFAN.setup_anndata(ref, labels_key="num", layer="counts")
    m = sa.model.CFAN(ref, n_top_genes=40, n_extractors=2, n_features=8, n_qk=4, n_values=4, conv_channels=2)
    m.train(max_epochs=1, batch_size=32)
    q = make_counts(60, seed=1)
    q.obs["num"] = q.obs["cell_type"].cat.codes.astype(float)
    q.obs.loc[q.obs_names[:3], "num"] = np.nan  # pandas floats: 0.0, 1.0, 2.0
    qm = sa.model.CFAN.load_query_data(q, m, extend_classes=True)
    assert qm.classes_ == ["0", "1", "2"]


def test_query_of_the_reference_adata_and_bad_classes(trained_cfan):
    model, adata = trained_cfan
    with pytest.raises(ValueError, match="Pass a copy"):
        sa.model.CFAN.load_query_data(adata, model)
    d = make_counts(30)
    with pytest.raises(ValueError, match="classes must be unique"):
        sa.model.CFAN.setup_anndata(d, labels_key="cell_type", classes=["type0", "type0", "type1", "type2"])
    with pytest.raises(TypeError, match="batch_key"):
        sa.model.CFAN.setup_anndata(d, labels_key="cell_type", batch_key="b")
    sa.model.CFAN.setup_anndata(d, labels_key="cell_type")
