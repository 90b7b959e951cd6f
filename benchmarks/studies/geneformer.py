"""Geneformer-style model: pretraining on human PBMCs, annotation against peers with 1%, 10% and
100% of labels, and in-silico deletion of interferon genes in Kang 2018.

Three steps, each writing its results as it goes (``benchmarks/results/geneformer_*``):

``pretrain``
    A ``preset="cpu"`` Geneformer pretrained (masked genes) on the unlabelled human PBMCs of the
    shared folder: Kang 2018 control and stimulated plus 10x pbmc3k, concatenated on their
    common genes (:func:`scattn.data.read_h5ads`). The model is saved under
    ``benchmarks/output/geneformer_pbmc`` (not committed); its history and cost go to
    ``geneformer_pretraining.csv``.
``annotation``
    For each seed, a stratified 80/20 split (:func:`benchmarks._common.splits`, the splits of
    ``python -m benchmarks``). For each label fraction a stratified subset of the training
    cells (at least one per class) is labelled, and the rest of the training cells are left out:
    Geneformer from scratch, Geneformer fine-tuned from a pretrained model, logistic regression
    and CellTypist train on that subset and predict the held-out 20%. ``pbmc68k_reduced`` starts
    from the PBMC model; ``paul15`` (mouse) starts from a model pretrained on its own cells,
    every cell of the dataset with no label read. The other scattn classifiers' and scANVI's
    scores on the same splits (100% labels) come from ``benchmark_runs.csv``.
``perturbation``
    The PBMC model fine-tuned to tell Kang's stimulated cells from control ones (a stratified
    subset); on held-out stimulated cells, the top interferon-response genes (scanpy's Wilcoxon
    test, stimulated vs control, on the training cells) are deleted from each cell's tokens, and
    so are random gene sets of matched expression (same size, each gene drawn from the same
    mean-expression decile). The shift of each cell's embedding toward the control centroid
    (:func:`scattn.tl.in_silico_perturbation`) is reported for both.

    python -m benchmarks.studies.geneformer pretrain [--epochs 2]
    python -m benchmarks.studies.geneformer annotation [--seeds 0 1 2] [--datasets pbmc68k_reduced paul15]
    python -m benchmarks.studies.geneformer perturbation
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .._common import (
    RESULTS,
    ROOT,
    data_dir,
    load_tasks,
    lognorm_matrix,
    splits,
    upsert_runs,
    write_results,
)
from .._common import metrics as _metrics
from .sims_pretraining import labelled_subset

OUTPUT = ROOT / "output"
PBMC_MODEL = OUTPUT / "geneformer_pbmc"
FRACTIONS = (0.01, 0.1, 1.0)
PBMC_FILES = ("kang2018_pbmc_ctrl_unlabeled.h5ad", "kang2018_pbmc_stim_unlabeled.h5ad",
              "pbmc3k_raw_unlabeled.h5ad")


def _quiet(seed: int) -> None:
    import warnings

    import scattn as sa

    warnings.simplefilter("ignore")
    sa.settings.seed = seed
    sa.settings.progress_bar = False


# -- pretraining ------------------------------------------------------------------------------
def pbmc_corpus():
    """The unlabelled human PBMCs on their common genes, in memory."""
    import scattn as sa

    base = data_dir()
    if base is None:
        raise SystemExit("The shared data folder is needed (../shared/data or $SCATTN_DATA_DIR).")
    return sa.data.read_h5ads([base / f for f in PBMC_FILES], backed=False)


def pretrain(epochs: int, out: Path = PBMC_MODEL, *, seed: int = 0):
    """Pretrain the PBMC model; save it and its history."""
    import scattn as sa

    _quiet(seed)
    corpus = pbmc_corpus()
    sa.model.Geneformer.setup_anndata(corpus)
    model = sa.model.Geneformer(corpus)
    start = time.perf_counter()
    model.pretrain(max_epochs=epochs)
    seconds = time.perf_counter() - start
    model.save(out, overwrite=True)
    hist = model.pretrain_history_
    rows = []
    for epoch in range(len(hist["train_loss"])):
        rows.append(dict(epoch=epoch + 1, cells=corpus.n_obs, genes=corpus.n_vars,
                         train_loss=float(hist["train_loss"].iloc[epoch, 0]),
                         validation_loss=float(hist["validation_loss"].iloc[epoch, 0])
                         if "validation_loss" in hist else np.nan,
                         masked_accuracy=float(hist["masked_accuracy_validation"].iloc[epoch, 0])
                         if "masked_accuracy_validation" in hist else np.nan,
                         seconds_total=seconds))
    write_results(pd.DataFrame(rows), RESULTS / "geneformer_pretraining",
                  f"Geneformer (preset cpu) masked pretraining on {corpus.n_obs} human PBMCs "
                  f"({', '.join(PBMC_FILES)}; {corpus.n_vars} common genes), {epochs} epochs, "
                  f"{seconds:.0f} s on this machine's CPU")
    return model


def own_cells_model(task, seed: int, epochs: int):
    """A Geneformer pretrained on every cell of `task` (labels never read)."""
    import scattn as sa

    _quiet(seed)
    cells = task.adata.copy()
    cells.obs = cells.obs[[]]
    sa.model.Geneformer.setup_anndata(cells, expression=task.expression)
    model = sa.model.Geneformer(cells)
    model.pretrain(max_epochs=epochs)
    return model


# -- annotation -------------------------------------------------------------------------------
def _geneformer(train, test, task, seed, source=None) -> tuple[np.ndarray, int, float]:
    import scattn as sa

    _quiet(seed)
    sa.model.Geneformer.setup_anndata(train, labels_key=task.labels_key, expression=task.expression)
    model = sa.model.Geneformer(train) if source is None else sa.model.Geneformer.from_pretrained(source, train)
    start = time.perf_counter()
    model.train()
    seconds = time.perf_counter() - start
    pred = model.predict(test, inplace=False).prediction.astype(str).to_numpy()
    return pred, len(model.history["train_loss"]), seconds


def _peers(train, test, task, seed) -> dict[str, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    from .._peers import celltypist_labels, fit_celltypist_model

    labels = train.obs[task.labels_key].astype(str)
    x, x_test = lognorm_matrix(train, task.expression), lognorm_matrix(test, task.expression)
    out = {"LogisticRegression": LogisticRegression(max_iter=2000).fit(x, labels).predict(x_test)}
    model = fit_celltypist_model(x, labels.to_numpy(), train.var_names)
    out["CellTypist"] = celltypist_labels(model, x_test, test.obs_names, test.var_names)
    return out


def annotation(datasets, seeds, fractions, *, own_epochs: int) -> pd.DataFrame:
    import scattn as sa

    rows: list[dict] = []
    out = RESULTS / "geneformer_annotation"
    for task in load_tasks(list(datasets)):
        if task.name == "pbmc68k_reduced":
            if not (PBMC_MODEL / "model.pt").exists():
                raise SystemExit(f"Run `python -m benchmarks.studies.geneformer pretrain` first ({PBMC_MODEL}).")
            source, source_note = str(PBMC_MODEL), "pretrained on human PBMCs (Kang 2018 + pbmc3k)"
        else:
            start = time.perf_counter()
            source = own_cells_model(task, 0, own_epochs)
            source_note = (f"pretrained on its own {task.adata.n_obs} cells, no labels, {own_epochs} "
                           f"epochs ({time.perf_counter() - start:.0f} s)")
        labels_all = task.adata.obs[task.labels_key].astype(str)
        for seed, train_idx, test_idx in splits(labels_all, seeds=seeds):
            test = task.adata[test_idx].copy()
            y = test.obs[task.labels_key].astype(str).to_numpy()
            test.obs = test.obs[[]]
            train_all = task.adata[train_idx].copy()
            for fraction in fractions:
                idx = labelled_subset(train_all.obs[task.labels_key].astype(str), fraction, seed)
                train = train_all[idx].copy()
                train.obs = train.obs[[task.labels_key]]
                train.obs[task.labels_key] = train.obs[task.labels_key].astype(str).astype("category")
                base = dict(dataset=task.name, seed=seed, fraction=fraction, n_labelled=len(idx))
                for name, pred in _peers(train, test, task, seed).items():
                    rows.append(dict(base, method=name, **_metrics(y, pred)))
                for name, src in (("Geneformer (scratch)", None), ("Geneformer (pretrained)", source)):
                    pred, epochs, seconds = _geneformer(train.copy(), test, task, seed, src)
                    rows.append(dict(base, method=name, epochs=epochs, train_s=seconds,
                                     note=source_note if src is not None else "", **_metrics(y, pred)))
                    print(f"{task.name} seed {seed} {fraction:.0%} {name}: macro F1 "
                          f"{rows[-1]['macro_f1']:.3f} ({epochs} epochs, {seconds:.0f} s)", flush=True)
        # one runs file for every dataset and seed: this split's rows replace their earlier ones
        new = pd.DataFrame([r for r in rows if r["dataset"] == task.name])
        upsert_runs(f"{out}_runs.csv", new, ("dataset", "seed"))
    runs = upsert_runs(f"{out}_runs.csv", _suite_rows(datasets, seeds), ("dataset", "seed", "method"))
    return summarize([runs], out, f"datasets and seeds of {out.name}_runs.csv; scattn {sa.__version__}")


def summarize(runs: list[pd.DataFrame], out, note: str) -> pd.DataFrame:
    """Mean (and spread) per dataset, label fraction and method, written to `out`.csv/.md."""
    runs = pd.concat(runs, ignore_index=True)
    table = (runs.groupby(["dataset", "fraction", "method"], sort=False)
             .agg(macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"),
                  accuracy=("accuracy", "mean"), n_labelled=("n_labelled", "mean"),
                  seeds=("seed", "nunique"), train_s=("train_s", "mean"))
             .reset_index())
    write_results(table, out, "Geneformer (preset cpu) annotation, macro F1 (stratified 80/20 splits "
                  "of `python -m benchmarks`; the labelled fraction of the training cells trains, "
                  "the held-out 20% is predicted; rows marked `(suite)` are from benchmark_runs.csv, "
                  f"same splits, 100% labels); {note}")
    return table


def _suite_rows(datasets, seeds) -> pd.DataFrame:
    """The annotation suite's other methods on the same splits (100% labels)."""
    path = RESULTS / "benchmark_runs.csv"
    if not path.exists():
        return pd.DataFrame()
    runs = pd.read_csv(path)
    runs = runs[runs["task"].isin(datasets) & runs["seed"].isin(seeds)
                & runs["method"].isin(["CGRAN", "CFAN", "SIMS", "scANVI", "pytorch-tabnet"])]
    return pd.DataFrame(dict(dataset=runs["task"], seed=runs["seed"], fraction=1.0,
                             n_labelled=runs["n_train"], method=runs["method"] + " (suite)",
                             macro_f1=runs["macro_f1"], accuracy=runs["accuracy"]))


