"""SIMS with and without masked self-supervised pretraining, at 1%, 5%, 10% and 100% of labels.

The thesis' label ablation (section 0.3.5) extended with its future work (section 0.2.4). For
each seed: a stratified 80/20 split of the dataset. One SIMS encoder is pretrained (masked
reconstruction, ``model.pretrain``) on every training cell without their labels. For each
label fraction, a stratified subset of the training cells keeps its labels (at least one cell
per class); SIMS is trained on that subset from scratch, and from the pretrained encoder and
decoder (the classifier head starts fresh); logistic regression on the same subset is the
baseline. All predict the same held-out 20%.

    python -m benchmarks.studies.sims_pretraining [--dataset paul15] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from .._common import RESULTS, load_tasks, splits, write_results
from .._common import metrics as _metrics

FRACTIONS = (0.01, 0.05, 0.1, 1.0)


def labelled_subset(labels: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Positions of a stratified `fraction` of the cells, at least one per class."""
    rng = np.random.default_rng(seed)
    keep = []
    for _, idx in labels.groupby(labels, observed=True).indices.items():
        n = max(1, int(round(fraction * len(idx))))
        keep.append(rng.choice(idx, n, replace=False))
    return np.sort(np.concatenate(keep))


def run_baseline(task, train, test, seed, *, fractions) -> list[dict]:
    """Logistic regression on the same labelled subsets (log-normalised, all genes)."""
    from sklearn.linear_model import LogisticRegression

    from .._common import lognorm_matrix

    a_all, a_test = task.adata[train].copy(), task.adata[test].copy()
    labels = a_all.obs[task.labels_key].astype(str)
    x, x_test = lognorm_matrix(a_all, task.expression), lognorm_matrix(a_test, task.expression)
    rows = []
    for fraction in fractions:
        idx = labelled_subset(labels, fraction, seed)
        pred = LogisticRegression(max_iter=2000).fit(x[idx], labels.iloc[idx]).predict(x_test)
        rows.append(dict(dataset=task.name, seed=seed, fraction=fraction, n_labelled=len(idx),
                         method="LogisticRegression",
                         **_metrics(a_test.obs[task.labels_key].astype(str), pred)))
    return rows


def run_seed(task, train, test, seed, *, fractions, max_epochs, pretrain_epochs) -> list[dict]:
    import scattn as sa

    sa.settings.seed = seed
    sa.settings.progress_bar = False
    a_all = task.adata[train].copy()
    a_test = task.adata[test].copy()
    y_test = a_test.obs[task.labels_key].astype(str).to_numpy()
    classes = sorted(a_all.obs[task.labels_key].astype(str).unique())
    sa.model.SIMS.setup_anndata(a_all, labels_key=task.labels_key, expression=task.expression, classes=classes)
    pre = sa.model.SIMS(a_all)
    pre.pretrain(max_epochs=pretrain_epochs)
    pre_state = {k: v for k, v in pre.module.state_dict().items()
                 if not k.startswith(("head.", "class_weights"))}
    pre_epochs = len(pre.pretrain_history_["train_loss"])
    rows = []
    labels = a_all.obs[task.labels_key].astype(str)
    for fraction in fractions:
        sub = a_all[labelled_subset(labels, fraction, seed)].copy()
        for pretrained in (False, True):
            sa.settings.seed = seed
            data = sub.copy()
            sa.model.SIMS.setup_anndata(data, labels_key=task.labels_key, expression=task.expression,
                                        classes=classes)
            model = sa.model.SIMS(data)
            if pretrained:
                missing, unexpected = model.module.load_state_dict(pre_state, strict=False)
                if unexpected or set(missing) - {"head.weight", "head.bias", "class_weights"}:
                    raise RuntimeError(f"pretrained state does not fit: {missing} {unexpected}")
            model.train(max_epochs=max_epochs)
            pred = model.predict(a_test, inplace=False).prediction
            rows.append(dict(dataset=task.name, seed=seed, fraction=fraction, n_labelled=data.n_obs,
                             method="SIMS + pretraining" if pretrained else "SIMS", **_metrics(y_test, pred),
                             epochs=len(model.history["train_loss"]),
                             pretrain_epochs=pre_epochs if pretrained else 0))
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="paul15")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--fractions", nargs="*", type=float, default=list(FRACTIONS))
    parser.add_argument("--max-epochs", type=int, default=500)
    parser.add_argument("--pretrain-epochs", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS / "sims_pretraining"))
    parser.add_argument("--baseline-only", action="store_true", help="only logistic regression")
    parser.add_argument("--summarize", nargs="*", default=None, help="only merge these runs CSVs")
    args = parser.parse_args(argv)
    if args.summarize:
        df = pd.concat([pd.read_csv(p) for p in args.summarize], ignore_index=True)
        return summarize(df, args.out, ", ".join(sorted(df.dataset.unique())))
    (task,) = load_tasks([args.dataset])
    rows = []
    for seed, train, test in splits(task.adata.obs[task.labels_key], seeds=args.seeds):
        rows += run_baseline(task, train, test, seed, fractions=args.fractions)
        if not args.baseline_only:
            rows += run_seed(task, train, test, seed, fractions=args.fractions, max_epochs=args.max_epochs,
                             pretrain_epochs=args.pretrain_epochs)
        pd.DataFrame(rows).to_csv(f"{args.out}_runs.csv", index=False)
    df = pd.DataFrame(rows)
    return summarize(df, args.out, f"{args.dataset}, seeds {args.seeds}")


def summarize(df: pd.DataFrame, out: str, what: str) -> pd.DataFrame:
    """Mean (and sd of macro F1) per dataset, label fraction and method."""
    if "method" not in df:  # runs written before the method column
        df = df.assign(method=np.where(df.pop("pretrained"), "SIMS + pretraining", "SIMS"))
    summary = (
        df.groupby(["dataset", "fraction", "method"])
        .agg(n_labelled=("n_labelled", "mean"), accuracy=("accuracy", "mean"), macro_f1=("macro_f1", "mean"),
             macro_f1_sd=("macro_f1", "std"), median_f1=("median_f1", "mean"))
        .reset_index()
    )
    write_results(summary, out, f"SIMS with/without masked pretraining by label fraction ({what})")
    return summary


if __name__ == "__main__":
    main()
