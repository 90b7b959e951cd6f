"""scViT (``sa.model.SCVIT``): the scVI-like API, predict, gene orders, blocks, batches, queries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import scattn as sa
from scattn.data import order_genes
from scattn.model.base import EmbeddingResult
from scattn.nn import ConvPatchStem, LinearPatchStem, PatchBlock, PatchwiseLinear
from scattn.nn._attention import SelfAttention
from tests.conftest import make_counts

# tiny architecture: 76 genes -> 10 patches of 8, the last one padded
ARCH = {"n_latent": 4, "n_hidden": 16, "patch_size": 8, "d_model": 8, "n_heads": 2}
N_GENES = 76
FIT = {"enable_progress_bar": False, "accelerator": "cpu", "batch_size": 64}
BATCH_WEIGHTS = "covariates.0.weight"


def _data(n: int = 120, seed: int = 0, batches=("b0", "b1"), n_genes: int = N_GENES):
    d = make_counts(n, n_genes, seed=seed)
    d.obs["batch"] = pd.Categorical([batches[i % len(batches)] for i in range(n)])
    return d


def _model(d, batch_key: str | None = "batch", **kwargs):
    sa.model.SCVIT.setup_anndata(d, layer="counts", batch_key=batch_key)
    return sa.model.SCVIT(d, **{**ARCH, **kwargs})


def _trained(d, epochs: int = 1, **kwargs):
    model = _model(d, **kwargs)
    model.train(max_epochs=epochs, **FIT)
    return model


def _snapshot(adata) -> dict:
    """Everything in `adata` a model could write to, copied."""
    return {"X": adata.X.toarray().copy(), "obs": adata.obs.copy(), "var": adata.var.copy(),
            "obsm": set(adata.obsm), "varm": set(adata.varm), "uns": set(adata.uns),
            "layers": {k: v.toarray().copy() for k, v in adata.layers.items()}}


def _assert_same(adata, snap: dict, *, except_keys: dict | None = None) -> None:
    extra = except_keys or {}
    np.testing.assert_array_equal(adata.X.toarray(), snap["X"])
    pd.testing.assert_frame_equal(adata.obs, snap["obs"])
    pd.testing.assert_frame_equal(adata.var, snap["var"])
    assert set(adata.obsm) == snap["obsm"] | set(extra.get("obsm", ()))
    assert set(adata.varm) == snap["varm"]
    assert set(adata.uns) == snap["uns"] | set(extra.get("uns", ()))
    assert set(adata.layers) == set(snap["layers"]) | set(extra.get("layers", ()))
    for k, v in snap["layers"].items():
        np.testing.assert_array_equal(adata.layers[k].toarray(), v)


@pytest.fixture(scope="module")
def scvit():
    """(model, adata): an scViT with two batches trained 2 epochs on tiny data."""
    sa.settings.seed = 0
    d = _data(150)
    return _trained(d, epochs=2), d


# -- scVI's API ------------------------------------------------------------------------------------
def test_train_and_scvi_methods(scvit):
    model, d = scvit
    assert model.is_trained_ and model.n_batch == 2 and model.module.n_patches == 10
    z = model.get_latent_representation()
    assert z.shape == (d.n_obs, 4) and np.isfinite(z).all()

    expr = model.get_normalized_expression(library_size=1)
    assert isinstance(expr, pd.DataFrame) and expr.shape == d.shape
    assert list(expr.columns) == list(d.var_names) and list(expr.index) == list(d.obs_names)
    np.testing.assert_allclose(expr.sum(1), 1.0, atol=1e-4)
    b0 = model.get_normalized_expression(library_size=1, transform_batch="b0")
    b1 = model.get_normalized_expression(library_size=1, transform_batch="b1")
    np.testing.assert_allclose(b1.sum(1), 1.0, atol=1e-4)
    assert not np.allclose(b0.to_numpy(), b1.to_numpy())  # the batch reaches the decoder

    de = model.differential_expression(groupby="cell_type", group1="type0", mode="change")
    assert isinstance(de, pd.DataFrame)
    assert {"proba_de", "lfc_mean", "bayes_factor", "is_de_fdr_0.05"} <= set(de.columns)
    assert set(de.index) == set(d.var_names)

    rec = model.get_reconstruction_error()
    assert np.isfinite(float(rec["reconstruction_loss"]))
    assert np.isfinite(float(model.get_elbo()))


def test_latent_representation_streams_from_disk(scvit, tmp_path):
    """The posterior mean of cells in a backed file, read a chunk at a time, equals scvi-tools'
    computation on the same cells in memory (samples and distributions go through scvi-tools)."""
    import anndata as ad
    from scvi.model.base import VAEMixin

    model, _ = scvit
    q = _data(60, seed=3)
    with model._scvi_data(q) as internal:
        expected = VAEMixin.get_latent_representation(model, internal)
    q.write_h5ad(tmp_path / "q.h5ad")
    backed = ad.read_h5ad(tmp_path / "q.h5ad", backed="r")
    old = sa.settings.chunk_size
    sa.settings.chunk_size = 25
    try:
        z = model.get_latent_representation(backed)
    finally:
        sa.settings.chunk_size = old
    np.testing.assert_allclose(z, expected, atol=1e-5)
    rows = [7, 3, 55]
    np.testing.assert_allclose(model.get_latent_representation(q, indices=rows), expected[rows], atol=1e-5)
    sampled = model.get_latent_representation(q, give_mean=False)
    assert sampled.shape == expected.shape and not np.allclose(sampled, expected)


def test_predict_writes_documented_keys(scvit):
    model, _ = scvit
    q = _data(60, seed=3)
    snap = _snapshot(q)
    res = model.predict(q, inplace=False, attention_top_k=10)
    assert isinstance(res, EmbeddingResult)
    _assert_same(q, snap)  # inplace=False writes nothing
    assert res.embedding.shape == (60, 4) and list(res.var_names) == list(q.var_names)

    model.predict(q, attention_top_k=10)
    _assert_same(q, snap, except_keys={"obsm": ["X_scvit"], "layers": ["scvit_attention"],
                                       "uns": ["scvit"]})
    emb = q.obsm["X_scvit"]
    assert emb.shape == (60, 4) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, res.embedding, atol=1e-6)
    np.testing.assert_allclose(emb, model.get_latent_representation(q), atol=1e-5)
    att = q.layers["scvit_attention"]
    assert sparse.issparse(att) and att.shape == q.shape
    assert att.getnnz(axis=1).max() <= 10 and att.nnz > 0 and (att.data > 0).all()
    params = q.uns["scvit"]["params"]
    assert params["model"] == "SCVIT" and params["attention_top_k"] == 10
    assert params["batch_key"] == "batch" and params["n_model_genes"] == N_GENES

    sa.tl.marker_genes_from_attention(q, groupby="cell_type")
    markers = q.uns["scvit_markers"]
    assert markers["params"]["attention_layer"] == "scvit_attention"
    assert markers["params"]["groupby"] == "cell_type"
    assert set(markers["names"].dtype.names) == {"type0", "type1", "type2"}


def test_get_attention_rows(scvit):
    model, _ = scvit
    att = model.get_attention(_data(30, seed=4))
    assert att.shape == (30, N_GENES) and list(att.columns) == list(model.var_names_)
    assert (att.to_numpy() >= 0).all()
    # a cell's weights share out the attention its patches receive, which sums to 1 over the
    # patches (less where a patch holds no expression)
    total = att.sum(1).to_numpy()
    assert (total > 0).all() and (total <= 1 + 1e-4).all()


# -- gene orders -----------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["given", "correlation", "mean", "random"])
def test_gene_orders(order):
    d = _data(80)
    model = _model(d, gene_order=order)
    assert sorted(model.var_names_) == sorted(d.var_names) and len(model.var_names_) == N_GENES
    index = np.asarray(model.module.genes.gene_index)
    assert list(d.var_names[index]) == list(model.var_names_)
    if order == "given":
        assert list(model.var_names_) == list(d.var_names)
    else:
        assert list(model.var_names_) != list(d.var_names)


def test_explicit_gene_order():
    d = _data(80)
    names = list(d.var_names[::-1])
    model = _model(d, gene_order=names)
    assert list(model.var_names_) == names
    for bad in (names[:-1], [*names[:-1], names[0]], [*names[:-1], "NOPE"]):
        with pytest.raises(ValueError, match="must name each of the 76 genes once"):
            _model(_data(80), gene_order=bad)
    with pytest.raises(ValueError, match="gene_order must be one of"):
        _model(_data(80), gene_order="alphabetical")


def _two_modules(n_cells: int = 300, seed: int = 0):
    """Log expression of 20 genes, interleaved: even ones follow factor a, odd ones factor b."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, n_cells, 1))
    x = np.empty((n_cells, 20))
    x[:, 0::2] = 2 + a * rng.uniform(0.5, 1.5, 10) + 0.3 * rng.normal(size=(n_cells, 10))
    x[:, 1::2] = 2 + b * rng.uniform(0.5, 1.5, 10) + 0.3 * rng.normal(size=(n_cells, 10))
    return x


