"""Geneformer-style model: tokens, masked pretraining, fine-tuning, slots, genes by ID, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import scattn as sa
from scattn.data import rank_value_encode
from scattn.module import MODULE_KEYS
from scattn.nn import padding_mask, run_blocks
from tests.conftest import make_counts

TINY_GF = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_ff": 32, "max_length": 32}


def _unlabelled(n=120, seed=4):
    a = make_counts(n, seed=seed)
    del a.obs["cell_type"]
    return a


@pytest.fixture(scope="module")
def pretrained():
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    a = _unlabelled()
    sa.model.Geneformer.setup_anndata(a, layer="counts")
    m = sa.model.Geneformer(a, **TINY_GF)
    m.pretrain(max_epochs=2, batch_size=32)
    return m


@pytest.fixture(scope="module")
def finetuned(pretrained):
    sa.settings.seed = 0
    data = make_counts(90, seed=1)
    sa.model.Geneformer.setup_anndata(data, labels_key="cell_type", layer="counts")
    m = sa.model.Geneformer.from_pretrained(pretrained, data)
    m.train(max_epochs=2, batch_size=32)
    return m, data


def test_module_tokens_equal_the_file_tokeniser(pretrained):
    a = pretrained.adata
    x = torch.as_tensor(a.layers["counts"].toarray())
    ids, lengths, genes = pretrained.module.tokenize(x)
    medians = pretrained.module.medians_float64().numpy()  # the float64 medians it ranks by
    ref = rank_value_encode(a.layers["counts"], np.arange(a.n_vars) + 3, medians, max_length=32,
                            cls_id=2)
    np.testing.assert_array_equal(ids.numpy(), ref.input_ids[:, : ids.shape[1]])
    np.testing.assert_array_equal(lengths.numpy(), ref.lengths)
    # each token's gene is the gene of its id; <cls> and padding have none
    real = genes >= 0
    assert torch.equal(ids[real], genes[real] + 3)
    assert (genes[:, 0] == -1).all()


def test_pretrain_learns_and_keeps_history(pretrained):
    hist = pretrained.pretrain_history_
    assert pretrained.is_pretrained_ and not pretrained.is_trained_
    assert "train_loss" in hist and "masked_accuracy_train" in hist
    # masked-gene cross-entropy starts near log(vocab) and falls
    assert hist["train_loss"].iloc[0, 0] < np.log(pretrained.module.vocab_size) + 0.5
    assert not pretrained.module.has_head
    with pytest.raises(ValueError, match="no classifier"):
        pretrained.predict()


def test_masked_loss_scores_only_chosen_positions(pretrained):
    module = pretrained.module
    module.train()
    torch.manual_seed(0)
    x = torch.as_tensor(pretrained.adata.layers["counts"][:8].toarray())
    out = module.inference(x, mask_ratio=0.15)
    n_chosen = out[MODULE_KEYS.TARGET].numel()
    assert out[MODULE_KEYS.RECONSTRUCTION].shape == (n_chosen, module.vocab_size)
    assert (out[MODULE_KEYS.TARGET] >= len(module.special_tokens)).all()  # genes, never specials
    loss = module.masked_loss({}, out, {})
    assert loss.n_obs_minibatch == n_chosen and torch.isfinite(loss.loss)
    module.eval()


def test_finetune_predicts_every_slot(finetuned):
    model, data = finetuned
    assert model.is_pretrained_ and model.is_trained_
    adata = data.copy()
    model.predict(adata)
    for key in ("geneformer_prediction", "geneformer_confidence"):
        assert key in adata.obs
    assert adata.obsm["X_geneformer"].shape == (adata.n_obs, 16)
    att = adata.layers["geneformer_attention"]
    assert sparse.issparse(att) and att.shape == adata.shape
    assert "geneformer_markers" in adata.uns and "params" in adata.uns["geneformer"]
    assert "<cls>" in adata.uns["geneformer"]["params"]["attention"]
    # attribution goes only to genes the cell expresses (they are its tokens)
    counts = adata.layers["counts"].toarray()
    dense = att.toarray()
    assert (dense[counts == 0] == 0).all()


def test_attention_is_cls_row_of_last_layer(finetuned):
    model, data = finetuned
    module = model.module
    module.eval()
    x = torch.as_tensor(data.layers["counts"][:5].toarray())
    out = module.inference(x, return_attention=True)
    ids, lengths, genes = module.tokenize(x)
    _, weights = module.encoder(ids, lengths, attention="last")
    row = weights[0][:, :, 0, :].mean(1)
    expected = torch.zeros(5, module.genes.n_genes).scatter_add_(1, genes.clamp_min(0), row * (genes >= 0))
    torch.testing.assert_close(out[MODULE_KEYS.ATTENTION], expected)
    # the fused path and the explicit one give the same embedding
    torch.testing.assert_close(module.inference(x)[MODULE_KEYS.Z], out[MODULE_KEYS.Z], atol=1e-5, rtol=1e-4)


def test_from_scratch_with_labels():
    sa.settings.seed = 0
    data = make_counts(90, seed=2)
    sa.model.Geneformer.setup_anndata(data, labels_key="cell_type", layer="counts")
    m = sa.model.Geneformer(data, **TINY_GF)
    assert not m.is_pretrained_
    m.train(max_epochs=2, batch_size=32)
    assert m.predict(inplace=False).probabilities.shape == (90, 3)


def test_log1p_data_start_from_a_counts_model(pretrained):
    """Ranks do not depend on the per-cell scale: log-normalised data may fine-tune a model
    pretrained on counts, and give the same tokens."""
    data = make_counts(60, seed=1)
    lognorm = data.copy()
    x = data.layers["counts"].toarray()
    lognorm.X = sparse.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4))
    del lognorm.layers["counts"]
    sa.model.Geneformer.setup_anndata(lognorm, labels_key="cell_type", expression="log1p")
    m = sa.model.Geneformer.from_pretrained(pretrained, lognorm)
    a = m.module.tokenize(torch.as_tensor(lognorm.X.toarray()))[0]
    b = pretrained.module.tokenize(torch.as_tensor(x))[0]
    assert torch.equal(a, b)


def test_genes_matched_by_id_column_and_vocabulary_errors(pretrained):
    other = make_counts(40, seed=3)
    del other.obs["cell_type"]
    other.var["ensembl"] = [f"ENSG{i:011d}" for i in range(other.n_vars)]
    other.var_names = [f"sym{i}" for i in range(other.n_vars)]
    # the pretrained model's vocabulary is gene names; symbols that are not in it: a clear error
    with pytest.raises(ValueError, match="vocabulary"):
        pretrained.get_latent_representation(other)
    # a model whose vocabulary is an ID column matches new data through that column
    sa.model.Geneformer.setup_anndata(other, layer="counts", gene_id_key="ensembl")
    m = sa.model.Geneformer(other, **TINY_GF)
    assert m.var_names_[0] == "ENSG00000000000"
    renamed = other.copy()
    renamed.var_names = [f"other{i}" for i in range(other.n_vars)]  # names differ, IDs match
    renamed = renamed[:, ::-1].copy()  # order does not matter
    np.testing.assert_allclose(m.get_latent_representation(renamed)[::1],
                               m.get_latent_representation(other), atol=1e-5)
    with pytest.raises(TypeError, match="gene_id_key"):
        sa.model.SIMS.setup_anndata(other, layer="counts", gene_id_key="ensembl")


def test_some_genes_outside_the_vocabulary_warn(finetuned):
    model, data = finetuned
    extra = data.copy()
    extra.var_names = [*data.var_names[:-5], *[f"new{i}" for i in range(5)]]
    with pytest.warns(UserWarning, match="5 of the 80 genes of adata are not in the model's vocabulary"):
        model.predict(extra, inplace=False)


def test_cells_without_vocabulary_genes(pretrained):
    a = _unlabelled(40, seed=5)
    x = a.layers["counts"].toarray()
    x[0] = 0
    x = np.hstack([x, np.eye(40, 1, dtype=np.float32)])  # cell 0 expresses one gene, not in the vocabulary
    import anndata as ad

    a = ad.AnnData(sparse.csr_matrix(x), obs=a.obs, var=pd.DataFrame(index=[*a.var_names, "outside"]))
    a.layers["counts"] = a.X.copy()
    with pytest.raises(ValueError, match="1 cells express none of the model's"):
        pretrained.pretrain(a, max_epochs=1)
    # they have no tokens to embed: NaN rows, one warning with the count
    with pytest.warns(UserWarning) as caught:
        z = pretrained.get_latent_representation(a)
    assert [str(w.message) for w in caught if "vocabulary genes" in str(w.message)] == [
        "1 cells have no counts on any of the model's 80 vocabulary genes, so no gene tokens; "
        "their embedding rows are NaN."]
    assert np.isnan(z[0]).all() and np.isfinite(z[1:]).all()


def test_emb_layer(finetuned):
    model, data = finetuned
    module = model.module
    assert module.emb_layer == 0  # a model built here embeds with its last layer
    x = torch.as_tensor(data.layers["counts"][:6].toarray())
    ids, lengths, genes = module.tokenize(x)
    h0 = module.encoder.embed(ids)
    h1, _ = run_blocks(module.encoder.blocks[:1], h0, padding_mask(lengths, ids.shape[1]))
    for layer, h in ((-1, h1), (-2, h0)):
        out = module.inference(x, emb_layer=layer)
        torch.testing.assert_close(out[MODULE_KEYS.Z], h[:, 0], atol=1e-5, rtol=1e-5)
        # the classifier reads the last layer whatever the embedding's
        torch.testing.assert_close(out[MODULE_KEYS.LOGITS], module.inference(x)[MODULE_KEYS.LOGITS])
    z = model.get_latent_representation(data, indices=np.arange(6), emb_layer=-1)
    np.testing.assert_allclose(z, h1[:, 0].detach().numpy(), atol=1e-5, rtol=1e-5)
    a = _unlabelled(20)
    sa.model.Geneformer.setup_anndata(a, layer="counts")
    m = sa.model.Geneformer(a, emb_layer=-1, **TINY_GF)
    assert m.module.emb_layer == -1 and m.init_params_["non_kwargs"]["emb_layer"] == -1
    for bad in (1, -3, 0.5, True):
        with pytest.raises(ValueError, match="emb_layer must be an integer from -2"):
            sa.model.Geneformer(a, emb_layer=bad, **TINY_GF)


def test_too_long_is_refused():
    a = _unlabelled(30)
    sa.model.Geneformer.setup_anndata(a, layer="counts")
    m = sa.model.Geneformer(a, **TINY_GF)
    with pytest.raises(ValueError, match="exceed the model's 32 positions"):
        m.module.encoder.embed(torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        sa.model.Geneformer(a, max_length=1)
    with pytest.raises(ValueError, match="preset"):
        sa.model.Geneformer(a, preset="v2")


def test_v1_preset_is_geneformer_v1():
    a = _unlabelled(20)
    sa.model.Geneformer.setup_anndata(a, layer="counts")
    m = sa.model.Geneformer(a, preset="v1")
    enc = m.module.encoder
    assert len(enc.blocks) == 6 and enc.token_embedding.embedding_dim == 256
    assert enc.blocks[0].ff_in.out_features == 512 and enc.blocks[0].attention.n_heads == 4
    assert enc.max_length == 2048 and enc.blocks[0].activation == "relu"


def test_save_load_and_from_saved_dir(finetuned, tmp_path, pretrained):
    model, data = finetuned
    model.save(tmp_path / "ft", save_anndata=True)
    loaded = sa.model.Geneformer.load(tmp_path / "ft")
    a = model.predict(data.copy(), inplace=False)
    b = loaded.predict(data.copy(), inplace=False)
    np.testing.assert_allclose(a.probabilities.to_numpy(), b.probabilities.to_numpy(), atol=1e-6)
    pretrained.save(tmp_path / "pre")
    fresh = make_counts(60, seed=7)
    sa.model.Geneformer.setup_anndata(fresh, labels_key="cell_type", layer="counts")
    m = sa.model.Geneformer.from_pretrained(str(tmp_path / "pre"), fresh)
    assert m.is_pretrained_
    torch.testing.assert_close(m.module.gene_medians, pretrained.module.gene_medians)


def test_deterministic_under_seed():
    def run():
        sa.settings.seed = 3
        d = make_counts(60, seed=8)
        sa.model.Geneformer.setup_anndata(d, labels_key="cell_type", layer="counts")
        m = sa.model.Geneformer(d, **TINY_GF)
        m.train(max_epochs=1, batch_size=16)
        return m.get_latent_representation()

    np.testing.assert_array_equal(run(), run())


def test_perturbation_and_attention_statistics(finetuned):
    model, data = finetuned
    base = model.get_latent_representation(data)
    # deleting a gene no cell expresses changes nothing
    silent = data.copy()
    x = silent.layers["counts"].toarray()
    x[:, 70] = 0
    silent.layers["counts"] = sparse.csr_matrix(x)
    np.testing.assert_allclose(model.get_perturbed_representation(silent, genes=[data.var_names[70]]),
                               model.get_latent_representation(silent), atol=1e-5)
    moved = model.get_perturbed_representation(data, genes=["MK0_0"], mode="overexpress")
    assert moved.shape == base.shape and not np.allclose(moved, base)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        model.get_perturbed_representation(data, genes=["nope"])
    stats = model.get_attention_statistics(data, n_ranks=40)
    assert stats["received"].shape == (2, 2, 40) and stats["norms"].shape == (2, 2)
    assert np.isnan(stats["received"][..., 39]).all() or stats["count"][39] > 0
    # attention from <cls> over the real tokens sums to at most 1 at every layer and head
    assert np.nansum(stats["received"] * stats["count"] / len(data), axis=-1).max() <= 1 + 1e-5


def test_length_grouped_batches():
    lengths = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10])
    sampler = sa.data.LengthGroupedBatchSampler(lengths, 3, mega_factor=2, seed=0)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(10)) and len(batches) == len(sampler)
    # within a mega-batch of 6 cells, batches are sorted by length (longest first)
    for b in batches:
        assert list(lengths[b]) == sorted(lengths[b], reverse=True)
    assert list(sampler) != batches  # another epoch, another order


def test_inference_sorted_by_length_returns_cells_in_order(finetuned):
    model, data = finetuned
    full = model.get_latent_representation(data)
    part = model.get_latent_representation(data, indices=[5, 0, 3])
    np.testing.assert_allclose(part, full[[5, 0, 3]], atol=1e-5)
    module = model.module
    one = module.inference(torch.as_tensor(data.layers["counts"][[7]].toarray()))[MODULE_KEYS.Z]
    np.testing.assert_allclose(full[7], one[0].detach().numpy(), atol=1e-5)
