"""Smoke test: the benchmark scripts run end to end on a tiny configuration."""

import pandas as pd


def test_accuracy_benchmark_runs(tmp_path):
    from benchmarks.cgran_accuracy import main

    out = tmp_path / "acc"
    summary = main(["--datasets", "pbmc68k_reduced", "--seeds", "0", "--max-epochs", "1",
                    "--accelerator", "cpu", "--out", str(out)])
    assert set(summary["method"]) == {"CGRAN", "LogisticRegression", "LogisticRegression on CGRAN SVD input"}
    runs = pd.read_csv(f"{out}_runs.csv")
    assert runs["accuracy"].between(0, 1).all()
    assert (tmp_path / "acc.md").read_text().startswith("# CGRAN vs logistic regression")
