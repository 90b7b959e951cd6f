"""scGPT-style model: value bins, tokens, tasks, generative mask, annotation, integration,
response prediction, gene embeddings and attention, save/load, bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import scattn as sa
from scattn.module import MODULE_KEYS
from scattn.nn import bin_values
from tests.conftest import best_validation_epoch, make_counts

TINY = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_ff": 32, "max_length": 24}


def _data(n=96, seed=4):
    a = make_counts(n, seed=seed)
    rng = np.random.default_rng(seed)
    a.obs["batch"] = pd.Categorical(rng.choice(["b1", "b2"], n))
    a.obs["condition"] = pd.Categorical(rng.choice(["control", "stimulated"], n))
    return a


@pytest.fixture(scope="module")
def integrated():
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    a = _data()
    sa.model.SCGPT.setup_anndata(a, layer="counts", batch_key="batch", condition_key="condition")
    m = sa.model.SCGPT(a, **TINY)
    m.pretrain(max_epochs=1)
    m.train(max_epochs=2)
    return m, a


@pytest.fixture(scope="module")
def annotator():
    sa.settings.seed = 0
    a = make_counts(90, seed=1)
    sa.model.SCGPT.setup_anndata(a, labels_key="cell_type", layer="counts")
    m = sa.model.SCGPT(a, **TINY)
    m.train(max_epochs=2)
    return m, a


# -- binning and tokens -----------------------------------------------------------------------
def test_bins_equal_scgpts_quantile_digitize():
    rng = np.random.default_rng(0)
    x = rng.negative_binomial(1, 0.3, size=(50, 80)).astype(float) * (rng.random((50, 80)) < 0.4)
    x[0] = 0  # an empty cell
    x[1, :] = 0
    x[1, 3] = 5  # one expressed gene: the top bin
    bins = bin_values(torch.as_tensor(x), 51).numpy()
    assert (bins[x == 0] == 0).all() and bins[1, 3] == 50
    for i in range(2, 50):
        nz = x[i] > 0
        edges = np.quantile(x[i, nz], np.linspace(0, 1, 50))
        np.testing.assert_array_equal(bins[i, nz], np.digitize(x[i, nz], edges))


def test_bins_do_not_depend_on_library_size_or_log():
    x = torch.poisson(torch.rand(6, 40) * 4)
    b = bin_values(x, 51)
    assert torch.equal(b, bin_values(3 * x, 51))
    assert torch.equal(b, bin_values(torch.log1p(x / x.sum(1, keepdim=True) * 1e4), 51))


def test_tokens_are_the_expressed_genes(integrated):
    m, a = integrated
    x = torch.as_tensor(a.layers["counts"].toarray(), dtype=torch.float32)
    ids, lengths, columns, values, target = m.module.tokenize(x)
    assert (ids[:, 0] == m.module.cls_id).all() and (values[:, 0] == 0).all()
    n_expr = (x > 0).sum(1)
    np.testing.assert_array_equal(lengths.numpy(), (n_expr.clamp(max=TINY["max_length"] - 1) + 1).numpy())
    real = columns >= 0
    assert (x.gather(1, columns.clamp_min(0))[real] > 0).all()  # every gene token is expressed
    assert (values[real] >= 1).all() and (values[real] <= 50).all()
    assert (values[~real][:, None].squeeze() != 0).sum() >= 0  # padding holds pad_value
    pad = (~real) & (torch.arange(ids.shape[1])[None] > 0)
    assert (values[pad] == -2).all() and (ids[pad] == m.module.pad_id).all()
    # inference keeps the most expressed genes; training samples at random among them
    cell = int(n_expr.argmax())
    kept = x[cell, columns[cell, 1:]]
    assert kept.min() >= x[cell].sort(descending=True).values[TINY["max_length"] - 2]


def test_generative_mask_hides_unknown_tokens_from_known_ones(integrated):
    m, a = integrated
    mod = m.module.eval()
    x = torch.as_tensor(a.layers["counts"].toarray()[:8], dtype=torch.float32)
    ids, lengths, columns, values, _ = mod.tokenize(x)
    torch.manual_seed(0)
    unknown = mod._choose_masked(columns, 0.5)
    h1, _ = mod.encode(ids, values.masked_fill(unknown, -1), lengths, unknown=unknown)
    v2 = values.clone()
    v2[unknown] = 9.0
    h2, _ = mod.encode(ids, v2, lengths, unknown=unknown)
    real = torch.arange(ids.shape[1])[None] < lengths[:, None]
    known = real & ~unknown
    torch.testing.assert_close(h1[known], h2[known])
    assert not torch.allclose(h1[unknown], h2[unknown])
    # without the mask, known tokens see the unknown ones
    h3, _ = mod.encode(ids, v2, lengths)
    h4, _ = mod.encode(ids, values.masked_fill(unknown, -1), lengths)
    assert not torch.allclose(h3[known], h4[known])


def test_every_task_gives_a_finite_loss_with_gradients(integrated):
    m, a = integrated
    mod = m.module.train()
    x = torch.as_tensor(a.layers["counts"].toarray()[:16], dtype=torch.float32)
    tensors = {"X": x, "batch": torch.tensor(a.obs["batch"].cat.codes.to_numpy()[:16, None]),
               "condition": torch.tensor(a.obs["condition"].cat.codes.to_numpy()[:16, None])}
    out = mod.inference(**mod._get_inference_input(tensors), mask_ratio=0.4, generative=True,
                        tasks=("gep", "gepc", "ecs", "dar"))
    loss = mod.loss(tensors, out, {}, objective="multitask",
                    weights={"gep": 1, "gepc": 1, "ecs": 10, "dar": 1})
    assert torch.isfinite(loss.loss)
    assert set(loss.extra_metrics) == {"gep", "gepc", "ecs", "dar"}
    loss.loss.backward()
    assert mod.batch_discriminator.out_layer.weight.grad is not None
    mod.zero_grad()
    mod.eval()


# -- training and outputs ---------------------------------------------------------------------
def test_pretrain_and_integration_histories(integrated):
    m, _ = integrated
    assert m.is_pretrained_ and m.is_trained_
    assert {"gep_train", "gepc_train"} <= set(m.pretrain_history_)
    assert {"gep_train", "gepc_train", "ecs_train", "dar_train"} <= set(m.history)
    assert np.isfinite(m.history["train_loss"].to_numpy(dtype=float)).all()


def test_integration_predict_writes_embedding_and_attention(integrated):
    m, a = integrated
    b = a.copy()
    m.predict(b)
    assert b.obsm["X_scgpt"].shape == (b.n_obs, 16)
    att = b.layers["scgpt_attention"]
    assert att.shape == b.shape and att.nnz > 0
    assert b.uns["scgpt"]["params"]["model"] == "SCGPT"
    np.testing.assert_allclose(b.obsm["X_scgpt"], m.get_latent_representation(b), atol=1e-5)


def test_attention_is_cls_attention_on_expressed_genes(integrated):
    m, a = integrated
    att = m.get_attention(a).toarray() if hasattr(m.get_attention(a), "toarray") else m.get_attention(a)
    att = np.asarray(att)
    counts = a.layers["counts"].toarray()
    assert (att[counts == 0] == 0).all()
    assert (att.sum(1) <= 1 + 1e-5).all() and (att.sum(1) > 0).all()


def test_predict_response_differs_between_conditions(integrated):
    m, a = integrated
    ctrl = a[a.obs["condition"] == "control"].copy()
    stim = m.predict_response(ctrl, condition="stimulated")
    same = m.predict_response(ctrl, condition="control")
    assert stim.shape == (ctrl.n_obs, len(m.var_names_)) and np.isfinite(stim).all()
    assert not np.allclose(stim, same)
    m.predict_response(ctrl, condition="stimulated", layer_added="scgpt_stimulated")
    layer = ctrl.layers["scgpt_stimulated"].toarray()
    np.testing.assert_allclose(layer, np.clip(stim, 0, None), atol=1e-5)
    perm = np.random.default_rng(0).permutation(ctrl.n_vars)  # the layer follows adata's genes
    shuffled = ctrl[:, perm].copy()
    m.predict_response(shuffled, condition="stimulated", layer_added="scgpt_stimulated")
    assert sparse.isspmatrix_csr(shuffled.layers["scgpt_stimulated"])
    np.testing.assert_allclose(shuffled.layers["scgpt_stimulated"].toarray(), np.clip(stim, 0, None)[:, perm],
                               atol=1e-5)
    with pytest.raises(ValueError, match="not one the model was trained with"):
        m.predict_response(ctrl, condition="IFN-gamma")


def test_unseen_condition_level_is_a_clear_error(integrated):
    m, a = integrated
    b = a.copy()
    b.obs["condition"] = pd.Categorical(["LPS"] * b.n_obs)
    with pytest.raises(ValueError, match="level.*not trained with.*LPS"):
        m.get_latent_representation(b)


def test_gene_embeddings_and_gene_attention(integrated):
    m, a = integrated
    emb = m.get_gene_embeddings()
    assert emb.shape == (a.n_vars, 16) and list(emb.index) == list(a.var_names)
    genes = list(a.var_names[:10])
    ga = m.get_gene_attention(a, genes=genes)
    assert ga.shape == (10, 10) and list(ga.index) == genes
    full = m.get_gene_attention(a)
    np.testing.assert_allclose(ga.to_numpy(), full.loc[genes, genes].to_numpy(), atol=1e-10)
    finite = np.isfinite(full.to_numpy())
    assert finite.any() and (full.to_numpy()[finite] >= 0).all()


def test_annotation_predicts_and_writes_slots(annotator):
    m, a = annotator
    assert m.history["cls_train"].notna().all().all()
    b = a.copy()
    m.predict(b)
    for key in ("scgpt_prediction", "scgpt_confidence"):
        assert key in b.obs
    assert "scgpt_markers" in b.uns and b.obsm["X_scgpt"].shape == (b.n_obs, 16)


def test_from_pretrained_starts_a_classifier(integrated):
    m, _ = integrated
    sa.settings.seed = 0
    lab = make_counts(60, seed=2)
    lab.obs["batch"] = pd.Categorical(np.where(np.arange(60) % 2, "b1", "b2"))
    sa.model.SCGPT.setup_anndata(lab, labels_key="cell_type", layer="counts", batch_key="batch")
    clf = sa.model.SCGPT.from_pretrained(m, lab)
    src = m.module.state_dict()["gene_encoder.embedding.weight"]
    torch.testing.assert_close(clf.module.state_dict()["gene_encoder.embedding.weight"], src)
    clf.train(max_epochs=1)
    assert len(clf.predict(lab, inplace=False).prediction) == lab.n_obs


def test_save_load_gives_identical_outputs(integrated, tmp_path):
    m, a = integrated
    m.save(tmp_path / "m", save_anndata=True)
    back = sa.model.SCGPT.load(tmp_path / "m")
    np.testing.assert_allclose(back.get_latent_representation(), m.get_latent_representation(), atol=1e-6)
    np.testing.assert_allclose(back.predict_response(condition="stimulated"),
                               m.predict_response(condition="stimulated"), atol=1e-6)


def test_deterministic_training_under_a_seed():
    outs = []
    for _ in range(2):
        sa.settings.seed = 3
        a = _data(48, seed=5)
        sa.model.SCGPT.setup_anndata(a, layer="counts")
        m = sa.model.SCGPT(a, **TINY)
        m.train(max_epochs=1)
        outs.append(m.get_latent_representation())
    np.testing.assert_array_equal(outs[0], outs[1])


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_is_refused_clearly():
    a = _data(40)
    with pytest.raises(TypeError, match="condition_key"):
        sa.model.Geneformer.setup_anndata(a, layer="counts", condition_key="condition")
    sa.model.SCGPT.setup_anndata(a, layer="counts")
    m = sa.model.SCGPT(a, **TINY)
    with pytest.raises(ValueError, match="DAR .* needs at least two batches"):
        m.train(max_epochs=1, tasks=("gep", "dar"))
    with pytest.raises(ValueError, match="Unknown task"):
        m.train(max_epochs=1, tasks=("gep", "rank"))
    with pytest.raises(ValueError, match="no classifier"):
        m.train(max_epochs=1, tasks=("cls",))
    with pytest.raises(ValueError, match="no condition tokens"):
        m.predict_response(condition="stimulated")
    b = a.copy()
    counts = b.layers["counts"].toarray()
    counts[:5] = 0
    b.layers["counts"] = counts
    with pytest.raises(ValueError, match="5 cells with no expression"):
        sa.model.SCGPT.setup_anndata(b, layer="counts")
    # new cells expressing no vocabulary gene
    m.train(max_epochs=1)
    import anndata as ad
    from scipy import sparse

    other = ad.AnnData(X=sparse.csr_matrix(np.ones((3, 2), dtype=np.float32)),
                       obs=pd.DataFrame(index=["x1", "x2", "x3"]))
    other.var_names = ["NOT_A_GENE_1", "NOT_A_GENE_2"]
    other.layers["counts"] = other.X.copy()
    with pytest.raises(ValueError, match="(?i)genes"):
        m.get_latent_representation(other)
    c = a.copy()
    c.layers["counts"] = c.layers["counts"].astype(np.float32) * 0.37
    with pytest.raises(ValueError, match="(?i)count"):
        sa.model.SCGPT.setup_anndata(c, layer="counts")


def test_attention_output_is_on_model_genes(integrated):
    m, a = integrated
    x = torch.as_tensor(a.layers["counts"].toarray()[:4], dtype=torch.float32)
    out = m.module.inference(x, torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, 1, dtype=torch.long),
                             return_attention=True)
    assert out[MODULE_KEYS.ATTENTION].shape == (4, a.n_vars)


def test_value_bins_stream_backed_files(tmp_path):
    a = make_counts(70, seed=3)
    a.X = a.layers["counts"].copy()
    path = tmp_path / "a.h5ad"
    a.write_h5ad(path)
    import anndata as ad

    backed = ad.read_h5ad(path, backed="r")
    streamed = sa.data.value_bins(backed.X, chunk_size=16, rows_per_step=7)
    direct = bin_values(torch.as_tensor(a.X.toarray(), dtype=torch.float32), 51).numpy()
    np.testing.assert_array_equal(streamed.toarray(), direct)
    assert streamed.nnz == a.X.nnz and streamed.dtype == np.uint8


@pytest.mark.parametrize("restore", [True, False])
def test_restore_best_weights(restore):
    """`restore_best_weights=True` ends on the weights of the best validation epoch (highest
    accuracy, ties to the lower loss, here the CLS cross-entropy); the default keeps the last
    epoch's."""
    sa.settings.seed = 0
    a = make_counts(90, seed=1)
    sa.model.SCGPT.setup_anndata(a, labels_key="cell_type", layer="counts")
    m = sa.model.SCGPT(a, **TINY)
    m.train(max_epochs=5, lr=0.02, early_stopping=False, restore_best_weights=restore,
            check_val_every_n_epoch=1)
    history = m.history["validation_loss"].to_numpy().ravel().astype(float)
    idx = m.validation_indices
    proba = m.predict_proba(indices=idx).to_numpy()
    y = a.obs["cell_type"].astype(str).to_numpy()[idx]
    loss = -np.mean(np.log(proba[np.arange(len(y)), [m.classes_.index(c) for c in y]]))
    expected = history[best_validation_epoch(m.history)] if restore else history[-1]
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


