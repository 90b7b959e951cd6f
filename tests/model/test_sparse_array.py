"""scipy sparse *arrays* (``csr_array``, ``csc_array``: what anndata reads with
``anndata.settings.use_sparse_array_on_read = True``) as the expression: every model trains and
predicts on them as on a ``csr_matrix``, in memory and backed, leaving the user's matrix as it
is."""

from __future__ import annotations

import warnings

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import scattn as sa
from scattn import data as sd
from tests.conftest import TINY_ARCH, make_counts


def _data(kind, *, n: int = 64, seed: int = 0, layer: str | None = None) -> ad.AnnData:
    """Tiny counts of type `kind` in X, or in `layer` (X then a csr_matrix of zeros and ones)."""
    a = make_counts(n, seed=seed)
    del a.layers["counts"]
    if layer is None:
        a.X = kind(a.X)
    else:
        a.layers[layer] = kind(a.X)
        a.X = sparse.csr_matrix(a.X > 0, dtype=np.float32)
    return a


def _fit(name: str, adata: ad.AnnData, *, layer: str | None = None):
    """A model of class `name` set up on `adata` and trained one epoch under seed 0."""
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    cls = getattr(sa.model, name)
    cls.setup_anndata(adata, labels_key=None if name == "SCVIT" else "cell_type", layer=layer)
    model = cls(adata, **TINY_ARCH[name])
    model.train(max_epochs=1, batch_size=32)
    return model


def _assert_same_results(got, expected) -> None:
    """Two predict(inplace=False) results agree: embedding, attribution, probabilities."""
    np.testing.assert_allclose(got.embedding, expected.embedding, rtol=1e-5, atol=1e-6)
    assert got.attention.shape == expected.attention.shape
    assert abs(got.attention - expected.attention).max() < 1e-5
    if hasattr(expected, "probabilities"):
        np.testing.assert_allclose(got.probabilities.to_numpy(), expected.probabilities.to_numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got.prediction.astype(str).to_numpy(),
                                      expected.prediction.astype(str).to_numpy())


def _query(kind, *, layer: str | None = None) -> ad.AnnData:
    """Other cells as :func:`_data` holds them, genes in reverse order (alignment has work)."""
    q = _data(kind, n=40, seed=1, layer=layer)
    return q[:, q.var_names[::-1]].copy()


@pytest.mark.parametrize("name", list(TINY_ARCH))
def test_trains_and_predicts_on_csr_array_as_on_csr_matrix(name):
    expected_model = _fit(name, _data(sparse.csr_matrix))
    adata = _data(sparse.csr_array)
    x = adata.X
    model = _fit(name, adata)
    for (key, value), ref in zip(model.module.state_dict().items(),
                                 expected_model.module.state_dict().values(), strict=True):
        torch.testing.assert_close(value, ref, msg=f"{name} weight {key} differs")
    # the model's own data (scvi-tools' loader) and new data (streamed, aligned by gene name)
    _assert_same_results(model.predict(inplace=False), expected_model.predict(inplace=False))
    query = _query(sparse.csr_array)
    _assert_same_results(model.predict(query, inplace=False),
                         expected_model.predict(_query(sparse.csr_matrix), inplace=False))
    np.testing.assert_allclose(model.get_latent_representation(query),
                               expected_model.get_latent_representation(_query(sparse.csr_matrix)),
                               rtol=1e-5, atol=1e-6)
    model.predict(adata)  # inplace: the results are written beside X
    assert adata.X is x and isinstance(adata.X, sparse.csr_array)  # neither copied nor converted
    assert isinstance(query.X, sparse.csr_array)


@pytest.mark.parametrize(("kind", "layer"),
                         [(sparse.csc_array, None), (sparse.csr_array, "counts")])
def test_csc_array_and_array_layer_train_like_csr_matrix(kind, layer):
    expected_model = _fit("CFAN", _data(sparse.csr_matrix, layer=layer), layer=layer)
    adata = _data(kind, layer=layer)
    x = adata.X if layer is None else adata.layers[layer]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _fit("CFAN", adata, layer=layer)
    advised = any("formatted as CSR" in str(w.message) for w in caught)
    assert advised == (kind is sparse.csc_array)  # scvi-tools' advice for a CSC matrix
    _assert_same_results(model.predict(inplace=False), expected_model.predict(inplace=False))
    _assert_same_results(model.predict(_query(kind, layer=layer), inplace=False),
                         expected_model.predict(_query(sparse.csr_matrix, layer=layer),
                                                inplace=False))
    assert (adata.X if layer is None else adata.layers[layer]) is x and isinstance(x, kind)


@pytest.mark.parametrize("name", ["CFAN", "Geneformer"])
def test_backed_read_with_sparse_arrays(name, tmp_path):
    """anndata's `use_sparse_array_on_read`: a backed file predicts as the same cells in memory,
    and a model trains on it."""
    before = ad.settings.use_sparse_array_on_read
    _data(sparse.csr_matrix).write_h5ad(tmp_path / "train.h5ad")
    _query(sparse.csr_matrix).write_h5ad(tmp_path / "query.h5ad")
    with ad.settings.override(use_sparse_array_on_read=True):
        in_memory = ad.read_h5ad(tmp_path / "query.h5ad")
        backed = ad.read_h5ad(tmp_path / "query.h5ad", backed="r")
        assert isinstance(in_memory.X, sparse.csr_array)
        assert isinstance(backed.X[:2], sparse.csr_array)  # what scvi-tools' loader reads from it
        train = ad.read_h5ad(tmp_path / "train.h5ad", backed="r")
        model = _fit(name, train)  # set up and trained on the file
        expected = model.predict(in_memory, inplace=False)
        _assert_same_results(model.predict(backed, inplace=False), expected)
        model.predict()  # its own backed data, through scvi-tools' loader
        assert train.isbacked and f"X_{model._key}" in train.obsm
    assert ad.settings.use_sparse_array_on_read == before  # restored


