"""read_h5ads: several h5ad files on their common genes, backed or in memory; models on it."""

import logging
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import scattn as sa
import scattn.data._validate as validate_module
from scattn.data import (
    BackedLogNorm,
    align_to_genes,
    log_normalize,
    read_h5ads,
    select_variable_genes,
)
from tests.conftest import TINY_CFAN, make_counts


def _two_files(tmp_path: Path) -> tuple[list[Path], ad.AnnData, ad.AnnData]:
    """a: 60 cells x 50 genes; b: 40 cells on genes 3..44 of its own draw, reversed, 3 labels NaN."""
    a = make_counts(60, 50, seed=0)
    a.obs["only_in_a"] = 1
    b = make_counts(40, 45, seed=1)[:, 3:][:, ::-1].copy()
    b.obs["cell_type"] = b.obs["cell_type"].astype(str)
    b.obs.iloc[:3, 0] = np.nan
    paths = [tmp_path / "a.h5ad", tmp_path / "b.h5ad"]
    a.write_h5ad(paths[0])
    b.write_h5ad(paths[1])
    return paths, a, b


@pytest.fixture
def files(tmp_path):
    return _two_files(tmp_path)


def _dense(x) -> np.ndarray:
    x = x[:] if not isinstance(x, np.ndarray) and not sparse.issparse(x) else x
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def test_backed_intersection_labels_source(files, caplog):
    paths, a, b = files
    with caplog.at_level(logging.INFO, logger="scattn"):
        adata = read_h5ads(paths, labels_key="cell_type")
    assert adata.isbacked and sa.data.is_backed(adata.X)
    genes = [g for g in a.var_names if g in set(b.var_names)]  # the first file's order
    assert list(adata.var_names) == genes and len(genes) == 42
    assert adata.n_obs == 100
    assert list(adata.obs_names[:2]) == ["cell0-a", "cell1-a"] and adata.obs_names[-1] == "cell39-b"
    assert list(adata.obs["source"].cat.categories) == ["a", "b"]
    assert (adata.obs["source"] == "b").sum() == 40
    labels = adata.obs["cell_type"]
    assert isinstance(labels.dtype, pd.CategoricalDtype) and labels.isna().sum() == 3
    assert list(labels.iloc[:60]) == list(a.obs["cell_type"].astype(str))
    assert "only_in_a" not in adata.obs  # not in every file
    np.testing.assert_array_equal(_dense(adata.X)[:60], a[:, genes].X.toarray())
    np.testing.assert_array_equal(_dense(adata.X)[60:], b[:, genes].X.toarray())
    assert "42 genes they all have" in caplog.text and "8 of them" in caplog.text
    # default output: a new temporary directory, logged
    out = Path(adata.filename)
    assert out.parent.name.startswith("scattn_") and str(out) in caplog.text
    adata.file.close()
    shutil.rmtree(out.parent)


def test_in_memory_matches_backed(files, tmp_path):
    paths, _, _ = files
    backed = read_h5ads(paths, labels_key="cell_type", out=tmp_path / "merged.h5ad")
    mem = read_h5ads(paths, labels_key="cell_type", backed=False)
    assert not mem.isbacked and sparse.issparse(mem.X)
    assert mem.var_names.equals(backed.var_names) and mem.obs_names.equals(backed.obs_names)
    pd.testing.assert_frame_equal(mem.obs, backed.obs)
    np.testing.assert_array_equal(mem.X.toarray(), _dense(backed.X))
    backed.file.close()


def test_single_file_numeric_labels_and_keys(tmp_path):
    a, b = make_counts(20, 30, seed=0), make_counts(20, 30, seed=1)
    a.obs["y"] = np.where(np.arange(20) < 10, 1, 2)  # integers in one file
    b.obs["y"] = np.where(np.arange(20) < 10, "1", "2")  # strings in the other
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    both = read_h5ads([tmp_path / "a.h5ad", tmp_path / "b.h5ad"], labels_key="y", keys=["s1", "s2"],
                      backed=False)
    assert sorted(both.obs["y"].cat.categories) == ["1", "2"]
    assert list(both.obs["source"].cat.categories) == ["s1", "s2"]
    one = read_h5ads(tmp_path / "a.h5ad", labels_key="y", source_key="batch", out=tmp_path / "one.h5ad")
    assert one.n_obs == 20 and (one.obs["batch"] == "a").all() and one.obs_names[0] == "cell0-a"
    one.file.close()


def test_obs_column_mixing_types_kept_as_strings(tmp_path):
    a, b = make_counts(10, 20, seed=0), make_counts(10, 20, seed=1)
    a.obs["batch"], b.obs["batch"] = 1, "x"  # numbers in one file, text in the other
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    adata = read_h5ads([tmp_path / "a.h5ad", tmp_path / "b.h5ad"], out=tmp_path / "out.h5ad")
    assert list(adata.obs["batch"].cat.categories) == ["1", "x"]
    adata.file.close()