def test_pretrained_only_model_embeds_without_warning(recwarn):
    """A pretrained (not fine-tuned) model's zero-shot embedding, attention and response are
    what a checkpoint is loaded for: no "untrained model" warning; its classifier head is."""
    sa.settings.seed = 0
    a = _data(40, seed=2)
    a.obs["label"] = a.obs["cell_type"].astype(str)
    sa.model.SCGPT.setup_anndata(a, layer="counts", labels_key="label", condition_key="condition")
    m = sa.model.SCGPT(a, **TINY)
    m.pretrain(max_epochs=1)
    m.get_latent_representation()
    m.predict_response(a, condition="stimulated")
    m.get_gene_attention(a, indices=[0, 1])
    assert not [w for w in recwarn if "untrained" in str(w.message)]
    with pytest.warns(UserWarning, match="untrained"):
        m.predict(a.copy(), inplace=False)
    fresh = sa.model.SCGPT(a, **TINY)
    with pytest.warns(UserWarning, match="untrained"):
        fresh.get_latent_representation()


def test_cells_without_model_genes_get_nan_everywhere(integrated):
    """Cells with counts only on genes outside the model: NaN response and embedding rows, one
    warning each with their number (as predict labels them Unknown)."""
    m, a = integrated
    q = a[:6].copy()
    q.X = q.X.toarray()
    q.X[[1, 4]] = 0
    extra = np.zeros((6, 1), dtype=np.float32)
    extra[[1, 4]] = 3
    q = ad.concat([q, ad.AnnData(extra, obs=q.obs, var=pd.DataFrame(index=["OUTSIDE"]))], axis=1,
                  merge="first")
    q.layers["counts"] = q.X.copy()
    with pytest.warns(UserWarning, match="2 cells have no counts on any") as got:
        response = m.predict_response(q, condition="stimulated")
    assert len([w for w in got if "no counts" in str(w.message)]) == 1
    assert np.isnan(response[[1, 4]]).all() and np.isfinite(np.delete(response, [1, 4], 0)).all()
    with pytest.warns(UserWarning, match="2 cells have no counts on any.*embedding"):
        z = m.get_latent_representation(q)
    assert np.isnan(z[[1, 4]]).all() and np.isfinite(np.delete(z, [1, 4], 0)).all()