def test_order_genes_correlation_groups_modules():
    x = _two_modules()
    order = order_genes(x, "correlation")
    assert sorted(order) == list(range(20))
    pos = np.empty(20, dtype=int)
    pos[order] = np.arange(20)
    for module in (np.arange(0, 20, 2), np.arange(1, 20, 2)):
        assert pos[module].max() - pos[module].min() == 9  # a contiguous run of 10
    # sparse input, the same order
    np.testing.assert_array_equal(order_genes(sparse.csr_matrix(x), "correlation"), order)


def test_order_genes_other_methods():
    x = _two_modules()
    names = pd.Index([f"g{i}" for i in range(20)])
    np.testing.assert_array_equal(order_genes(x, "given"), np.arange(20))
    mean = order_genes(x, "mean")
    assert (np.diff(x.mean(0)[mean]) <= 0).all()
    rand = order_genes(x, "random", seed=1)
    assert sorted(rand) == list(range(20)) and list(rand) != list(range(20))
    np.testing.assert_array_equal(rand, order_genes(x, "random", seed=1))
    explicit = order_genes(x, list(names[::-1]), var_names=names)
    np.testing.assert_array_equal(explicit, np.arange(20)[::-1])
    with pytest.raises(ValueError, match="needs var_names"):
        order_genes(x, list(names))
    with pytest.raises(ValueError, match="must name each"):
        order_genes(x, ["g0", "g1"], var_names=names)
    with pytest.raises(ValueError, match="gene_order must be one of"):
        order_genes(x, "nope")


