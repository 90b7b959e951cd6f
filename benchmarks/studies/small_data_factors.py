"""One setting at a time on the small_data family's splits: what moves a classifier on 100-560 cells.

The suite's small_data family (``python -m benchmarks --tasks small_data_...``) scores each
model with its defaults; this study changes one argument of a model's constructor or
``train()`` at a time, on the same splits (a stratified 20% test set per seed, the training
cells a stratified subsample of the rest with at least 3 cells of every class,
:func:`benchmarks._common.stratified_subsample`), so that a default change rests on a measured
difference over seeds, not on one run.

Variants (``--variants``, names of :data:`VARIANTS`): ``default`` (the model as a newcomer
trains it), SIMS' TabNet width ``sims_width_32`` (``n_d = n_a = 32``, SIMS' default is 8),
``sims_one_step`` (one decision step), ``restore_last`` / ``restore_best`` (the last
epoch's weights kept, or the best validation epoch's, against the model's default).
Sizes: the training cells; a size at or above the pool takes the whole pool.

Outputs (``--out``, default ``benchmarks/results/small_data_factors``): ``_runs.csv`` (one row per
model, variant, dataset, size and seed, upserted: a rerun replaces only its rows), ``.csv`` and
``.md`` (mean and sd over seeds).

Usage::

    python -m benchmarks.studies.small_data_factors --models SIMS \\
        --variants default sims_width_32 --datasets pbmc68k_reduced panc8_subset --sizes 100 300
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from .._common import (
    ROOT,
    load_tasks,
    metrics,
    pin_threads,
    splits,
    stratified_subsample,
    upsert_runs,
    write_results,
)

#: variant name -> (constructor arguments, train() arguments)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "sims_width_32": ({"n_d": 32, "n_a": 32}, {}),
    "sims_one_step": ({"n_steps": 1}, {}),
    "sims_width_32_one_step": ({"n_d": 32, "n_a": 32, "n_steps": 1}, {}),
    "restore_last": ({}, {"restore_best_weights": False}),
    "restore_best": ({}, {"restore_best_weights": True}),
}
KEYS = ("model", "variant", "dataset", "n_train", "seed")


def run_one(model: str, variant: str, task, n: int, seed: int, pool, test) -> dict:
    """Train `model` with `variant` on `n` cells of `pool` (all of it when `n` >= its size);
    score it on `test`."""
    import scattn as sa

    labels = task.adata.obs[task.labels_key].astype(str).to_numpy()
    train = pool if n >= len(pool) else pool[stratified_subsample(labels[pool], n, seed)]
    adata = task.adata[train].copy()
    adata.obs[task.labels_key] = adata.obs[task.labels_key].astype(str).astype("category")
    query = task.adata[test].copy()
    query.obs = query.obs[[]]
    init, train_kwargs = VARIANTS[variant]
    cls = getattr(sa.model, model)
    sa.settings.seed = seed
    sa.settings.progress_bar = False
    expression = {} if task.expression == "counts" else {"expression": "log1p"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls.setup_anndata(adata, labels_key=task.labels_key, **expression)
        fitted = cls(adata, **init)
        start = time.perf_counter()
        fitted.train(**train_kwargs)
        seconds = time.perf_counter() - start
        predicted = fitted.predict_proba(query).idxmax(axis=1).astype(str).to_numpy()
    scores = metrics(labels[test], predicted)
    epochs = fitted.history.get("train_loss") if fitted.history else None
    return dict(model=model, variant=variant, dataset=task.name, n_train=len(train), seed=seed,
                macro_f1=scores["macro_f1"], accuracy=scores["accuracy"],
                epochs=None if epochs is None else len(epochs), train_s=seconds)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per model, variant, dataset and size."""
    return (runs.groupby(["model", "dataset", "n_train", "variant"], sort=True)
            .agg(n_seeds=("seed", "nunique"), macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"),
                 epochs=("epochs", "mean"), train_s=("train_s", "mean"))
            .reset_index())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["SIMS"])
    parser.add_argument("--variants", nargs="+", default=["default", "sims_width_32"], choices=list(VARIANTS))
    parser.add_argument("--datasets", nargs="+", default=["pbmc68k_reduced", "panc8_subset"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 300])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default=str(ROOT / "results" / "small_data_factors"))
    args = parser.parse_args(argv)
    pin_threads()
    rows = []
    for task in load_tasks(args.datasets):
        labels = task.adata.obs[task.labels_key].astype(str).to_numpy()
        for seed, pool, test in splits(labels, seeds=args.seeds):
            for n in args.sizes:
                for model in args.models:
                    for variant in args.variants:
                        rows.append(run_one(model, variant, task, n, seed, pool, test))
                        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()},
                              flush=True)
    runs = upsert_runs(f"{args.out}_runs.csv", pd.DataFrame(rows), KEYS)
    write_results(summarize(runs), args.out, "One setting at a time on the small_data splits "
                  "(macro F1 on the held-out 20%, mean and sd over seeds)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
