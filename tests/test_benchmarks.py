"""Smoke test: the benchmark scripts run end to end on a tiny configuration."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# the benchmark scripts need the `bench` extra: CI's second step (`python -m pytest -m bench`)
pytestmark = pytest.mark.bench


def test_accuracy_benchmark_runs(tmp_path):
    from benchmarks.studies.cgran_accuracy import main

    out = tmp_path / "acc"
    summary = main(["--datasets", "pbmc68k_reduced", "--seeds", "0", "--max-epochs", "1",
                    "--accelerator", "cpu", "--out", str(out)])
    assert set(summary["method"]) == {"CGRAN", "LogisticRegression", "LogisticRegression on CGRAN SVD input"}
    runs = pd.read_csv(f"{out}_runs.csv")
    assert runs["accuracy"].between(0, 1).all()
    assert (tmp_path / "acc.md").read_text().startswith("# CGRAN vs logistic regression")


def test_novelty_benchmark_runs(tmp_path):
    from benchmarks.studies.novelty import main

    out = tmp_path / "nov"
    summary = main(["--masked", "Dendritic", "--max-epochs", "1", "--out", str(out)])
    assert set(summary["model"]) == {"CGRAN", "CFAN"} and len(summary) == 4
    assert summary["p"].between(0, 1).all() and summary["f1_unknown"].between(0, 1).all()
    assert (tmp_path / "nov_embedding.png").stat().st_size > 10_000


def test_transfer_benchmark_runs(tmp_path):
    from benchmarks.studies.transfer import main
    from tests.conftest import shared_path

    shared_path("cellbench_3cl_dropseq.h5ad")  # skips without the shared data
    out = tmp_path / "tr"
    summary = main(["--tasks", "cellbench", "--seeds", "0", "--max-epochs", "1",
                    "--fine-tune-epochs", "1", "--out", str(out)])
    assert {"CGRAN setting C", "CFAN setting A", "LogisticRegression on reference"} <= set(summary["method"])
    assert summary["macro_f1"].between(0, 1).all()


def test_accuracy_benchmark_runs_cfan(tmp_path):
    from benchmarks.studies.cgran_accuracy import main

    out = tmp_path / "cfan"
    summary = main(["--model", "CFAN", "--datasets", "pbmc68k_reduced", "--seeds", "0",
                    "--max-epochs", "1", "--accelerator", "cpu", "--out", str(out)])
    assert set(summary["method"]) == {"CFAN", "LogisticRegression"}


def test_sims_benchmarks_run(tmp_path):
    import importlib.util

    from benchmarks.studies.sims_accuracy import main
    from benchmarks.studies.sims_pretraining import main as pretraining

    methods = ["SIMS", "LogisticRegression"]
    if importlib.util.find_spec("pytorch_tabnet") is not None:  # the `bench` extra
        methods.append("pytorch-tabnet")
    out = tmp_path / "sims"
    summary = main(["--datasets", "pbmc68k_reduced", "--seeds", "0", "--max-epochs", "1",
                    "--methods", *methods, "--out", str(out)])
    assert set(summary["method"]) == set(methods)
    assert summary[["accuracy", "macro_f1", "median_f1"]].stack().between(0, 1).all()
    pre = pretraining(["--dataset", "pbmc68k_reduced", "--seeds", "0", "--fractions", "0.1",
                       "--max-epochs", "1", "--pretrain-epochs", "1", "--out", str(tmp_path / "pre")])
    assert set(pre["method"]) == {"SIMS", "SIMS + pretraining", "LogisticRegression"}


def test_benchmark_quick_runs(tmp_path):
    """``python -m benchmarks --quick`` on tiny data: every method, every output."""

    from benchmarks.suite.run import main

    for module in ("celltypist", "pytorch_tabnet", "skmisc"):  # the `bench` extra
        pytest.importorskip(module)
    out = tmp_path / "results" / "b"  # --out may name a folder that does not exist yet
    table = main(["--quick", "--tasks", "pbmc68k_reduced", "cellbench_CELseq2_to_Dropseq", "--max-cells",
                  "150", "--max-epochs", "1", "--out", str(out)])
    pbmc = table[table["task"] == "pbmc68k_reduced"]
    # scANVI needs counts: pbmc68k_reduced is log-normalised only
    assert set(pbmc["method"]) == {"CGRAN", "CFAN", "SIMS", "Geneformer", "SCGPT", "CellTypist", "pytorch-tabnet",
                                   "LogisticRegression", "LinearSVM"}
    assert table[["accuracy", "macro_f1", "median_f1"]].stack().between(0, 1).all()
    assert (table[["train_s", "predict_s", "peak_mb"]] >= 0).all().all()
    for cost in ("train_s", "predict_s", "peak_mb"):  # the best peer of each task has ratio 1
        peers = table[table["method"].isin(["CellTypist", "pytorch-tabnet", "LogisticRegression",
                                            "LinearSVM", "scANVI"])]
        assert np.allclose(peers.groupby("task")[f"{cost}_vs_best_peer"].min(), 1.0)
    markers = pd.read_csv(f"{out}_markers.csv")
    assert {"Wilcoxon (scanpy)", "CGRAN", "SIMS", "CellTypist", "LogisticRegression"} <= set(markers["method"])
    assert markers["precision_at_k"].between(0, 1).all()
    for suffix in ("_runs.csv", ".md", "_markers.md", "_accuracy.png", "_cost.png"):
        assert Path(f"{out}{suffix}").stat().st_size > 0


def test_benchmark_integration_quick_runs(tmp_path):
    """The integration family's --quick task: scViT, SCGPT, scVI and PCA, every output."""
    from benchmarks.suite.run import main
    from tests.conftest import shared_path

    shared_path("cellbench_3cl_dropseq.h5ad")  # skips without the shared data
    out = tmp_path / "b"
    table = main(["--quick", "--tasks", "integration_cellbench", "--max-epochs", "1", "--out", str(out)])
    assert set(table["method"]) == {"scViT", "SCGPT", "scVI", "PCA"}
    assert table[["knn_acc", "mlp_acc"]].stack().between(0, 1).all()
    vae = table[table["method"].isin(["scViT", "scVI"])]
    assert np.isfinite(vae["heldout_nll"]).all() and (vae["s_per_epoch"] > 0).all()
    assert np.isclose(table.loc[table["method"] == "scVI", "s_per_epoch_vs_scvi"], 1.0).all()
    if "Total" in table:  # scib-metrics installed (the bench extra)
        assert table["Total"].between(0, 1).all()
    for suffix in ("_integration_runs.csv", "_integration.md"):
        assert Path(f"{out}{suffix}").stat().st_size > 0