# -- blocks ----------------------------------------------------------------------------------------
def test_patchwise_linear_independent_patches():
    torch.manual_seed(0)
    layer = PatchwiseLinear(4, 3, 5)
    assert layer.weight.shape == (4, 3, 5) and layer.bias.shape == (4, 5)
    x = torch.randn(2, 4, 3)
    y = layer(x)
    x2 = x.clone()
    x2[:, 0] += 1.0
    y2 = layer(x2)
    assert torch.equal(y2[:, 1:], y[:, 1:]) and not torch.allclose(y2[:, 0], y[:, 0])
    # each patch its own map
    same = x[:, :1].expand(2, 4, 3)
    out = layer(same)
    assert not torch.allclose(out[:, 0], out[:, 1])

    shared = PatchwiseLinear(4, 3, 5, shared=True)
    assert sum(p.numel() for p in shared.parameters()) == 3 * 5 + 5
    out = shared(x)
    for p in range(4):
        torch.testing.assert_close(out[:, p], shared.linear(x[:, p]))
    torch.testing.assert_close(shared(same)[:, 0], shared(same)[:, 3])


@pytest.mark.parametrize("n_genes", [50, 64])
def test_conv_patch_stem_shape(n_genes):
    stem = ConvPatchStem(8, 16)
    out = stem(torch.rand(3, n_genes))
    assert out.shape == (3, int(np.ceil(n_genes / 8)), 16)
    assert LinearPatchStem(7, 8, 16)(torch.rand(3, 50)).shape == (3, 7, 16)


@pytest.mark.parametrize("size", [1, 6, 12])
def test_conv_patch_stem_needs_power_of_two(size):
    with pytest.raises(ValueError, match="power of two"):
        ConvPatchStem(size, 16)


def test_self_attention_paths_agree():
    torch.manual_seed(0)
    attn = SelfAttention(16, 4, dropout=0.2).eval()
    x = torch.randn(2, 7, 16)
    fused, none = attn(x)
    explicit, weights = attn(x, return_attention=True)
    assert none is None and weights.shape == (2, 4, 7, 7)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7))
    mask = torch.ones(7, 7, dtype=torch.bool).tril()
    fused, _ = attn(x, attn_mask=mask)
    explicit, weights = attn(x, attn_mask=mask, return_attention=True)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=0)
    assert (weights[..., mask.logical_not()] == 0).all()
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(10, 4)