def test_layer_becomes_x(tmp_path):
    paths = []
    for seed in range(2):
        a = make_counts(20, 30, seed=seed)
        a.X = log_normalize(a.X, "counts")
        paths.append(tmp_path / f"f{seed}.h5ad")
        a.write_h5ad(paths[-1])
    adata = read_h5ads(paths, layer="counts", out=tmp_path / "out.h5ad")
    assert not adata.layers.keys()
    np.testing.assert_array_equal(_dense(adata.X)[:20], make_counts(20, 30, seed=0).X.toarray())
    adata.file.close()
    mem = read_h5ads(paths, layer="counts", backed=False)
    np.testing.assert_array_equal(mem.X.toarray()[20:], make_counts(20, 30, seed=1).X.toarray())
    b = ad.read_h5ad(paths[1])
    del b.layers["counts"]
    b.write_h5ad(paths[1])
    with pytest.raises(KeyError, match=r"Layer 'counts' is missing from 1 of the files: 'f1.h5ad' \(layers: none\)"):
        read_h5ads(paths, layer="counts")


def test_out_file(files, tmp_path):
    paths, _, _ = files
    out = tmp_path / "merged.h5ad"
    adata = read_h5ads(paths, out=out)
    assert Path(adata.filename) == out
    adata.file.close()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        read_h5ads(paths, out=out)
    read_h5ads(paths, out=out, overwrite=True).file.close()
    with pytest.raises(ValueError, match="one of the input files"):
        read_h5ads(paths, out=paths[0], overwrite=True)
    with pytest.raises(ValueError, match="backed=False nothing is written"):
        read_h5ads(paths, out=tmp_path / "x.h5ad", backed=False)
    with pytest.raises(ValueError, match=r"ending in \.h5ad"):
        read_h5ads(paths, out=tmp_path / "x.zarr")


