"""``scattn annotate``: the embedded example, files in and out, and clear errors that leave
nothing half-written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scattn import cli
from tests.conftest import make_counts

RUN = ["--quiet", "--max-epochs", "2"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files(tmp_path):
    ref = make_counts(120, seed=1)
    ref.X = ref.layers["counts"].copy()
    query = make_counts(60, seed=2)
    query.X = query.layers["counts"].copy()
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    return tmp_path / "ref.h5ad", tmp_path / "query.h5ad"


def test_the_embedded_example_runs_end_to_end(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["annotate", *RUN, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"annotated.h5ad", "markers.csv", "report.md", "figures"}
    assert {p.name for p in (out / "figures").iterdir()} == {
        "umap.png", "markers_dotplot.png", "predicted_share.png", "confusion_matrix.png"}
    annotated = ad.read_h5ad(out / "annotated.h5ad")
    assert {"cfan_prediction", "cfan_confidence"} <= set(annotated.obs)
    assert "X_umap" in annotated.obsm and "cfan_attention" in annotated.layers
    report = (out / "report.md").read_text()
    assert "macro F1" in report and "pbmc68k_reduced" in report
    assert "adapted to the query" in report  # the default path: adapted to the unlabelled query
    markers = pd.read_csv(out / "markers.csv")
    assert {"group", "names", "scores"} <= set(markers.columns) and len(markers) > 0


def test_the_example_split_rule():
    reference, query = cli.example_split()
    assert reference.n_obs + query.n_obs == 700 and abs(reference.n_obs - query.n_obs) <= 10
    assert set(reference.obs["bulk_labels"]) == set(query.obs["bulk_labels"])
    assert not set(reference.obs_names) & set(query.obs_names)


def test_files_in_annotated_out_inputs_untouched(files, tmp_path):
    ref, query = files
    before = _digest(ref), _digest(query)
    out = tmp_path / "run"
    # --no-adapt: the saved reference model's own calls, which the reloaded one must repeat
    assert cli.main(["annotate", str(ref), str(query), "--labels", "cell_type", *RUN, "--out", str(out),
                     "--save-model", "--model", "CGRAN", "--no-adapt"]) == 0
    assert (_digest(ref), _digest(query)) == before
    annotated = ad.read_h5ad(out / "annotated.h5ad")
    assert annotated.n_obs == 60 and annotated.obs["cgran_prediction"].notna().all()
    assert (out / "model" / "model.pt").exists()
    again = tmp_path / "again"
    assert cli.main(["annotate", str(ref), str(query), "--labels", "cell_type", "--quiet", "--model", "CGRAN",
                     "--load", str(out / "model"), "--out", str(again), "--no-adapt"]) == 0
    assert "adapted" not in (again / "report.md").read_text()
    reloaded = ad.read_h5ad(again / "annotated.h5ad").obs["cgran_prediction"].astype(str).to_numpy()
    first = annotated.obs["cgran_prediction"].astype(str).to_numpy()
    known = first != "Unknown"  # the loaded model has no held-out cells to calibrate Unknown on
    assert known.any() and (reloaded[known] == first[known]).all()


def _fails(argv, capsys, match: str, out: Path) -> None:
    assert cli.main(argv) == 2
    assert match in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert not list(out.parent.glob(f".{out.name}.writing-*"))


def test_bad_input_is_a_clear_error_and_writes_nothing(files, tmp_path, capsys):
    ref, query = files
    out = tmp_path / "never"
    base = ["annotate", "--quiet", "--out", str(out)]
    _fails([*base, str(tmp_path / "nope.h5ad"), str(query), "--labels", "cell_type"], capsys, "does not exist", out)
    (tmp_path / "bad.h5ad").write_text("not an h5ad")
    _fails([*base, str(tmp_path / "bad.h5ad"), str(query), "--labels", "cell_type"], capsys, "Cannot read", out)
    _fails([*base, str(ref), str(query), "--labels", "celltype"], capsys, "no obs column 'celltype'", out)
    _fails([*base, str(ref), str(query)], capsys, "Pass --labels", out)
    _fails([*base, str(ref)], capsys, "both REFERENCE and QUERY", out)
    _fails([*base, str(ref), str(query), "--labels", "cell_type", "--layer", "nope"], capsys, "no layer 'nope'", out)
    other = ad.read_h5ad(query)
    other.var_names = [f"x{i}" for i in range(other.n_vars)]
    other.write_h5ad(tmp_path / "other.h5ad")
    _fails([*base, str(ref), str(tmp_path / "other.h5ad"), "--labels", "cell_type"], capsys, "share no gene", out)
    logged = ad.read_h5ad(query)
    logged.X = np.log1p(logged.X.toarray() if hasattr(logged.X, "toarray") else logged.X)
    logged.write_h5ad(tmp_path / "logged.h5ad")
    _fails([*base, str(ref), str(tmp_path / "logged.h5ad"), "--labels", "cell_type"], capsys,
           "reference holds counts and the query log1p", out)
    scaled = ad.read_h5ad(query)
    scaled.X = (np.asarray(scaled.X.todense()) if hasattr(scaled.X, "todense") else scaled.X) - 1.0
    scaled.write_h5ad(tmp_path / "scaled.h5ad")
    _fails([*base, str(ref), str(tmp_path / "scaled.h5ad"), "--labels", "cell_type"], capsys, "negative values", out)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main([*base, str(ref), str(query), "--labels", "cell_type", "--max-epochs", "1"]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"


def test_the_console_script_is_declared():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("scattn") == "scattn.cli:main"