def test_patch_block_without_heads():
    block = PatchBlock(5, 8, 8, n_heads=0)
    h, w = block(torch.randn(3, 5, 8), return_attention=True)
    assert h.shape == (3, 5, 8) and w is None and block.attention is None


# -- ablations -------------------------------------------------------------------------------------
@pytest.mark.parametrize("switch", [{"n_heads": 0}, {"stem": "conv"}, {"stem": "shared"},
                                    {"patchwise": False}, {"gene_likelihood": "nb"},
                                    {"encoder": "dense"}, {"decoder": "dense"}],
                         ids=["no-heads", "conv-stem", "shared-stem", "shared-blocks", "nb",
                              "dense-encoder", "dense-decoder"])
def test_ablations_train(switch):
    sa.settings.seed = 0
    d = _data(80, n_genes=60)
    model = _trained(d, batch_key=None, **switch)
    assert model.n_batch == 1
    module = model.module
    if "n_heads" in switch:
        assert all(b.attention is None for b in module.encoder_blocks)
    if switch.get("stem") == "shared":
        assert isinstance(module.stem, LinearPatchStem) and module.stem.linear.shared
    if switch.get("stem") == "conv":
        assert isinstance(module.stem, ConvPatchStem)
    if "encoder" in switch:
        assert len(module.encoder_blocks) == 0
        att = model.get_attention()
        assert (att.to_numpy() == 0).all()  # no attention, no attribution
    if "decoder" in switch:
        assert not hasattr(module, "unpatch")
    if "patchwise" in switch:
        assert all(b.linear.shared for b in module.encoder_blocks) and module.unpatch.shared
    z = model.get_latent_representation()
    assert z.shape == (80, 4) and np.isfinite(z).all()
    assert np.isfinite(float(model.get_reconstruction_error()["reconstruction_loss"]))
    if "n_heads" in switch:  # no attention, no attribution
        res = model.predict(inplace=False)
        assert res.attention.nnz == 0
    if "gene_likelihood" in switch:
        from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

        x = torch.as_tensor(d.layers["counts"][:4].toarray())
        with torch.no_grad():
            inf = module.inference(x, torch.zeros(4, 1))
            px = module.generative(inf["z"], inf["library"], torch.zeros(4, 1))["px"]
        assert isinstance(px, NegativeBinomial) and not isinstance(px, ZeroInflatedNegativeBinomial)


def test_bad_module_arguments():
    d = _data(40)
    with pytest.raises(ValueError, match="gene_likelihood must be"):
        _model(d, gene_likelihood="poisson")
    with pytest.raises(ValueError, match="stem must be"):
        _model(_data(40), stem="mlp")
    with pytest.raises(ValueError, match="power of two"):
        _model(_data(40), stem="conv", patch_size=6)


# -- genes by name, batches, input checks ----------------------------------------------------------
def test_genes_aligned_by_name(scvit):
    model, _ = scvit
    q = _data(50, seed=5)
    shuffled = q[:, np.random.default_rng(0).permutation(q.n_vars)].copy()
    assert list(shuffled.var_names) != list(q.var_names)
    z = model.get_latent_representation(q, give_mean=True)
    np.testing.assert_allclose(model.get_latent_representation(shuffled, give_mean=True), z, atol=1e-5)
    expr = []
    for data in (shuffled, q):
        torch.manual_seed(0)  # the decoder reads a posterior sample
        expr.append(model.get_normalized_expression(data, library_size=1)[q.var_names])
    np.testing.assert_allclose(expr[0], expr[1], atol=1e-5)


def test_latent_on_other_data_leaves_it_untouched(scvit):
    model, _ = scvit
    q = _data(50, seed=6)
    snap = _snapshot(q)
    model.get_latent_representation(q)
    model.get_normalized_expression(q)
    _assert_same(q, snap)


def test_single_cell_batch():
    d = _data(40)
    d.obs["batch"] = pd.Categorical(["b0"] * 39 + ["lonely"])
    with pytest.raises(ValueError, match="single cell"):
        sa.model.SCVIT.setup_anndata(d, layer="counts", batch_key="batch")
    assert "_scvi_uuid" not in d.uns


