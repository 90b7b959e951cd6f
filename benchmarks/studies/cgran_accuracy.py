"""CGRAN (or CFAN) accuracy and macro F1 beside logistic regression, same genes and splits.

For each dataset and seed: a stratified 80/20 split; the model is set up and trained on the
training cells only (genes, SVD and weights), then predicts the held-out cells as new data
(fold-in). ``--model CFAN`` runs CFAN instead (the SVD diagnostic is CGRAN's only). Logistic regression (scikit-learn, L2, C=1) is trained on the same cells and the
same genes (the model's variable genes), log-normalised. As a diagnostic, logistic regression
is also fitted on CGRAN's own input, the m-dimensional SVD fold-in of each cell: it shows how
much the paper's embedding keeps of what a linear model on all genes uses.

    python -m benchmarks.studies.cgran_accuracy [--model CFAN] [--datasets pbmc68k_reduced] [--max-epochs 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from .._common import RESULTS, load_tasks, lognorm_matrix, splits, write_results


def run_one(task, train, test, seed: int, *, max_epochs: int, accelerator: str,
            model_name: str = "CGRAN") -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    import scattn as sa

    sa.settings.seed = seed
    sa.settings.progress_bar = False
    a_train = task.adata[train].copy()
    a_test = task.adata[test].copy()
    y_test = a_test.obs[task.labels_key].astype(str).to_numpy()
    model_cls = getattr(sa.model, model_name)
    model_cls.setup_anndata(a_train, labels_key=task.labels_key, expression=task.expression)
    t0 = time.perf_counter()
    model = model_cls(a_train)
    model.train(max_epochs=max_epochs, accelerator=accelerator)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = model.predict(a_test, inplace=False)
    t_pred = time.perf_counter() - t0
    pred = res.prediction.astype(str).to_numpy()
    rows = [dict(dataset=task.name, seed=seed, method=model_name, accuracy=accuracy_score(y_test, pred),
                 macro_f1=f1_score(y_test, pred, average="macro"), train_s=t_train, predict_s=t_pred,
                 epochs=len(model.history["train_loss"]))]
    genes = model.var_names_
    cols_tr = a_train.var_names.get_indexer(genes)
    x_tr = lognorm_matrix(a_train, task.expression)[:, cols_tr]
    x_te = lognorm_matrix(a_test, task.expression)[:, cols_tr]
    t0 = time.perf_counter()
    lr = LogisticRegression(max_iter=2000, C=1.0).fit(x_tr, a_train.obs[task.labels_key].astype(str))
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = lr.predict(x_te)
    rows.append(dict(dataset=task.name, seed=seed, method="LogisticRegression",
                     accuracy=accuracy_score(y_test, pred), macro_f1=f1_score(y_test, pred, average="macro"),
                     train_s=t_train, predict_s=time.perf_counter() - t0, epochs=np.nan))
    if model_name != "CGRAN":
        return rows
    # diagnostic: the same classifier on CGRAN's own input, the m-dim SVD fold-in of each cell
    proj = model.module.projection.cpu().numpy()
    e_tr, e_te = x_tr @ proj, x_te @ proj
    lr = LogisticRegression(max_iter=2000, C=1.0).fit(e_tr, a_train.obs[task.labels_key].astype(str))
    pred = lr.predict(e_te)
    rows.append(dict(dataset=task.name, seed=seed, method="LogisticRegression on CGRAN SVD input",
                     accuracy=accuracy_score(y_test, pred), macro_f1=f1_score(y_test, pred, average="macro"),
                     train_s=np.nan, predict_s=np.nan, epochs=np.nan))
    return rows


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="CGRAN", choices=["CGRAN", "CFAN"])
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.out = args.out or str(RESULTS / f"{args.model.lower()}_accuracy")
    rows = []
    for task in load_tasks(args.datasets):
        for seed, train, test in splits(task.adata.obs[task.labels_key], seeds=args.seeds):
            new = run_one(task, train, test, seed, max_epochs=args.max_epochs, accelerator=args.accelerator,
                          model_name=args.model)
            rows += new
            print(pd.DataFrame(new).to_string(index=False), flush=True)
            pd.DataFrame(rows).to_csv(f"{args.out}_runs.csv", index=False)  # progress
    df = pd.DataFrame(rows)
    summary = (
        df.groupby(["dataset", "method"])
        .agg(accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"),
             macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"),
             train_s=("train_s", "mean"), epochs=("epochs", "mean"))
        .reset_index()
    )
    lr_f1 = summary[summary.method == "LogisticRegression"].set_index("dataset")["macro_f1"]
    summary["f1_minus_lr"] = summary["macro_f1"] - summary["dataset"].map(lr_f1)
    df.to_csv(f"{args.out}_runs.csv", index=False)
    write_results(summary, args.out, f"{args.model} vs logistic regression (seeds {args.seeds}, 80/20 stratified)")
    return summary


if __name__ == "__main__":
    main()
