"""CGRAN mechanics on tiny data: the API contract of DESIGN.md."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import scattn as sa
from tests.conftest import TINY, best_validation_epoch, make_counts


def _snapshot(adata):
    x = adata.X.toarray() if sparse.issparse(adata.X) else np.array(adata.X)
    return (set(adata.obs.columns), set(adata.obsm.keys()), set(adata.layers.keys()),
            set(adata.uns.keys()), x)


def _unchanged(adata, snap):
    cols, obsm, layers, uns, x = snap
    assert set(adata.obs.columns) == cols and set(adata.obsm.keys()) == obsm
    assert set(adata.layers.keys()) == layers and set(adata.uns.keys()) == uns
    now = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    np.testing.assert_array_equal(now, x)


# -- training and predict ----------------------------------------------------------------------
def test_train_history_and_summary(trained):
    model, _ = trained
    assert model.is_trained_
    for key in ("train_loss", "validation_loss", "accuracy_train", "accuracy_validation"):
        assert key in model.history
    assert "CGRAN: 60 genes, 3 classes" in model._model_summary_string
    assert model.classes_ == ["type0", "type1", "type2"]


def test_predict_writes_every_documented_field(trained):
    model, adata = trained
    adata = adata.copy()
    model.predict(adata, unknown_threshold=0.4)
    pred = adata.obs["cgran_prediction"]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    # observed categories only (scanpy's convention); "Unknown" below the threshold
    assert set(pred.cat.categories) == set(pred.unique())
    assert set(pred.cat.categories) <= {"type0", "type1", "type2", "Unknown"}
    conf = adata.obs["cgran_confidence"]
    assert conf.between(1 / 3, 1).all()
    assert ((conf < 0.4) == (pred == "Unknown")).all()
    proba = adata.obsm["cgran_probabilities"]
    assert isinstance(proba, pd.DataFrame) and list(proba.columns) == model.classes_
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert adata.obsm["X_cgran"].shape == (adata.n_obs, 8)  # 2 heads x head dim 4
    att = adata.layers["cgran_attention"]
    assert sparse.issparse(att) and att.shape == adata.shape
    assert (np.diff(att.tocsr().indptr) <= 50).all()
    assert att.sum(1).max() <= 2 + 1e-5  # summed over 2 heads
    assert set(adata.uns["cgran_markers"]["names"].dtype.names) <= set(pred.cat.categories)
    params = adata.uns["cgran"]["params"]
    assert params["model"] == "CGRAN" and params["unknown_threshold"] == 0.4


def test_markers_readable_by_scanpy(trained):
    model, adata = trained
    adata = adata.copy()
    model.predict(adata)
    df = sc.get.rank_genes_groups_df(adata, group=None, key="cgran_markers")
    assert {"group", "names", "scores", "pvals", "pvals_adj", "logfoldchanges"} <= set(df.columns)
    dp = sc.pl.rank_genes_groups_dotplot(adata, key="cgran_markers", n_genes=3, show=False, return_fig=True)
    dp.make_figure()


def test_inplace_false_writes_nothing(trained):
    model, adata = trained
    snap = _snapshot(adata)
    res = model.predict(adata, inplace=False)
    _unchanged(adata, snap)
    assert isinstance(res, sa.model.base.PredictionResult)
    assert len(res.prediction) == adata.n_obs and res.attention.shape == adata.shape
    assert res.markers is not None and "names" in res.markers


def test_unlabelled_cells_are_predicted(trained):
    model, adata = trained
    res = model.predict(inplace=False)
    unl = adata.obs["label"] == "Unknown"
    assert res.prediction[unl.to_numpy()].isin(model.classes_).all()


def test_latent_attention_and_gene_attention(trained):
    model, adata = trained
    z = model.get_latent_representation(indices=[0, 1, 2])
    assert z.shape == (3, 8)
    att = model.get_attention(indices=[0, 1])
    assert list(att.columns) == list(model.var_names_) and att.shape == (2, 60)
    assert (att.to_numpy() >= 0).all() and (att.sum(1) < 2).all()  # 2 heads
    top = model.get_attention(indices=[0], top_k=5)
    assert (top.to_numpy() > 0).sum() == 5
    genes = list(model.var_names_[:4])
    gg = model.get_gene_attention(genes=genes)
    assert gg.shape == (4, 4)
    np.testing.assert_allclose(gg.sum(1), 2.0, rtol=1e-4)  # softmax rows summed over 2 heads
    with pytest.raises(ValueError, match="not used by the model"):
        model.get_gene_attention(genes=["nope"])


# -- genes ---------------------------------------------------------------------------------------
def test_gene_order_does_not_matter(trained):
    model, adata = trained
    ref = model.predict(adata, inplace=False)
    shuffled = adata[:, np.random.default_rng(0).permutation(adata.n_vars)].copy()
    res = model.predict(shuffled, inplace=False)
    np.testing.assert_allclose(res.probabilities.to_numpy(), ref.probabilities.to_numpy(), atol=1e-5)
    # attention follows the genes to their new columns
    col = shuffled.var_names.get_loc(adata.var_names[0])
    np.testing.assert_allclose(res.attention[:, col].toarray(), ref.attention[:, 0].toarray(), atol=1e-6)


def test_missing_genes_warn_and_zero_fill(trained):
    model, adata = trained
    drop = list(model.var_names_[:5])
    sub = adata[:, ~adata.var_names.isin(drop)].copy()
    with pytest.warns(UserWarning, match="5 of the model's 60 genes are missing"):
        res = model.predict(sub, inplace=False)
    assert res.attention.shape == sub.shape


def test_too_little_overlap_and_no_overlap(trained):
    model, adata = trained
    keep = list(model.var_names_[:20]) + [g for g in adata.var_names if g not in set(model.var_names_)]
    with pytest.raises(ValueError, match="Only 20 of the model's 60 genes"):
        model.predict(adata[:, keep].copy())
    other = adata.copy()
    other.var_names = [f"X{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="shares no gene"):
        model.predict(other)


# -- save / load / determinism -------------------------------------------------------------------
def test_save_load_identical(trained, tmp_path):
    model, adata = trained
    ref = model.predict(inplace=False)
    model.save(tmp_path / "m", overwrite=True)
    loaded = sa.model.CGRAN.load(tmp_path / "m", adata=adata)
    res = loaded.predict(inplace=False)
    np.testing.assert_allclose(res.probabilities.to_numpy(), ref.probabilities.to_numpy(), atol=1e-6)
    assert list(loaded.var_names_) == list(model.var_names_)


def test_load_other_model_class_is_clear(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "m", overwrite=True)

    class OtherModel(sa.model.CGRAN):
        pass

    with pytest.raises(ValueError, match="holds a saved CGRAN model, not a OtherModel"):
        OtherModel.load(tmp_path / "m", adata=adata)


def test_deterministic_under_seed():
    def run():
        sa.settings.seed = 7
        data = make_counts(n_cells=60, n_genes=40)
        sa.model.CGRAN.setup_anndata(data, labels_key="cell_type", layer="counts")
        m = sa.model.CGRAN(data, **{**TINY, "n_top_genes": 30})
        m.train(max_epochs=1, batch_size=16)
        return m.predict(inplace=False).probabilities.to_numpy()

    np.testing.assert_array_equal(run(), run())


@pytest.mark.parametrize("kwargs", [
    {"grouping": "kmeans", "n_groups": 3},
    {"grouping": "full"},
    {"embedding_method": "gd"},
    {"genes": [f"MK{k}_{i}" for k in range(3) for i in range(5)] + ["G20", "G21"]},
])
def test_architecture_options_train(kwargs):
    sa.settings.seed = 0
    data = make_counts(n_cells=60, n_genes=40)
    sa.model.CGRAN.setup_anndata(data, labels_key="cell_type", layer="counts")
    m = sa.model.CGRAN(data, **{**TINY, **kwargs})
    m.train(max_epochs=1, batch_size=16)
    assert m.predict(inplace=False).probabilities.shape == (60, 3)


def test_lognormalised_input():
    data = make_counts(n_cells=60, n_genes=40)
    sc.pp.normalize_total(data, target_sum=1e4)
    sc.pp.log1p(data)
    sa.model.CGRAN.setup_anndata(data, labels_key="cell_type", expression="log1p")
    m = sa.model.CGRAN(data, **{**TINY, "n_top_genes": 30})
    m.train(max_epochs=1, batch_size=16)
    m.predict()
    assert "cgran_prediction" in data.obs


# -- bad input: clear errors, adata untouched -----------------------------------------------------
def _setup_error(adata, exc, match, **kwargs):
    snap = _snapshot(adata)
    with pytest.raises(exc, match=match):
        sa.model.CGRAN.setup_anndata(adata, **{"labels_key": "cell_type", **kwargs})
    _unchanged(adata, snap)


def test_bad_setup_inputs(adata):
    _setup_error(adata, KeyError, "Layer 'raw_counts' not found", layer="raw_counts")
    _setup_error(adata, KeyError, "labels_key 'celltype' is not a column", labels_key="celltype")
    neg = adata.copy()
    neg.X = neg.X.toarray() - 1
    _setup_error(neg, ValueError, "negative values")
    nan = adata.copy()
    nan.X = nan.X.toarray()
    nan.X[0, 0] = np.nan
    _setup_error(nan, ValueError, "NaN or infinite")
    frac = adata.copy()
    frac.X = frac.X * 0.5
    _setup_error(frac, ValueError, "non-integer values.*expression='log1p'")
    dup = adata.copy()
    dup.var_names = ["G0"] * 2 + list(dup.var_names[2:])
    _setup_error(dup, ValueError, "duplicated gene names")
    empty = adata.copy()
    dense = empty.X.toarray()
    dense[3, :] = 0
    empty.X = sparse.csr_matrix(dense)
    _setup_error(empty, ValueError, "1 cells with no expression")
    one = adata.copy()
    one.obs["cell_type"] = "type0"
    _setup_error(one, ValueError, "single labelled class")
    none = adata.copy()
    none.obs["cell_type"] = "Unknown"
    _setup_error(none, ValueError, "All cells .* are unlabelled")


def test_nan_labels_are_unlabelled(adata):
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[:10, 0] = np.nan
    sa.model.CGRAN.setup_anndata(adata, labels_key="cell_type", layer="counts")
    m = sa.model.CGRAN(adata, **TINY)
    assert m.classes_ == ["type0", "type1", "type2"]
    codes = adata.obs["_scvi_labels"].to_numpy()
    assert (codes[:10] == 3).all() and (codes[10:] < 3).all()
    assert adata.obs["cell_type"].isna().sum() == 10  # the user's column is untouched


def test_bad_predict_inputs_leave_adata_untouched(trained):
    model, adata = trained
    for bad, match in [
        ({"unknown_threshold": 1.5}, "unknown_threshold must be in"),
        ({"unknown_threshold": 0.0}, "unknown_threshold must be in"),
        ({"attention_top_k": 0}, "attention_top_k must be"),
    ]:
        target = adata.copy()
        snap = _snapshot(target)
        with pytest.raises(ValueError, match=match):
            model.predict(target, **bad)
        _unchanged(target, snap)
    neg = adata.copy()
    neg.layers["counts"] = neg.layers["counts"].toarray() - 1
    snap = _snapshot(neg)
    with pytest.raises(ValueError, match="negative"):
        model.predict(neg)
    _unchanged(neg, snap)
    nolayer = adata.copy()
    del nolayer.layers["counts"]
    with pytest.raises(KeyError, match="Layer 'counts' not found"):
        model.predict(nolayer)


def test_bad_init_arguments(adata):
    sa.model.CGRAN.setup_anndata(adata, labels_key="cell_type", layer="counts")
    with pytest.raises(ValueError, match="grouping must be"):
        sa.model.CGRAN(adata, **{**TINY, "grouping": "random"})
    with pytest.raises(ValueError, match="not in adata.var_names"):
        sa.model.CGRAN(adata, **{**TINY, "genes": ["nope"]})
    with pytest.raises(ValueError, match="dropout"):
        sa.model.CGRAN(adata, **{**TINY, "dropout": 1.5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sa.model.CGRAN(adata, **TINY)
    with pytest.raises(ValueError, match="max_epochs"):
        m.train(max_epochs=0)


# -- regressions from review ---------------------------------------------------------------------
def test_load_does_not_refit_and_accepts_any_cells(trained, tmp_path):
    """Loading onto 10 cells of the training data rebuilds the saved model, not a refit one."""
    model, adata = trained
    model.save(tmp_path / "m", overwrite=True)
    few = adata[:10].copy()
    loaded = sa.model.CGRAN.load(tmp_path / "m", adata=few)
    ref = model.predict(adata, inplace=False).probabilities.to_numpy()
    np.testing.assert_allclose(loaded.predict(adata, inplace=False).probabilities.to_numpy(), ref, atol=1e-6)


def test_load_with_other_genes_is_clear(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "m", overwrite=True)
    shuffled = adata[:, np.random.default_rng(1).permutation(adata.n_vars)].copy()
    with pytest.raises(ValueError, match="in another order.*model.predict"):
        sa.model.CGRAN.load(tmp_path / "m", adata=shuffled)
    with pytest.raises(ValueError, match="holds no AnnData.*save_anndata=True"):
        sa.model.CGRAN.load(tmp_path / "m")
    model.save(tmp_path / "with_data", overwrite=True, save_anndata=True)
    loaded = sa.model.CGRAN.load(tmp_path / "with_data")
    assert loaded.predict(adata, inplace=False).probabilities.shape == (adata.n_obs, 3)


def test_prediction_on_new_data_keeps_no_copy(trained):
    model, adata = trained
    store = model._per_instance_manager_store[model.id]
    before = len(store)
    other = adata.copy()
    model.predict(other, inplace=False)
    model.get_latent_representation(other)
    model.get_attention(other, indices=[0])
    assert len(store) == before


def test_missing_library_genes_warn(trained):
    model, adata = trained
    sub = adata[:, list(model.var_names_)].copy()  # every model gene, none of the others
    with pytest.warns(UserWarning, match="20 of the 80 genes the model takes library sizes over"):
        model.predict(sub, inplace=False)


def test_layer_error_names_setup_layer(trained):
    model, adata = trained
    other = adata.copy()
    del other.layers["counts"]
    with pytest.raises(KeyError, match="set up with layer='counts'"):
        model.predict(other)


def test_train_without_validation_set():
    sa.settings.seed = 0
    data = make_counts(n_cells=60, n_genes=40)
    sa.model.CGRAN.setup_anndata(data, labels_key="cell_type", layer="counts")
    m = sa.model.CGRAN(data, **{**TINY, "n_top_genes": 30})
    m.train(max_epochs=1, train_size=0.9, validation_size=0.0, batch_size=16)
    assert m.is_trained_ and "validation_loss" not in m.history


# -- the fast training kernels (scattn.nn._local_attention) compute the paper's attention exactly --
def _groups(grouping, n_genes):
    import torch

    from scattn.data import make_gene_groups
    from scattn.nn import GeneGroups

    gi = make_gene_groups(n_genes, grouping, group_size=50, n_groups=4,
                          features=np.random.default_rng(0).normal(size=(n_genes, 5)))
    return GeneGroups(torch.tensor(gi))


@pytest.mark.parametrize("grouping, n_genes, chunk_bytes", [
    ("uniform", 150, 1), ("uniform", 130, 1 << 30), ("kmeans", 130, 1), ("full", 40, 1 << 30),
])
def test_shared_base_block_equals_explicit_tokens(grouping, n_genes, chunk_bytes, monkeypatch):
    """Block 1 (tokens B_j + s_0, factorised, chunked) = the same block on explicit tokens
    (per-cell gene tokens, fused SDPA): outputs, attention and every gradient, in float64."""
    import torch

    import scattn.nn._local_attention as la
    from scattn.nn import LocalAttentionBlock

    monkeypatch.setattr(la, "_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    groups = _groups(grouping, n_genes)
    block = LocalAttentionBlock(12, 3, 4, dropout=0.0).double()
    cell, base = torch.randn(5, 12, dtype=torch.double), 2 * torch.randn(n_genes, 12, dtype=torch.double)
    weight = torch.randn(n_genes, 12, dtype=torch.double)
    results = []
    for explicit in (False, True):
        block.zero_grad()
        if explicit:
            c, g, w = block(cell, base.unsqueeze(0) + cell.unsqueeze(1), groups=groups, return_attention=True)
        else:
            c, g, w = block(cell, gene_base=base, groups=groups, return_attention=True)
        (3 * c.sum() + (g * weight).sum() + w[..., 1:].pow(2).sum()).backward()
        results.append((c, g, w, [p.grad.clone() for p in block.parameters()]))
    with torch.no_grad():  # inference keeps nothing for a backward and reuses one chunk buffer
        c3, g3, w3 = block(cell, gene_base=base, groups=groups, return_attention=True)
    (c1, g1, w1, grads1), (c2, g2, w2, grads2) = results
    for a, b in [(c1, c2), (g1, g2), (w1, w2), (c3, c1), (g3, g1), (w3, w1), *zip(grads1, grads2, strict=True)]:
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_cell_query_block_equals_explicit_tokens():
    """Block 2 (cell token only; keys and values folded into the projections) = SDPA on the
    projected gene tokens: output, attention and gradients."""
    import torch

    from scattn.nn import LocalAttentionBlock

    torch.manual_seed(1)
    groups = _groups("uniform", 120)
    block = LocalAttentionBlock(10, 2, 4, dropout=0.0).double()
    cell = torch.randn(4, 10, dtype=torch.double, requires_grad=True)
    genes = torch.randn(4, 120, 10, dtype=torch.double, requires_grad=True)
    c1, _, w1 = block(cell, genes, groups=groups, cell_only=True, return_attention=True)
    g1 = torch.autograd.grad((c1 * torch.arange(8)).sum(), [cell, genes, *block.parameters()])
    att = block.attention
    c_att, _, w2 = att._grouped_sdpa(cell, genes, None, groups, True, True)
    import torch.nn.functional as F

    c2 = F.normalize(c_att + block.residual(cell), dim=-1)
    g2 = torch.autograd.grad((c2 * torch.arange(8)).sum(), [cell, genes, *block.parameters()])
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(w1, w2)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


def test_shared_base_underflow_falls_back(monkeypatch):
    """Scores spread by hundreds within a group underflow the factorised softmax: the block
    then takes the general path and stays finite and equal to it."""
    import torch

    from scattn.nn import LocalAttentionBlock, LocalMultiheadAttention

    general = LocalMultiheadAttention._grouped_sdpa
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return general(*args, **kwargs)

    monkeypatch.setattr(LocalMultiheadAttention, "_grouped_sdpa", counted)
    torch.manual_seed(2)
    groups = _groups("uniform", 100)
    block = LocalAttentionBlock(8, 2, 4, dropout=0.0)
    with torch.no_grad():
        block.attention.qkv.weight.mul_(40.0)
    cell, base = torch.randn(3, 8), 5 * torch.randn(100, 8)
    c1, g1, _ = block(cell, gene_base=base, groups=groups)
    assert len(calls) == 1  # the factorised path gave up
    c2, g2, _ = block(cell, base.unsqueeze(0) + cell.unsqueeze(1), groups=groups)
    assert torch.isfinite(g1).all()
    torch.testing.assert_close(g1, g2, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(c1, c2, atol=1e-4, rtol=1e-4)


def test_shared_base_padded_groups_with_very_negative_scores():
    """Padded groups (k-means, or genes not a multiple of the group size) whose real scores for
    the cell query are all far below zero: padding must weigh nothing (it overflowed to NaN)."""
    import torch

    from scattn.nn import LocalAttentionBlock

    groups = _groups("uniform", 130)  # groups of 50: the last is padded
    assert groups.padded
    torch.manual_seed(0)
    block = LocalAttentionBlock(4, 1, 4, dropout=0.0)
    with torch.no_grad():
        block.attention.qkv.weight.copy_(torch.eye(4).repeat(3, 1))
        block.attention.qkv.bias.zero_()
    # the cell query's score for every gene key is about 4 * 10 * -5 / 2 = -100 (float32: e^100
    # overflows)
    cell = 10 * torch.ones(3, 4)
    base = -5 * torch.ones(130, 4) + 0.01 * torch.randn(130, 4)
    c1, g1, _ = block(cell, gene_base=base, groups=groups)
    c2, g2, _ = block(cell, base.unsqueeze(0) + cell.unsqueeze(1), groups=groups)
    assert torch.isfinite(g1).all() and torch.isfinite(c1).all()
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(c1, c2, atol=1e-5, rtol=1e-4)


def test_gene_token_dropout_rate_and_seed():
    """The gene tokens' dropout keeps 1 - p of the elements, scales them by 1 / (1 - p) and
    repeats under a seed."""
    import torch

    import scattn.nn._local_attention as la

    threshold, scale = la._dropout_level(0.1)
    torch.manual_seed(3)
    keep = la._uniform16(400_000, "cpu") >= threshold
    assert abs(keep.float().mean().item() - 0.9) < 3e-3
    assert abs(scale * 0.9 - 1) < 1e-4
    torch.manual_seed(3)
    torch.testing.assert_close(la._uniform16(400_000, "cpu") >= threshold, keep)


@pytest.mark.parametrize("restore", [True, False])
def test_restore_best_weights(restore):
    """With restore_best_weights (the default) the model ends on the weights of its best
    validation epoch (highest accuracy, ties to the lower loss); without, on the last epoch's."""
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    data = make_counts()
    sa.model.CGRAN.setup_anndata(data, labels_key="cell_type", layer="counts")
    model = sa.model.CGRAN(data, **TINY)
    model.train(max_epochs=6, lr=0.05, early_stopping=False, restore_best_weights=restore,
                check_val_every_n_epoch=1)
    history = model.history["validation_loss"].to_numpy().ravel()
    idx = model.validation_indices
    proba = model.predict_proba(indices=idx).to_numpy()
    y = data.obs["cell_type"].astype(str).to_numpy()[idx]
    loss = -np.mean(np.log(proba[np.arange(len(y)), [model.classes_.index(c) for c in y]]))
    expected = history[best_validation_epoch(model.history)] if restore else history[-1]
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