def test_failure_leaves_nothing(files, tmp_path, monkeypatch):
    import anndata.experimental

    paths, _, _ = files

    def broken(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(anndata.experimental, "concat_on_disk", broken)
    out = tmp_path / "merged.h5ad"
    with pytest.raises(RuntimeError, match="disk full"):
        read_h5ads(paths, out=out)
    assert not out.exists()


def test_errors(files, tmp_path):
    paths, a, b = files
    with pytest.raises(FileNotFoundError, match="nope.h5ad"):
        read_h5ads([paths[0], tmp_path / "nope.h5ad"])
    with pytest.raises(ValueError, match="No files"):
        read_h5ads([])
    with pytest.raises(ValueError, match="more than once"):
        read_h5ads([paths[0], paths[0]])
    with pytest.raises(TypeError, match="anndata.concat"):
        read_h5ads(a)
    (tmp_path / "c.csv").write_text("x,y\n")
    with pytest.raises(ValueError, match="not an h5ad"):
        read_h5ads([paths[0], tmp_path / "c.csv"])
    # label column missing in one file: named, with its columns
    with pytest.raises(KeyError, match=r"'celltype' is missing from 2 of the 2 files: 'a.h5ad' \(obs columns: 'cell_type', 'only_in_a'\)"):
        read_h5ads(paths, labels_key="celltype")
    c = make_counts(10, 20, seed=2)
    c.obs = c.obs.rename(columns={"cell_type": "type"})
    c.write_h5ad(tmp_path / "c.h5ad")
    with pytest.raises(KeyError, match=r"missing from 1 of the 3 files: 'c.h5ad' \(obs columns: 'type'\)"):
        read_h5ads([*paths, tmp_path / "c.h5ad"], labels_key="cell_type")
    # no common gene
    d = make_counts(10, 20, seed=3)
    d.var_names = [f"ENSG{i:011d}" for i in range(20)]
    d.write_h5ad(tmp_path / "d.h5ad")
    with pytest.raises(ValueError, match=r"share no gene name: 'a.h5ad': 50 genes .*'d.h5ad': 20 genes \(ENSG.*Ensembl IDs"):
        read_h5ads([paths[0], tmp_path / "d.h5ad"])
    # duplicated gene names
    e = make_counts(10, 20, seed=4)
    e.var_names = ["G1"] * 2 + [f"G{i}" for i in range(2, 20)]
    e.write_h5ad(tmp_path / "e.h5ad")
    with pytest.raises(ValueError, match=r"'e.h5ad' has 1 duplicated gene names \(G1\).*var_names_make_unique"):
        read_h5ads([paths[0], tmp_path / "e.h5ad"])
    # the source column must be new; keys one per file
    with pytest.raises(ValueError, match="already has a column 'only_in_a'"):
        read_h5ads(paths, source_key="only_in_a")
    with pytest.raises(ValueError, match="keys must name each of the 2 files"):
        read_h5ads(paths, keys=["x"])
    # with index_unique=None, cell names must differ between files
    with pytest.raises(ValueError, match="40 cell names of 'b.h5ad' are also in 'a.h5ad'.*index_unique='-'"):
        read_h5ads(paths, index_unique=None)


def test_index_unique_none(tmp_path):
    a, b = make_counts(10, 20, seed=0), make_counts(10, 20, seed=1)
    b.obs_names = [f"other{i}" for i in range(10)]
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    adata = read_h5ads([tmp_path / "a.h5ad", tmp_path / "b.h5ad"], index_unique=None, backed=False)
    assert list(adata.obs_names[[0, 10]]) == ["cell0", "other0"]


def test_storage_errors_on_disk(tmp_path):
    a, b = make_counts(10, 20, seed=0), make_counts(10, 20, seed=1)
    b.X = b.X.toarray()
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    paths = [tmp_path / "a.h5ad", tmp_path / "b.h5ad"]
    with pytest.raises(ValueError, match="'a.h5ad': CSR, 'b.h5ad': dense.*backed=False"):
        read_h5ads(paths)
    assert read_h5ads(paths, backed=False).n_obs == 20  # in memory, anndata mixes them
    c = make_counts(10, 20, seed=2)
    c.X = sparse.csr_matrix(c.X.astype(np.int32))
    c.write_h5ad(tmp_path / "c.h5ad")
    with pytest.raises(ValueError, match="first file's dtype \\(int32.*truncate.*'a.h5ad'"):
        read_h5ads([tmp_path / "c.h5ad", tmp_path / "a.h5ad"])
    read_h5ads([tmp_path / "a.h5ad", tmp_path / "c.h5ad"], out=tmp_path / "ok.h5ad").file.close()


# -- models on a backed AnnData ------------------------------------------------------------
def test_cfan_end_to_end_backed(files, tmp_path):
    paths, _, b = files
    adata = read_h5ads(paths, labels_key="cell_type", out=tmp_path / "merged.h5ad")
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    sa.model.CFAN.setup_anndata(adata, labels_key="cell_type")
    model = sa.model.CFAN(adata, **{**TINY_CFAN, "n_top_genes": None})
    model.train(max_epochs=1, batch_size=32)
    model.predict()
    assert adata.isbacked
    assert adata.obs["cfan_prediction"].notna().all()
    assert adata.obsm["cfan_probabilities"].shape == (100, 3)
    # a backed query with other genes is aligned by name, a block of cells at a time
    b[:, 4:].copy().write_h5ad(tmp_path / "q.h5ad")
    query = read_h5ads(tmp_path / "q.h5ad", out=tmp_path / "query.h5ad")
    with pytest.warns(UserWarning, match="missing from the data"):
        proba = model.predict_proba(query)
    assert proba.shape == (40, 3)
    adata.file.close()
    query.file.close()


def test_gene_choice_backed_equals_in_memory(files, tmp_path, monkeypatch):
    paths, _, _ = files
    backed = read_h5ads(paths, labels_key="cell_type", out=tmp_path / "merged.h5ad")
    mem = read_h5ads(paths, labels_key="cell_type", backed=False)
    monkeypatch.setattr(validate_module, "CHUNK_SIZE", 7)  # several blocks
    lognorm = log_normalize(backed.X, "counts")
    assert isinstance(lognorm, BackedLogNorm) and lognorm.shape == (100, 42)
    expected = log_normalize(mem.X, "counts")
    np.testing.assert_array_equal(lognorm.to_memory().toarray(), expected.toarray())
    np.testing.assert_array_equal(lognorm[:, [5, 1]].toarray(), expected[:, [5, 1]].toarray())
    for n in (10, 25):
        np.testing.assert_array_equal(select_variable_genes(lognorm, n), select_variable_genes(expected, n))
    aligned, _ = align_to_genes(backed.X, backed.var_names, backed.var_names[::-1])
    np.testing.assert_array_equal(aligned.toarray(), mem.X.toarray()[:, ::-1])
    # a model choosing its genes on backed data picks those it picks in memory
    sa.settings.seed = 0
    for data in (backed, mem):
        sa.model.CFAN.setup_anndata(data, labels_key="cell_type")
    genes = [list(sa.model.CFAN(data, **{**TINY_CFAN, "n_top_genes": 20}).var_names_) for data in (backed, mem)]
    assert genes[0] == genes[1]
    backed.file.close()
