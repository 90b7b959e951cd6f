"""The scale family (``python -m benchmarks --scale``): its files and a ``--quick`` run on tiny sizes."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

# the benchmark scripts need the `bench` extra: CI's second step (`python -m pytest -m bench`)
pytestmark = pytest.mark.bench


def _fake_source(path: Path, n_cells: int = 300, n_genes: int = 50, cells_per_condition="all") -> None:
    """A source file as :func:`benchmarks.scale.make_data.build_source` writes it, from synthetic
    counts (no Kang data needed): labels ``cell_type``, ``condition``, ``source_cell``."""
    from tests.conftest import make_counts

    path.parent.mkdir(parents=True, exist_ok=True)
    a = make_counts(n_cells, n_genes=n_genes)
    del a.layers["counts"]
    a.obs["condition"] = pd.Categorical(np.where(np.arange(n_cells) % 2, "stimulated", "control"))
    a.obs["source_cell"] = a.obs_names.astype(str)
    a.uns["scale_source"] = {"genes": "synthetic", "built": "test", "cells_per_condition": cells_per_condition,
                             "seed": 0}
    a.write_h5ad(path)


def test_resampled_files_are_plain_h5ad_and_zarr(tmp_path):
    """Chunk-by-chunk writing gives a normal h5ad (opened backed) and the same zarr store."""
    import anndata as ad

    from benchmarks.scale.make_data import SOURCE, make_file, open_zarr

    _fake_source(tmp_path / SOURCE)
    info = make_file(tmp_path / SOURCE, 1000, tmp_path / "kang_1000.h5ad", zarr=True, chunk_size=300)
    assert info["n_cells"] == 1000 and info["n_genes"] == 50
    backed = ad.read_h5ad(tmp_path / "kang_1000.h5ad", backed="r")
    assert backed.isbacked and backed.shape == (1000, 50)
    assert set(backed.obs.columns) == {"condition", "source_cell"}  # no labels in the big files
    x = backed.to_memory().X
    assert sparse.isspmatrix_csr(x) and x.dtype == np.float32
    assert np.array_equal(x.data, np.rint(x.data)) and (np.diff(x.indptr) > 0).all()  # counts, no empty cell
    source = ad.read_h5ad(tmp_path / SOURCE)
    rows = source.obs_names.get_indexer(backed.obs["source_cell"].astype(str))
    assert (rows >= 0).all()
    src = source.X[rows].toarray()
    assert (x.toarray() <= src).all() and (x.sum() < src.sum())  # thinned copies of their source cells
    assert (backed.obs["condition"].astype(str).to_numpy() == source.obs["condition"].astype(str).to_numpy()[rows]).all()
    assert backed.uns["scale_data"]["sampling"] == "uniform with replacement"
    z = open_zarr(tmp_path / "kang_1000.zarr")
    assert (sparse.csr_matrix(z.X[0:1000]) != x).nnz == 0
    assert (ad.read_zarr(tmp_path / "kang_1000.zarr").X != x).nnz == 0
    backed.file.close()
    # made again only when asked or when the source changed
    assert make_file(tmp_path / SOURCE, 1000, tmp_path / "kang_1000.h5ad", zarr=True).get("skipped")


@pytest.mark.slow
def test_source_is_kang_on_2000_hvgs_with_marker_labels(tmp_path):
    """The source the big files resample: Kang ctrl + stim, 2,000 HVGs, counts, marker labels."""
    import anndata as ad

    from benchmarks.scale.make_data import build_source, source_info
    from tests.conftest import shared_path

    shared_path("kang2018_pbmc_stim_unlabeled.h5ad")  # skips without the shared data
    pytest.importorskip("skmisc")  # seurat_v3 variable genes
    path = build_source(tmp_path, n_per_condition=1000, seed=0)  # (seurat_v3 fails on ~300)
    source = ad.read_h5ad(path)
    assert source.n_vars == 2000 and source.n_obs <= 2000
    assert set(source.obs["condition"].astype(str)) == {"control", "stimulated"}
    assert source.obs["source_cell"].str.endswith(("-control", "-stimulated")).all()
    assert source.obs["cell_type"].notna().all() and not source.obs["cell_type"].str.contains("/").any()
    assert np.array_equal(source.X.data, np.rint(source.X.data)) and (np.diff(source.X.indptr) > 0).all()
    assert source_info(path)["cells_per_condition"] == 1000
    assert build_source(tmp_path, n_per_condition=1000, seed=0) == path  # cached


def test_benchmark_scale_quick_runs(tmp_path):
    """``--scale --quick`` on 2,000 cells (from a synthetic source, so that no Kang file is read):
    every method, step, format and output; one measurement in its own process; a skip."""
    import anndata as ad

    from benchmarks._cli import main
    from benchmarks.scale.make_data import SOURCE
    from benchmarks.scale.run import QUICK_SOURCE_CELLS, _child

    pytest.importorskip("celltypist")  # the `bench` extra
    out, data = tmp_path / "results" / "scale", tmp_path / "data"
    # the quick run's source, made here (build_source reuses a source made with its settings)
    _fake_source(data / SOURCE, n_cells=400, n_genes=120, cells_per_condition=QUICK_SOURCE_CELLS)
    table = main(["--scale", "--quick", "--in-process", "--sizes", "2000", "--max-epochs", "1",
                  "--methods", "CFAN", "SIMS", "CellTypist", "scANVI", "--formats", "h5ad", "zarr",
                  "--out", str(out), "--out-dir", str(data)])
    assert (table["status"] == "ok").all(), table[["method", "step", "note"]]
    assert set(zip(table["method"], table["step"], table["format"], strict=True)) == {
        ("CFAN", "predict", "h5ad"), ("SIMS", "predict", "h5ad"), ("CellTypist", "predict", "h5ad"),
        ("scANVI", "predict", "h5ad"), ("CFAN", "predict", "zarr"), ("SIMS", "predict", "zarr"),
        ("CFAN", "proba", "h5ad"), ("SIMS", "proba", "h5ad"),
        ("CFAN", "train-disk", "h5ad"), ("SIMS", "train-disk", "h5ad")}
    assert (table["n_cells"] == 2000).all() and (table["cells_per_s"] > 0).all() and (table["peak_gib"] > 0).all()
    assert table["agreement"].dropna().between(0, 1).all()
    scattn_predict = table[(table["step"] == "predict") & table["method"].isin(["CFAN", "SIMS"])]
    assert (scattn_predict["attention_nnz"] > 0).all()  # the attribution layer was written
    assert (table.loc[table["step"] == "train-disk", "epochs"] == 1).all()
    big = ad.read_h5ad(data / "kang_2k.h5ad", backed="r")
    assert big.shape == (2000, 120) and "cell_type" not in big.obs
    big.file.close()
    for suffix in (".csv", ".md", ".png"):
        assert Path(f"{out}{suffix}").stat().st_size > 0
    assert Path(f"{out}.md").read_text().startswith("# Scale")
    # the runner's real path: a fresh process, its row read back
    row = _child("CellTypist", "predict", data / "kang_2k.h5ad", "h5ad", data, threads=1, timeout_min=5,
                 in_process=False)
    assert row["status"] == "ok" and row["process"] == "own process" and row["n_cells"] == 2000
    assert 0 < row["peak_gib"] < 4
    # a skipped measurement is recorded with its reason
    skipped = main(["--scale", "--quick", "--in-process", "--sizes", "2000", "--methods", "CellTypist",
                    "--steps", "predict", "--mem-limit-gib", "0.001", "--out", str(out), "--out-dir", str(data)])
    ct = skipped[(skipped["method"] == "CellTypist") & (skipped["step"] == "predict")]
    assert ct["status"].tolist() == ["skipped"] and "estimated" in ct["note"].iloc[0]
    assert len(skipped) == len(table)  # the other rows were kept


def test_rows_of_other_thread_counts_stay_beside_each_other(tmp_path):
    """One scale table for every run: a row replaces the row of the same size, method, step,
    format *and* threads; the markdown shows the threads, the figure one row of panels each."""
    from benchmarks.scale.run import COLUMNS, _merge, plot, write_markdown

    base = {"n_cells": 2000, "size": "2k", "method": "CFAN", "step": "predict", "format": "h5ad",
            "status": "ok", "cells_per_s": 100.0, "peak_gib": 1.0, "run_s": 1.0, "open_s": 0.1,
            "total_s": 1.1, "step_peak_gib": 0.2, "agreement": 0.8, "reads": "backed h5ad"}
    table = pd.DataFrame(columns=COLUMNS)
    table = _merge(table, {**base, "threads": 1})
    table = _merge(table, {**base, "threads": 2, "cells_per_s": 180.0})
    table = _merge(table, {**base, "threads": 1.0, "cells_per_s": 120.0})  # read back from a CSV: 1.0
    assert len(table) == 2
    assert dict(zip(table["threads"], table["cells_per_s"], strict=True)) == {1: 120.0, 2: 180.0}
    write_markdown(table, tmp_path / "s.md", header="# Scale")
    assert "| cells | threads | method |" in (tmp_path / "s.md").read_text()
    plot(table, tmp_path / "s.png", title="t")
    assert (tmp_path / "s.png").stat().st_size > 10_000