# -- in-silico perturbation ------------------------------------------------------------------------
def perturbation(*, n_genes: int = 20, n_random: int = 20, n_train: int = 1500, n_test: int = 500,
                 seed: int = 0) -> pd.DataFrame:
    import anndata as ad
    import scanpy as sc

    import scattn as sa

    _quiet(seed)
    if not (PBMC_MODEL / "model.pt").exists():
        raise SystemExit(f"Run `python -m benchmarks.studies.geneformer pretrain` first ({PBMC_MODEL}).")
    base = data_dir()
    parts = []
    for name, cond in (("kang2018_pbmc_ctrl_unlabeled.h5ad", "control"),
                       ("kang2018_pbmc_stim_unlabeled.h5ad", "stimulated")):
        a = ad.read_h5ad(base / name)
        a.obs = pd.DataFrame({"condition": cond}, index=a.obs_names.astype(str) + f"-{cond}")
        parts.append(a)
    kang = ad.concat(parts)
    kang.obs["condition"] = kang.obs["condition"].astype("category")
    rng = np.random.default_rng(seed)
    picks = {c: rng.permutation(np.flatnonzero(kang.obs["condition"] == c)) for c in ("control", "stimulated")}
    train_idx = np.concatenate([p[: n_train // 2] for p in picks.values()])
    # held-out cells of both conditions: the control ones place the control centroid
    test_idx = np.concatenate([p[n_train // 2 : n_train // 2 + n_test] for p in picks.values()])
    train, test = kang[np.sort(train_idx)].copy(), kang[np.sort(test_idx)].copy()
    # interferon-response genes: up in stimulated training cells (Wilcoxon on log1p CP10k)
    ln = train.copy()
    sc.pp.normalize_total(ln, target_sum=1e4)
    sc.pp.log1p(ln)
    sc.tl.rank_genes_groups(ln, "condition", groups=["stimulated"], reference="control", method="wilcoxon")
    de = sc.get.rank_genes_groups_df(ln, group="stimulated")
    sa.model.Geneformer.setup_anndata(train, labels_key="condition")
    model = sa.model.Geneformer.from_pretrained(str(PBMC_MODEL), train)
    vocab = pd.Index(model.var_names_)
    ifn = [g for g in de["names"] if g in vocab][:n_genes]
    model.train()
    pred = model.predict(test, inplace=False).prediction.astype(str)
    # matched random sets: each IFN gene replaced by a random gene of the same mean-expression decile
    mean = np.asarray(ln.X.mean(axis=0)).ravel()
    decile = pd.qcut(pd.Series(mean, index=ln.var_names).rank(method="first"), 10, labels=False)
    pool = [g for g in ln.var_names if g in vocab and g not in set(de["names"][:200])]
    by_decile = {d: [g for g in pool if decile[g] == d] for d in range(10)}
    sets = {"IFN (Wilcoxon top)": ifn}
    for r in range(n_random):
        sets[f"random {r}"] = [rng.choice(by_decile[decile[g]]) for g in ifn]
    stim = (test.obs["condition"] == "stimulated").to_numpy()
    rows, per_cell = [], []
    for name, genes in sets.items():
        sa.tl.in_silico_perturbation(test, model, genes=list(dict.fromkeys(genes)), mode="delete",
                                     groupby="condition", key_added="perturb")
        toward = test.obsm["perturb_toward"]["control"].to_numpy()[stim]
        rows.append(dict(gene_set=name, kind="IFN" if name.startswith("IFN") else "random",
                         n_genes=len(set(genes)), mean_toward_control=float(toward.mean()),
                         median_toward_control=float(np.median(toward)),
                         share_toward_control=float((toward > 0).mean()),
                         mean_shift=float(test.obs["perturb_shift"].to_numpy()[stim].mean())))
        per_cell.append(pd.DataFrame({"gene_set": name, "toward_control": toward}))
        print(rows[-1], flush=True)
    plot_perturbation(pd.concat(per_cell))
    table = pd.DataFrame(rows)
    table["classifier_accuracy"] = float((pred.to_numpy() == test.obs["condition"].astype(str).to_numpy()).mean())
    pd.concat(per_cell).to_csv(RESULTS / "geneformer_perturbation_cells.csv", index=False)
    write_results(table, RESULTS / "geneformer_perturbation",
                  f"In-silico deletion on {n_test} held-out Kang 2018 stimulated cells: the top {n_genes} "
                  f"Wilcoxon stimulated-vs-control genes (in the vocabulary: {', '.join(ifn)}) against "
                  f"{n_random} random sets of matched expression decile; `toward_control` = cos(perturbed, "
                  f"control centroid) - cos(original, control centroid), centroids of the original "
                  f"embeddings of held-out control and stimulated cells by their condition")
    return table


def plot_perturbation(cells: pd.DataFrame, out=RESULTS / "geneformer_perturbation.png") -> None:
    """Both distributions of the shift toward control: the IFN set against all random sets pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ifn = cells.loc[cells["gene_set"].str.startswith("IFN"), "toward_control"].to_numpy()
    rand = cells.loc[~cells["gene_set"].str.startswith("IFN"), "toward_control"].to_numpy()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(min(ifn.min(), rand.min()), max(ifn.max(), rand.max()), 60)
    ax.hist(rand, bins=bins, density=True, alpha=0.6, color="#a0a0a0",
            label=f"random matched genes ({cells['gene_set'].nunique() - 1} sets), median {np.median(rand):.4f}")
    ax.hist(ifn, bins=bins, density=True, alpha=0.7, color="#c0392b",
            label=f"interferon genes (Wilcoxon top), median {np.median(ifn):.4f}")
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("shift toward the control centroid (cosine)")
    ax.set_ylabel("density of stimulated cells")
    ax.set_title("In-silico deletion in held-out Kang 2018 stimulated cells")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    pp = sub.add_parser("pretrain")
    pp.add_argument("--epochs", type=int, default=2)
    pa = sub.add_parser("annotation")
    pa.add_argument("--datasets", nargs="+", default=["pbmc68k_reduced", "paul15"])
    pa.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    pa.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    pa.add_argument("--own-epochs", type=int, default=5)
    sub.add_parser("perturbation")
    sub.add_parser("report", help="the table from geneformer_annotation_runs.csv")
    args = p.parse_args(argv)
    if args.step == "pretrain":
        pretrain(args.epochs)
    elif args.step == "annotation":
        annotation(args.datasets, args.seeds, args.fractions, own_epochs=args.own_epochs)
    elif args.step == "report":
        path = RESULTS / "geneformer_annotation_runs.csv"
        summarize([pd.read_csv(path)], RESULTS / "geneformer_annotation", f"from {path.name}")
    else:
        perturbation()


if __name__ == "__main__":
    main()
