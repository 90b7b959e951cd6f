"""SIMS interpretability figures on real data (thesis Figures 0.11-0.14) and a confusion matrix.

Trains SIMS on 80% of a dataset (stratified, seed 0), predicts the held-out 20% and writes
``sims_<dataset>_{feature_importances,class_importances,confusion}.png`` to
``benchmarks/results``.

    python -m benchmarks.studies.sims_figures [--dataset pbmc68k_reduced]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

from .._common import RESULTS, load_tasks, splits


def main(argv=None) -> None:
    import scattn as sa

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="pbmc68k_reduced")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    (task,) = load_tasks([args.dataset])
    _, train, test = next(splits(task.adata.obs[task.labels_key], seeds=[0]))
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    a_train, a_test = task.adata[train].copy(), task.adata[test].copy()
    sa.model.SIMS.setup_anndata(a_train, labels_key=task.labels_key, expression=task.expression)
    model = sa.model.SIMS(a_train)
    model.train()
    model.predict(a_test)
    metrics = sa.tl.evaluate(a_test, task.labels_key, "sims_prediction")
    print(metrics.to_string())
    prefix = f"{args.out}/sims_{task.name}"
    sa.pl.feature_importances(a_test, return_fig=True).savefig(f"{prefix}_feature_importances.png",
                                                               dpi=120, bbox_inches="tight")
    sa.pl.class_importances(a_test, n_genes=40, return_fig=True).savefig(
        f"{prefix}_class_importances.png", dpi=120, bbox_inches="tight")
    sa.pl.confusion_matrix(a_test, return_fig=True).savefig(f"{prefix}_confusion.png", dpi=120,
                                                            bbox_inches="tight")


if __name__ == "__main__":
    main()