def test_training_on_a_backed_file_read_as_arrays_equals_read_as_matrices(tmp_path):
    """(A backed AnnData's minibatches are its cells in sorted order, so training on it is
    compared with training on the same file read the default way, not with in memory.)"""
    _data(sparse.csr_matrix).write_h5ad(tmp_path / "train.h5ad")
    with ad.settings.override(use_sparse_array_on_read=False):
        expected_model = _fit("SIMS", ad.read_h5ad(tmp_path / "train.h5ad", backed="r"))
    with ad.settings.override(use_sparse_array_on_read=True):
        model = _fit("SIMS", ad.read_h5ad(tmp_path / "train.h5ad", backed="r"))
        np.testing.assert_allclose(model.predict_proba().to_numpy(),
                                   expected_model.predict_proba().to_numpy(), rtol=1e-5, atol=1e-6)


def test_tools_and_plots_read_sparse_arrays(trained_cfan, tmp_path):
    """Results read back as arrays (the attention layer too): tools and scanpy-backed plots."""
    model, data = trained_cfan
    adata = data.copy()
    model.predict(adata)
    adata.write_h5ad(tmp_path / "predicted.h5ad")
    with ad.settings.override(use_sparse_array_on_read=True):
        adata = ad.read_h5ad(tmp_path / "predicted.h5ad")
    assert isinstance(adata.X, sparse.csr_array)
    assert isinstance(adata.layers["cfan_attention"], sparse.csr_array)
    markers = adata.uns["cfan_markers"]["names"]
    sa.tl.marker_genes_from_attention(adata)
    assert list(adata.uns["cfan_markers"]["names"][0]) == list(markers[0])
    assert sa.pl.marker_dotplot(adata, n_genes=2, show=False, return_fig=True) is not None
    assert sa.pl.attention_heatmap(adata, n_genes=2, show=False, return_fig=True) is not None
    assert isinstance(adata.X, sparse.csr_array) and "cfan_markers" in adata.uns
    plt.close("all")


# -- the field and scattn's own checks and statistics -------------------------------------------
@pytest.mark.parametrize("kind", [sparse.csr_array, sparse.csc_array])
def test_expression_field_takes_sparse_arrays(kind):
    adata = ad.AnnData(kind(np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)))
    field = sd.ExpressionField("X", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CSC: the CSR advice
        state = field.register_field(adata)
    assert state[field.N_VARS_KEY] == 2 and isinstance(adata.X, kind)
    adata.X = kind(np.array([[0.5, 0.0], [0.0, 2.0]], dtype=np.float32))
    with pytest.warns(UserWarning, match="unnormalized count data"):
        field.validate_field(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sd.ExpressionField("X", None, is_count_data=False).validate_field(adata)


@pytest.mark.parametrize("kind", [sparse.csr_array, sparse.csc_array])
def test_data_functions_take_sparse_arrays(kind):
    a = make_counts(40, 30)
    m = a.X
    x = kind(m)

    def same(got, expected):
        got = got.toarray() if sparse.issparse(got) else np.asarray(got)
        expected = expected.toarray() if sparse.issparse(expected) else np.asarray(expected)
        np.testing.assert_allclose(got, expected, rtol=1e-6)

    sd.check_input(ad.AnnData(x), None, "counts")
    same(sd.read_rows(x, np.array([5, 1, 2])), sd.read_rows(m, np.array([5, 1, 2])))
    lognorm = sd.log_normalize(x, "counts")
    same(lognorm, sd.log_normalize(m, "counts"))
    same(sd.select_variable_genes(lognorm, 10),
         sd.select_variable_genes(sd.log_normalize(m, "counts"), 10))
    for got, expected in zip(sd.gene_mean_var(x), sd.gene_mean_var(m), strict=True):
        same(got, expected)
    medians = sd.gene_nonzero_medians(m)
    same(sd.gene_nonzero_medians(x), medians)
    ids = np.arange(a.n_vars) + 3
    same(sd.rank_value_encode(x, ids, medians, max_length=12).input_ids,
         sd.rank_value_encode(m, ids, medians, max_length=12).input_ids)
    same(sd.value_bins(x), sd.value_bins(m))
    same(sd.expressed_counts(x, np.arange(5, 20)), sd.expressed_counts(m, np.arange(5, 20)))
    genes = pd.Index(a.var_names[::-1])
    same(sd.align_to_genes(x, a.var_names, genes)[0], sd.align_to_genes(m, a.var_names, genes)[0])
    as_matrix = sparse.csr_matrix if kind is sparse.csr_array else sparse.csc_matrix
    same(np.abs(sd.svd_embedding(kind(lognorm), 4).projection),
         np.abs(sd.svd_embedding(as_matrix(lognorm), 4).projection))
    x.data[0] = -1.0  # scattn's value check sees the array's values
    with pytest.raises(ValueError, match="negative values"):
        sd.check_expression(x, "counts")


def test_bad_values_in_a_sparse_array_get_scattns_error():
    adata = _data(sparse.csr_array)
    adata.X.data[:] = adata.X.data + 0.5
    with pytest.raises(ValueError, match="non-integer values"):
        sa.model.CFAN.setup_anndata(adata, labels_key="cell_type")
    adata = _data(sparse.csr_array)
    adata.X = sparse.csr_array(adata.X.toarray() * (np.arange(adata.n_obs) > 0)[:, None])
    with pytest.raises(ValueError, match="cells with no expression"):
        sa.model.CFAN.setup_anndata(adata, labels_key="cell_type")