def test_unseen_batch_at_predict(scvit):
    model, _ = scvit
    q = _data(30, seed=7, batches=("b0", "b9"))
    snap = _snapshot(q)
    for call in (model.predict, model.get_latent_representation):
        with pytest.raises(ValueError, match="load_query_data"):
            call(q)
    _assert_same(q, snap)


@pytest.mark.parametrize(("value", "match"), [(0.5, "non-integer values"), (-1.0, "negative values")])
def test_counts_checked_at_setup(value, match):
    d = _data(40)
    x = d.layers["counts"].toarray()
    x[0, 0] = value
    d.layers["counts"] = sparse.csr_matrix(x)
    with pytest.raises(ValueError, match=match):
        sa.model.SCVIT.setup_anndata(d, layer="counts", batch_key="batch")


def test_setup_refuses_log1p():
    d = _data(40)
    d.layers["log"] = sparse.csr_matrix(np.log1p(d.layers["counts"].toarray()))
    with pytest.raises(TypeError, match="expression"):  # scVI's signature: counts only
        sa.model.SCVIT.setup_anndata(d, layer="log", expression="log1p")
    with pytest.raises(ValueError, match="count"):
        sa.model.SCVIT.setup_anndata(d, layer="log")
    assert "_scvi_uuid" not in d.uns


# -- reference mapping -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    sa.settings.seed = 0
    return _trained(_data(120, seed=10))


def _query(seed: int = 11, batches=("b2",)):
    q = _data(60, seed=seed, batches=batches)
    return q[:, np.random.default_rng(seed).permutation(q.n_vars)].copy()


def test_query_model_reads_the_querys_gene_order(reference):
    """The query's genes come in another order: the query model keeps its own gene positions
    (not the reference's), so on cells of a known batch it embeds as the reference does."""
    q = _query(11, batches=("b0", "b2"))
    model = sa.model.SCVIT.load_query_data(q.copy(), reference)
    assert not np.array_equal(model.module.genes.gene_index.numpy(),
                              reference.module.genes.gene_index.numpy())
    model.is_trained_ = True  # untrained on purpose: the reference's weights as copied
    model.module.eval()
    b0 = q[q.obs["batch"] == "b0"].copy()
    np.testing.assert_allclose(model.get_latent_representation(b0),
                               reference.get_latent_representation(b0), atol=1e-5)


def test_scvi_methods_run_in_eval_mode(reference):
    """A module left in training mode (as ``load_query_data`` builds it): scVI's methods still
    embed without dropout (the same latent twice)."""
    q = _query(12, batches=("b0", "b2"))
    model = sa.model.SCVIT.load_query_data(q.copy(), reference)
    model.is_trained_ = True
    model.module.train()
    first = model.get_latent_representation()
    assert not model.module.training
    np.testing.assert_array_equal(first, model.get_latent_representation())


def test_load_query_data_learns_only_new_batch(reference):
    sa.settings.seed = 0
    # cells of the new batch b2 beside cells of the known b0: the batch is injected just before
    # a batch norm that normalises with the minibatch's statistics in training (as scVI's), so
    # the new column is learnt relative to the batches it shares minibatches with
    q = _query(batches=("b0", "b2"))
    model = sa.model.SCVIT.load_query_data(q, reference)
    assert model.n_batch == 3 and not model.is_trained_
    assert list(model.var_names_) == list(reference.var_names_)
    # weight_decay=0, as the docs advise: AdamW's decay would shrink the reference's columns
    model.train(max_epochs=1, weight_decay=0.0, **{**FIT, "batch_size": 16})
    ref = dict(reference.module.state_dict())
    new = dict(model.module.state_dict())
    batch_keys = [k for k in new if k.endswith(BATCH_WEIGHTS)]
    assert batch_keys == ["decoder_fc.covariates.0.weight"]
    for name, _ in model.module.named_parameters():
        if name.endswith(BATCH_WEIGHTS):
            assert new[name].shape[1] == 3
            assert torch.equal(new[name][:, :2], ref[name])
            assert not torch.equal(new[name][:, 2], torch.zeros_like(new[name][:, 2]))
            assert new[name][:, 2].abs().max() > 1e-5  # learnt, not rounding noise
        else:
            assert torch.equal(new[name], ref[name]), name
    for name in new:  # batch-norm statistics kept too
        if "running_" in name:
            assert torch.equal(new[name], ref[name]), name
    z = model.get_latent_representation()
    assert z.shape == (60, 4) and np.isfinite(z).all()
    expr = model.get_normalized_expression(library_size=1, transform_batch="b2")
    np.testing.assert_allclose(expr.sum(1), 1.0, atol=1e-4)