def test_benchmark_family_without_its_methods_is_skipped(tmp_path, capsys):
    """--methods naming none of a family's methods skips that family's tasks (it crashed
    scoring an empty set of latents)."""
    from benchmarks.suite.run import main

    table = main(["--quick", "--tasks", "integration_cellbench", "--methods", "CGRAN", "--out",
                  str(tmp_path / "b")])
    assert table.empty
    assert "skipping integration_cellbench" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_geneformer_study_reports(tmp_path):
    """The Geneformer study's summary and perturbation figure from run rows (the runs themselves
    need a pretrained model: `python -m benchmarks.studies.geneformer pretrain`)."""
    from benchmarks.studies.geneformer import plot_perturbation, summarize

    runs = pd.DataFrame({"dataset": "d", "seed": [0, 1, 0, 1], "fraction": 0.1,
                         "method": ["A", "A", "B", "B"], "macro_f1": [0.5, 0.7, 0.2, 0.4],
                         "accuracy": [0.6, 0.8, 0.3, 0.5], "n_labelled": 10, "train_s": np.nan})
    table = summarize([runs], tmp_path / "gf", "test")
    assert np.allclose(table.set_index("method")["macro_f1"], [0.6, 0.3])
    assert (table["seeds"] == 2).all() and (tmp_path / "gf.md").read_text().startswith("# Geneformer")
    rng = np.random.default_rng(0)
    cells = pd.DataFrame({"gene_set": ["IFN (Wilcoxon top)"] * 50 + ["random 0"] * 50,
                          "toward_control": np.r_[rng.normal(0.3, 0.1, 50), rng.normal(0, 0.05, 50)]})
    plot_perturbation(cells, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_benchmark_transfer_quick_runs(tmp_path):
    """The transfer family's --quick pair: methods trained on one study predict another; the
    novel-type column says what share of unseen types comes out Unknown."""
    from benchmarks._pairs import PAIRS, load_pair, score
    from benchmarks.suite.run import main
    from tests.conftest import shared_path

    shared_path("cellbench_3cl_dropseq.h5ad")  # skips without the shared data
    assert len(PAIRS) >= 6
    out = tmp_path / "b"
    table = main(["--quick", "--tasks", "transfer_cellbench_celseq2_to_dropseq", "--methods", "CFAN",
                  "LogisticRegression", "--max-epochs", "1", "--out", str(out)])
    assert set(table["method"]) == {"CFAN", "LogisticRegression"}
    assert table["macro_f1"].between(0, 1).all()
    for suffix in ("_transfer_runs.csv", "_transfer.md"):
        assert Path(f"{out}{suffix}").stat().st_size > 0
    ref, query, _, _ = load_pair("transfer_panc8_celseq")
    assert ref.obs["cell_type"].value_counts().min() >= 5 and set(ref.var_names) == set(query.var_names)
    assert not set(query.obs["cell_type"]) <= set(ref.obs["cell_type"])  # novel types stay in the query
    s = score(np.array(["a", "b", "c", "c"]), np.array(["a", "a", "Unknown", "b"]), {"a", "b"})
    assert s["novel_unknown"] == 0.5 and s["n_novel"] == 2 and s["accuracy"] == 0.5


def test_cgran_speed_tables_rebuild_from_its_one_runs_file(tmp_path):
    """The committed CGRAN speed table is made from the study's one runs file (every part and
    code version in it): ``--summarize`` on a copy gives the committed ``.md`` and ``.csv``."""
    import shutil

    from benchmarks._common import RESULTS
    from benchmarks.studies.cgran_speed import main

    shutil.copy(RESULTS / "cgran_speed_runs.csv", tmp_path / "cs_runs.csv")
    main(["--summarize", "--out", str(tmp_path / "cs")])
    assert (tmp_path / "cs.md").read_text() == (RESULTS / "cgran_speed.md").read_text()
    assert (tmp_path / "cs.csv").read_text() == (RESULTS / "cgran_speed.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cs.csv", "cs.md", "cs_runs.csv"]


def test_transfer_factors_study_runs(tmp_path):
    """The cross-study factor study on one pair, one seed: a row per scaling and method."""
    from benchmarks.studies.transfer_factors import main, scale
    from tests.conftest import shared_path

    x = np.array([[0.0, 1.0, 3.0], [2.0, 0.0, 2.0]])
    assert np.allclose(scale(x, "cell_ranks"), [[0, 0.5, 1.0], [0.75, 0, 0.75]])
    assert np.allclose(scale(x, "gene_study_scaled").mean(0), [1.0, 1.0, 1.0])
    shared_path("panc8_subset.h5ad")  # skips without the shared data
    table = main(["--pairs", "transfer_panc8_fluidigmc1", "--seeds", "0", "--levels", "log_cp10k",
                  "cell_ranks", "--max-epochs", "1", "--out", str(tmp_path / "tf")])
    pair = table[table["task"] == "transfer_panc8_fluidigmc1"]
    assert len(pair) == 4 and pair["macro_f1"].between(0, 1).all()
    assert (tmp_path / "tf_runs.csv").exists() and (tmp_path / "tf.md").exists()
    training = main(["--factor", "training", "--pairs", "transfer_panc8_fluidigmc1", "--seeds", "0",
                     "--levels", "gene_dropout", "class_balanced+self_training", "--max-epochs", "1",
                     "--out", str(tmp_path / "tt")])
    assert set(training["training"]) == {"gene_dropout", "class_balanced+self_training"}
    assert training["macro_f1"].between(0, 1).all()
    with pytest.raises(SystemExit):
        main(["--factor", "training", "--levels", "cell_ranks"])


def test_small_data_factor_study_runs(tmp_path):
    """The factor study: one row per variant on the family's 100-cell split, upserted (a rerun
    of one variant replaces only its rows), and a summary over seeds."""
    from benchmarks.studies.small_data_factors import main

    out = tmp_path / "f"
    args = ["--models", "CFAN", "--datasets", "pbmc68k_reduced", "--sizes", "100", "--seeds", "0",
            "--out", str(out)]
    main([*args, "--variants", "default", "restore_best"])
    main([*args, "--variants", "restore_best"])
    runs = pd.read_csv(f"{out}_runs.csv")
    assert sorted(runs["variant"]) == ["default", "restore_best"] and (runs["n_train"] == 100).all()
    assert runs["macro_f1"].between(0, 1).all() and (runs["epochs"] >= 1).all()
    summary = pd.read_csv(f"{out}.csv")
    assert set(summary["variant"]) == {"default", "restore_best"} and (summary["n_seeds"] == 1).all()


def test_benchmark_small_data_quick_runs(tmp_path):
    """The small_data family: stratified subsamples of the training pool keep every class, and
    the report gives each method's gap to logistic regression on the same cells."""
    from benchmarks.suite.run import main
    from benchmarks.suite.tasks.small_data import stratified_subsample

    labels = np.array(["a"] * 90 + ["b"] * 8 + ["c"] * 2)
    picked = stratified_subsample(labels, 20, seed=0)
    assert len(picked) == 20 and len(set(picked)) == 20
    assert dict(zip(*np.unique(labels[picked], return_counts=True), strict=True)) == {"a": 14, "b": 4, "c": 2}
    assert not np.array_equal(picked, stratified_subsample(labels, 20, seed=1))
    with pytest.raises(ValueError, match="cannot hold"):
        stratified_subsample(labels, 5, seed=0)
    out = tmp_path / "b"
    table = main(["--quick", "--tasks", "small_data_pbmc68k_reduced", "--methods", "CFAN",
                  "LogisticRegression", "--max-epochs", "1", "--out", str(out)])
    assert set(table["method"]) == {"CFAN", "LogisticRegression"} and set(table["n_train"]) == {100}
    assert table.loc[table["method"] == "LogisticRegression", "vs_lr"].eq(0).all()
    assert table["macro_f1"].between(0, 1).all()
    runs = pd.read_csv(f"{out}_small_data_runs.csv")
    assert (runs["n_train"] == 100).all() and (runs["n_test"] == 140).all()
