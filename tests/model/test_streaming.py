"""Predicting data on disk (backed h5ad, zarr) or larger than a chunk: streamed, same results."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import scattn as sa
from scattn.model.base._data import AlignedDataMixin


@pytest.fixture
def small_chunks():
    old = sa.settings.chunk_size
    sa.settings.chunk_size = 37
    yield 37
    sa.settings.chunk_size = old


def _query(adata: ad.AnnData, seed: int = 0) -> ad.AnnData:
    """The cells shuffled, genes permuted and one gene more: alignment has work to do."""
    rng = np.random.default_rng(seed)
    q = adata[rng.permutation(adata.n_obs)][:, rng.permutation(adata.n_vars)].copy()
    extra = ad.AnnData(X=sparse.csr_matrix(np.ones((q.n_obs, 1), dtype=np.float32)),
                       obs=pd.DataFrame(index=q.obs_names), var=pd.DataFrame(index=["EXTRA"]))
    extra.layers["counts"] = extra.X.copy()
    q = ad.concat([q, extra], axis=1, merge="first")
    q.obs = adata.obs.loc[q.obs_names].copy()
    return q


def _chunk_sizes(monkeypatch) -> list[int]:
    """The number of cells of every chunk read from here on (filled as they are read)."""
    sizes = []
    original = AlignedDataMixin._aligned_rows

    def spy(self, plan, rows):
        sizes.append(plan.matrix.shape[0] if rows is None else len(rows))
        return original(self, plan, rows)

    monkeypatch.setattr(AlignedDataMixin, "_aligned_rows", spy)
    return sizes


@pytest.mark.parametrize("store", ["h5ad", "zarr"])
@pytest.mark.parametrize("name", ["trained", "trained_cfan", "trained_sims"])
def test_predict_on_disk_equals_in_memory(name, store, request, tmp_path, small_chunks, monkeypatch):
    model, data = request.getfixturevalue(name)
    query = _query(data)
    expected = model.predict(query, inplace=False)
    if store == "h5ad":
        query.write_h5ad(tmp_path / "q.h5ad")
        on_disk = ad.read_h5ad(tmp_path / "q.h5ad", backed="r")
    else:
        query.write_zarr(tmp_path / "q.zarr")
        on_disk = sa.data.open_zarr(tmp_path / "q.zarr")
    sizes = _chunk_sizes(monkeypatch)
    model.predict(on_disk)
    assert max(sizes) <= small_chunks and sum(sizes) == query.n_obs  # streamed, every cell once
    key = model._key
    assert (on_disk.obs[f"{key}_prediction"].astype(str).to_numpy()
            == expected.prediction.astype(str).to_numpy()).all()
    np.testing.assert_allclose(on_disk.obsm[f"{key}_probabilities"].to_numpy(),
                               expected.probabilities.to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(on_disk.obsm[f"X_{key}"], expected.embedding, rtol=1e-4, atol=1e-5)
    att = on_disk.layers[f"{key}_attention"]
    assert sparse.issparse(att) and att.shape == query.shape
    assert abs(att - expected.attention).max() < 1e-5
    assert list(on_disk.uns[f"{key}_markers"]["names"][0]) == list(expected.markers["names"][0])


def test_indices_in_any_order_on_disk(trained_cfan, tmp_path, small_chunks):
    model, data = trained_cfan
    data.write_h5ad(tmp_path / "d.h5ad")
    backed = ad.read_h5ad(tmp_path / "d.h5ad", backed="r")
    idx = np.array([120, 3, 77, 3, 149, 0, 41, 40, 42, 90] * 5)
    in_memory = model.predict_proba(data.copy(), indices=idx)
    streamed = model.predict_proba(backed, indices=idx)
    assert list(streamed.index) == list(data.obs_names[idx])
    np.testing.assert_allclose(streamed.to_numpy(), in_memory.to_numpy(), rtol=1e-5, atol=1e-6)


def test_bad_values_on_disk_are_clear_and_write_nothing(trained_cfan, tmp_path, small_chunks):
    model, data = trained_cfan
    bad = data.copy()
    counts = bad.layers["counts"].copy()
    counts.data[counts.indptr[130]] = np.nan  # a cell of the fourth chunk
    bad.layers["counts"] = counts
    bad.write_h5ad(tmp_path / "bad.h5ad")
    backed = ad.read_h5ad(tmp_path / "bad.h5ad", backed="r")
    with pytest.raises(ValueError, match="NaN"):
        model.predict(backed)
    assert "cfan_prediction" not in backed.obs and "cfan_attention" not in backed.layers


def test_progress_bar_on_long_predictions(trained_cfan, capsys, small_chunks):
    model, data = trained_cfan
    query = data.copy()
    sa.settings.progress_bar = True
    try:
        model.predict(query)
        assert "CFAN.predict" in capsys.readouterr().err
        sa.settings.progress_bar = False
        model.predict(query)
        assert "CFAN.predict" not in capsys.readouterr().err
    finally:
        sa.settings.progress_bar = False


def test_chunk_size_setting():
    with pytest.raises(ValueError, match="chunk_size"):
        sa.settings.chunk_size = 0
    assert "chunk_size" in repr(sa.settings)


def test_progress_bar_reading_from_disk(adata, tmp_path, capsys):
    adata.write_h5ad(tmp_path / "d.h5ad")
    backed = ad.read_h5ad(tmp_path / "d.h5ad", backed="r")
    sa.settings.progress_bar = True
    try:
        blocks = list(sa.data.iter_row_blocks(backed.X, 40, desc="Checking adata.X"))
        assert [b[:2] for b in blocks] == [(0, 40), (40, 80), (80, 120), (120, 150)]
        assert "Checking adata.X" in capsys.readouterr().err
        sa.settings.progress_bar = False
        list(sa.data.iter_row_blocks(backed.X, 40, desc="Checking adata.X"))
        assert "Checking" not in capsys.readouterr().err
    finally:
        sa.settings.progress_bar = False


def test_open_zarr_keeps_matrices_on_disk(adata, tmp_path):
    adata.layers["dense"] = adata.X.toarray()
    adata.write_zarr(tmp_path / "d.zarr")
    opened = sa.data.open_zarr(tmp_path / "d.zarr")
    assert sa.data.is_backed(opened.X) and sa.data.is_backed(opened.layers["dense"])
    assert list(opened.obs_names) == list(adata.obs_names)
    np.testing.assert_array_equal(sa.data.read_rows(opened.layers["dense"], np.array([7, 2, 2])),
                                  adata.layers["dense"][[7, 2, 2]])
    with pytest.raises(ValueError, match="not an AnnData zarr store|not a zarr store"):
        sa.data.open_zarr(tmp_path)


def test_sums_over_cells_stream_from_disk(trained, tmp_path, small_chunks, monkeypatch):
    """Analyses that average over cells (here CGRAN's gene-gene attention) read a backed file a
    chunk at a time, with the same result as in memory and as on the model's own cells."""
    model, data = trained
    genes = list(model.var_names_[:6])
    own = model.get_gene_attention(genes=genes)
    query = _query(data)
    in_memory = model.get_gene_attention(query, genes=genes)
    query.write_h5ad(tmp_path / "q.h5ad")
    on_disk = ad.read_h5ad(tmp_path / "q.h5ad", backed="r")
    sizes = _chunk_sizes(monkeypatch)
    streamed = model.get_gene_attention(on_disk, genes=genes)
    assert len(sizes) > 1 and max(sizes) <= small_chunks and sum(sizes) == query.n_obs
    pd.testing.assert_frame_equal(streamed, in_memory, atol=1e-6, rtol=1e-5)
    pd.testing.assert_frame_equal(streamed, own, atol=1e-6, rtol=1e-5)  # the same cells, reordered
    # softmax over the chosen genes, summed over heads
    np.testing.assert_allclose(streamed.sum(axis=1), model.module.blocks[0].attention.n_heads, rtol=1e-5)