def test_load_query_data_unfrozen(reference):
    sa.settings.seed = 0
    model = sa.model.SCVIT.load_query_data(_query(12), reference, unfrozen=True)
    model.train(max_epochs=1, **FIT)
    ref = dict(reference.module.state_dict())
    new = dict(model.module.state_dict())
    assert not torch.equal(new["z_mean.weight"], ref["z_mean.weight"])
    assert not torch.equal(new["stem.linear.weight"], ref["stem.linear.weight"])


def test_query_with_other_genes(reference):
    extra = _query(13)
    extra.var_names = [*extra.var_names[:-2], "NEW1", "NEW2"]  # two genes renamed
    with (pytest.warns(UserWarning, match="missing from the query"),
          pytest.raises(ValueError, match="prepare_query_anndata")):
        sa.model.SCVIT.load_query_data(extra, reference)
    superset = _data(60, seed=13, batches=("b2",), n_genes=N_GENES + 4)  # 4 extra genes
    assert set(reference.adata.var_names) < set(superset.var_names)
    with pytest.raises(ValueError, match="prepare_query_anndata"):
        sa.model.SCVIT.load_query_data(superset, reference)
    q = _query(14)[:, 5:].copy()  # lacks 5 of the reference's genes
    snap = _snapshot(q)
    names = list(q.var_names)
    with pytest.warns(UserWarning, match="missing"):
        prepared = sa.model.SCVIT.prepare_query_anndata(q, reference)
    _assert_same(q, snap)  # the input is untouched
    assert list(q.var_names) == names
    assert prepared is not q
    assert list(prepared.var_names) == list(reference.adata.var_names)
    assert list(prepared.var.columns) == []
    pd.testing.assert_frame_equal(prepared.obs, q.obs)
    counts = prepared.layers["counts"]
    counts = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    missing = ~prepared.var_names.isin(q.var_names)
    assert missing.sum() == 5 and (counts[:, missing] == 0).all()
    kept = prepared.var_names[~missing]
    np.testing.assert_array_equal(counts[:, ~missing], q[:, kept].layers["counts"].toarray())
    model = sa.model.SCVIT.load_query_data(prepared, reference)
    assert model.n_batch == 3


# -- persistence and determinism -------------------------------------------------------------------
def test_save_load_same_latent(scvit, tmp_path):
    model, d = scvit
    z = model.get_latent_representation(give_mean=True)
    model.save(tmp_path / "scvit")
    loaded = sa.model.SCVIT.load(tmp_path / "scvit", adata=d)
    assert list(loaded.var_names_) == list(model.var_names_)
    np.testing.assert_allclose(loaded.get_latent_representation(give_mean=True), z, atol=1e-6)


def test_seeded_training_is_deterministic():
    latents = []
    for _ in range(2):
        sa.settings.seed = 0
        d = _data(80, n_genes=60)
        latents.append(_trained(d).get_latent_representation())
    np.testing.assert_array_equal(latents[0], latents[1])


def test_correlation_order_with_unexpressed_genes():
    """Genes no cell expresses (or constant ones) have no direction: they go last, no crash."""
    from scattn.data import order_genes

    rng = np.random.default_rng(0)
    x = np.log1p(rng.poisson(1.0, (120, 40)).astype(float))
    x[:, [2, 9]] = 0.0
    x[:, 30] = 1.0
    order = order_genes(x, "correlation")
    assert sorted(order) == list(range(40)) and set(order[-3:]) == {2, 9, 30}


def test_module_outputs_use_scvi_tools_module_keys():
    from scattn._compat import scvi_module_keys

    keys = scvi_module_keys()
    d = _data(40)
    module = _model(d, batch_key=None).module.eval()
    x = torch.as_tensor(d.layers["counts"][:4].toarray())
    with torch.no_grad():
        inf = module.inference(x, torch.zeros(4, 1))
        gen = module.generative(inf[keys.Z_KEY], inf[keys.LIBRARY_KEY], torch.zeros(4, 1))
    assert {keys.QZ_KEY, keys.Z_KEY, keys.LIBRARY_KEY, keys.QZM_KEY} <= set(inf)
    assert set(gen) == {keys.PX_KEY}
