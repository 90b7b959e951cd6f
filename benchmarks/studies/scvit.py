"""scViT against scVI and PCA, side by side, with the ablation of scViT's parts.

For every counts dataset with labels or batches (see :mod:`benchmarks._integration`), every
seed: a stratified 80/20 split of the cells; scVI and each scViT variant train on the 80% for
the same number of epochs (``--epochs``, whole data each epoch, batch size 128, seed fixed);
then, per method:

* ``heldout_nll``: the mean negative log-likelihood of a held-out cell's counts given a
  posterior sample (``get_reconstruction_error``; lower is better);
* ``knn_acc``: 15-NN cell-type accuracy on the latent of all cells, 5-fold;
* ``mlp_acc``: the report's protocol, a small MLP on the latent (train cells -> held-out);
* ``s_per_epoch``, ``peak_mb`` and their ratios to scVI's in the same run;
* with batches, scib-metrics' bio conservation, batch correction and total.

Usage::

    python -m benchmarks.studies.scvit [--datasets paul15 cellbench panc8] [--seeds 0 1]
        [--epochs 100] [--variants scViT "no attention" ...] [--out benchmarks/results/scvit]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from benchmarks._common import RESULTS, markdown_table, pin_threads, splits
from benchmarks._integration import (
    VARIANTS,
    evaluate_split,
    integration_scores,
    load_integration_tasks,
)


def run(datasets, seeds, epochs: int, variants: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, integ = [], []
    methods = {"scVI": None, **{v: VARIANTS[v] for v in variants}, "PCA": None}
    for task in load_integration_tasks(datasets):
        labels = task.adata.obs["cell_type"].to_numpy()
        for seed, train, test in splits(labels, seeds=seeds):
            new, latents = evaluate_split(task, train, test, methods, seed=seed,
                                          epochs=dict.fromkeys(methods, epochs))
            rows += [{"dataset": task.name, "seed": seed, **row} for row in new]
            scores = integration_scores(task, latents)
            if scores is not None:
                scores = scores.reset_index().assign(dataset=task.name, seed=seed)
                integ.append(scores)
                print(scores.to_string(index=False), flush=True)
    return pd.DataFrame(rows), (pd.concat(integ, ignore_index=True) if integ else pd.DataFrame())


def patch_coherence(datasets, patch_size: int = 64) -> pd.DataFrame:
    """Do the gene orders make patches of co-expressed genes? For each order, the mean Pearson
    correlation (log-normalised expression) between two genes of one patch, against two
    genes of different patches."""
    from scattn.data import log_normalize, order_genes

    rows = []
    for task in load_integration_tasks(datasets):
        x = log_normalize(task.adata.layers["counts"], "counts")
        dense = np.asarray(x.toarray() if hasattr(x, "toarray") else x)
        corr = np.nan_to_num(np.corrcoef(dense, rowvar=False))
        g = corr.shape[0]
        off = ~np.eye(g, dtype=bool)
        for order in ("correlation", "given", "mean", "random"):
            pos = order_genes(x, order, seed=0)
            patch = np.empty(g, dtype=int)
            patch[pos] = np.arange(g) // patch_size
            same = (patch[:, None] == patch[None, :]) & off
            rows.append({"dataset": task.name, "gene_order": order,
                         "within_patch_r": float(corr[same].mean()),
                         "between_patch_r": float(corr[~same & off].mean())})
    return pd.DataFrame(rows).round(4)


def summarise(runs: pd.DataFrame, integ: pd.DataFrame) -> pd.DataFrame:
    cols = ["heldout_nll", "knn_acc", "mlp_acc", "s_per_epoch_vs_scvi", "peak_mb_vs_scvi"]
    table = runs.groupby(["dataset", "method"], sort=False)[cols].mean()
    if not integ.empty:
        keep = [c for c in ("Bio conservation", "Batch correction", "Total") if c in integ]
        table = table.join(integ.groupby(["dataset", "method"], sort=False)[keep].mean())
    return table.round(4).reset_index()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="*", default=None)
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--out", default=str(RESULTS / "scvit"))
    p.add_argument("--coherence-only", action="store_true",
                   help="only the gene-order table (seconds)")
    args = p.parse_args(argv)
    coherence = patch_coherence(args.datasets)
    coherence.to_csv(f"{args.out}_gene_order.csv", index=False)
    with open(f"{args.out}_gene_order.md", "w") as fh:
        fh.write("# Gene orders: are a patch's genes co-expressed?\n\nMean Pearson correlation "
                 "of two genes in one 64-gene patch, and of two genes in different patches "
                 "(log-normalised expression, all cells).\n\n")
        fh.write(markdown_table(coherence))
    print(coherence.to_string(index=False))
    if args.coherence_only:
        return
    pin_threads()
    warnings.filterwarnings("ignore")
    runs, integ = run(args.datasets, args.seeds, args.epochs, args.variants)
    runs.to_csv(f"{args.out}_runs.csv", index=False)
    if not integ.empty:
        integ.to_csv(f"{args.out}_integration_runs.csv", index=False)
    table = summarise(runs, integ)
    table.to_csv(f"{args.out}.csv", index=False)
    with open(f"{args.out}.md", "w") as fh:
        fh.write("# scViT against scVI and PCA, with the ablation\n\n")
        fh.write(f"{args.epochs} epochs each (same budget), seeds {args.seeds}, 80/20 stratified "
                 "splits; means over seeds. heldout_nll: negative log-likelihood per held-out "
                 "cell (lower is better); knn_acc: 15-NN, 5-fold; mlp_acc: MLP on the latent, "
                 "train -> held-out cells; ratios to scVI in the same run.\n\n")
        fh.write(markdown_table(table))
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