def test_pooling_mean_reads_the_gene_tokens(tmp_path):
    """``pooling="mean"``: the embedding is the mean of the gene tokens' states (not <cls>,
    not padding), the attribution averages every real token's attention, and the choice is
    saved with the model; an unknown pooling is refused."""
    from scattn.nn import pool_tokens, received_attention

    h = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    columns = torch.tensor([[-1, 0, 1, -1], [-1, 2, -1, -1]])
    assert torch.equal(pool_tokens(h, columns, "cls"), h[:, 0])
    assert torch.allclose(pool_tokens(h, columns, "mean"), torch.stack([h[0, 1:3].mean(0), h[1, 1]]))
    w = torch.softmax(torch.randn(2, 1, 4, 4), -1)
    lengths = torch.tensor([3, 2])
    assert torch.allclose(received_attention(w, lengths, "mean")[1, 0], w[1, 0, :2].mean(0))
    with pytest.raises(ValueError, match="pooling"):
        pool_tokens(h, columns, "max")

    sa.settings.seed = 0
    a = make_counts(60, seed=2)
    sa.model.SCGPT.setup_anndata(a, labels_key="cell_type", layer="counts")
    with pytest.raises(ValueError, match="pooling"):
        sa.model.SCGPT(a, pooling="max", **TINY)
    m = sa.model.SCGPT(a, pooling="mean", **TINY)
    m.train(max_epochs=1)
    assert m.module.pooling == "mean" and "mean pooling" in m._model_summary_string
    assert "averaged over every token" in m._attention_description
    z = m.get_latent_representation()
    assert z.shape == (60, TINY["d_model"]) and np.isfinite(z).all()
    m.save(tmp_path / "m")
    assert sa.model.SCGPT.load(tmp_path / "m", adata=a).module.pooling == "mean"


def test_training_reads_the_tokens_inference_reads():
    """By default a cell expressing more genes than ``max_length - 1`` trains on its most
    expressed ones, as inference reads it (random subsets trained a classifier that predicted
    at chance at inference); ``sample_tokens=True`` keeps scGPT's random subsets."""
    sa.settings.seed = 0
    a = make_counts(40, seed=3)
    sa.model.SCGPT.setup_anndata(a, labels_key="cell_type", layer="counts")
    x = torch.as_tensor(a.layers["counts"][:8].toarray() if sparse.issparse(a.layers["counts"])
                        else a.layers["counts"][:8], dtype=torch.float32)
    assert int((x > 0).sum(1).min()) > TINY["max_length"]  # every cell is cut
    for sample, same in ((False, True), (True, False)):
        module = sa.model.SCGPT(a, sample_tokens=sample, **TINY).module.train()
        torch.manual_seed(1)
        z1 = module.inference(x)[MODULE_KEYS.Z]
        torch.manual_seed(2)
        z2 = module.inference(x)[MODULE_KEYS.Z]
        assert torch.allclose(z1, z2) is same
        module.eval()
        assert torch.allclose(module.inference(x)[MODULE_KEYS.Z], z1) is same
