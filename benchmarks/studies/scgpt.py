"""scGPT-style model (``sa.model.SCGPT``, ``preset="cpu"``): integration, response prediction,
gene programs, throughput and annotation on the real data of the shared folder.

Five steps, each printing its progress and writing its results as it goes
(``benchmarks/results/scgpt_*``; ``--quick`` runs a tiny configuration, 1 epoch, and writes
``scgpt_*_quick*`` files instead, so real results are never overwritten):

``integration``
    Three datasets with two batches each: CellBench (CEL-seq2 and Drop-seq) and panc8 (inDrop and
    Smart-seq2, the integer-count technologies), both from
    :func:`benchmarks._integration.load_integration_tasks` (2,000 HVGs, seurat_v3 per batch,
    labels ``cell_type``), and Kang 2018 with *conditions as batches*: ``--kang-cells`` cells
    drawn at random per condition (default 1,000 control + 1,000 IFN-beta stimulated, seeded),
    2,000 HVGs (seurat_v3 on counts, batch-aware with the condition as batch). Kang has no labels:
    each cell gets the PBMC type of ``benchmarks/markers_pbmc.csv`` whose markers score highest
    (:func:`scanpy.tl.score_genes` on log1p(counts per 10k over all genes) of the subsample, one
    score per type, label = argmax; computed before the HVG selection, uses no integration
    method). On the same cells of each dataset: PCA (the 30-component PCA of log-normalised,
    scaled HVGs of :func:`benchmarks._integration.pca_latent`, with 30 components instead of its
    10 so that it is the very input Harmony corrects), Harmony (``harmonypy.run_harmony`` on that
    PCA, batch as the covariate), scVI (``scvi.model.SCVI`` defaults, 10 latent dims, as
    :func:`benchmarks._integration.fit_vae` trains it: 128 cells per minibatch, every cell,
    ``--scvi-epochs`` 100) and SCGPT from scratch with its default :meth:`SCGPT.train` for a model
    without labels and with ``batch_key``: GEP + GEPC + ECS + DAR (its own epoch budget unless
    ``--epochs``; with ``--pretrain-epochs N``, after N epochs of generative pretraining on the
    same cells, no label read). Scores: every column of scib-metrics' ``Benchmarker``
    (:func:`benchmarks._integration.integration_scores` with ``leiden=True``, Leiden NMI/ARI on:
    bio conservation = isolated labels, Leiden and KMeans NMI/ARI, silhouette of labels, cLISI; batch correction =
    BRAS (scib-metrics 0.5's batch silhouette), iLISI, kBET, graph connectivity, PCR comparison
    off; the aggregates; raw values, not min-max scaled) plus ``knn_acc`` (15-NN classifier,
    5-fold stratified CV, :func:`benchmarks._integration.knn_accuracy`); cost: wall seconds of the
    fit (PCA and Harmony: computing the embedding from counts; scVI and SCGPT: ``train()``) and its
    peak resident memory above the start (:func:`benchmarks._measure.measure`).
    After each dataset its rows go into ``scgpt_integration_runs.csv`` (one file for every dataset
    and ``scgpt_pretrain_epochs``, 0 = from scratch: a rerun replaces only the rows it measures
    again), ``scgpt_integration.md`` is rebuilt from that file, and
    ``scgpt_integration[_pretrained]_<dataset>.png`` shows a UMAP of each embedding, by cell type
    and by batch.
``response``
    Kang 2018: ``--cells`` control + ``--cells`` stimulated cells at random (default 1,500 each,
    seeded), 2,000 HVGs (seurat_v3 on counts of both conditions together). Expression is
    log1p(counts per 10k over these genes), the normalisation of the model's decoders.
    Populations: the 200 genes with the largest absolute mean log fold change (stimulated vs
    control, over all cells) are set aside (the interferon response, so that clusters follow cell
    identity); on the other HVGs of the control cells, scaled with the control cells' means and
    sds (clipped at 10), a 30-component PCA fitted on the control cells, 15 neighbours and Leiden
    (resolution 0.5, igraph flavour, seeded) give the populations; each stimulated cell is scaled
    and projected with the control PCA's loadings and takes the population of the majority of its
    15 nearest control cells. Each population is named by the marker type with the highest mean
    score among its control cells (descriptive only). Held out (``--populations``): by default the
    population with the highest mean CD14 among control cells (monocytes, the strongest interferon
    responders); ``all``: every population with >= ``--min-cells`` (30) control and stimulated
    cells. For each held-out population P, SCGPT (condition tokens) is trained from scratch on all
    control cells plus the stimulated cells outside P, tasks GEP + GEPC, ``--epochs`` (15) at most
    (early stopping on), and P's control cells are decoded under both conditions
    (:meth:`SCGPT.predict_response`). Compared with P's observed pseudo-bulk change (mean over its
    stimulated cells minus mean over its control cells), per gene:
    ``scGPT (delta)`` = mean decoded-as-stimulated minus mean decoded-as-control;
    ``scGPT (decoded)`` = mean decoded-as-stimulated minus P's observed control mean;
    ``additive`` = the unweighted mean over the other populations (>= ``--min-cells`` cells in
    each condition) of their observed change; ``no change`` = 0. Metrics: Pearson r of predicted
    vs observed change over all genes and over P's 20 genes of largest observed absolute change
    (chosen with the held-out truth, the standard protocol of scGen and GEARS), the mean squared
    error of the change on both gene sets, and Pearson r of the predicted stimulated pseudo-bulk
    (observed control mean + predicted change; for ``scGPT (decoded)`` the decoded mean itself)
    vs the observed one. ``no change`` predicts a constant change, so its r of changes is
    undefined (NaN). ``r_ctrl_decoded``: how well the mean decoded-as-control matches P's
    observed control mean (the decoder's reconstruction). After each population, its rows go into
    ``scgpt_response_runs.csv`` (every population held out so far, one file: a rerun replaces
    only the populations it runs), ``scgpt_response.md`` is rebuilt from that file, and
    ``scgpt_response_P<population>.png`` shows observed vs predicted change per gene (scGPT and
    additive, the top-20 genes named).
``programs``
    SCGPT pretrained (GEP + GEPC, ``--epochs`` 3) on human PBMCs: Kang 2018 control and stimulated
    plus 10x pbmc3k on their common genes (:func:`scattn.data.read_h5ads`), ``--cells`` (6,000)
    cells at random, the 2,000 HVGs of those cells (seurat_v3 on counts) plus the HLA class I
    (HLA-A/B/C/E), class II (HLA-DR/DP/DQ) and CD3 (CD3D/E/G) genes present. Saved to
    ``benchmarks/output/scgpt_pbmc`` (not committed); its history, seconds and tokens per second
    (training tokens: each cell's min(expressed genes, max_length - 1) + ``<cls>``, over the 95%
    of cells trained on, per epoch; validation passes inside the seconds) go to
    ``scgpt_pretraining.csv``. Then :func:`scattn.tl.gene_programs` on every model gene at each
    of ``--resolutions`` (0.5, 1, 2), and for the listed genes their programs; whether class I,
    class II and CD3 each fall into one program and class I apart from class II; the mean cosine
    similarity of the gene embeddings within class I, within class II, between the two, within
    CD3, against a null of 5,000 random pairs of other HVGs. Writes ``scgpt_programs.csv`` (genes),
    ``scgpt_programs_checks.csv``, ``scgpt_programs_similarity.csv``, ``scgpt_programs.md`` and
    ``scgpt_programs.png``
    (:func:`scattn.pl.gene_programs` of the listed genes' programs at resolution 1).
``throughput``
    ``--cells`` (2,000) Kang 2018 control cells at random, their 2,000 HVGs, the cpu preset, one
    epoch each on every cell (``train_size=1``, no validation): generative pretraining (GEP +
    GEPC), fine-tuning (GEP + GEPC + ECS) and inference (:meth:`get_latent_representation`);
    tokens are each cell's min(expressed genes, max_length - 1) + 1 (``<cls>``). Seconds of the
    whole call (data loading, first-epoch set-up included), cells/s, tokens/s and peak memory.
    Writes ``scgpt_throughput.csv``/``.md``.
``annotation``
    The protocol of ``python -m benchmarks.studies.geneformer annotation`` (its splits,
    :func:`~benchmarks.studies.sims_pretraining.labelled_subset` and its peers, logistic
    regression and CellTypist, imported from there) for SCGPT: for each seed a stratified 80/20
    split; for each label fraction (1%, 10%, 100%) a stratified subset of the training cells (at
    least one per class) is labelled and the other training cells are left out. SCGPT from
    scratch and SCGPT fine-tuned from a model pretrained (GEP + GEPC, ``--pretrain-epochs`` 5)
    on every cell of the same dataset with no label read (held-out cells' expression included,
    as in the Geneformer study), both with the CLS task, train on that subset and predict the
    held-out 20%. Fine-tuning budget: SCGPT's own rule with a cap of ``--max-epochs`` (10)
    epochs instead of 30, i.e. max(10 epochs, 300 optimiser steps), early stopping on.
    ``pbmc68k_reduced`` (scanpy's log-normalised ``.raw``, set up with ``expression="log1p"``: the
    value bins are per-cell ranks) and ``paul15`` (counts). Writes ``scgpt_annotation_runs.csv``
    after each fit and ``scgpt_annotation.md``/``.csv`` (means over seeds; the suite's other
    methods on the same splits at 100% labels, from ``benchmark_runs.csv``, marked ``(suite)``).
``report``
    Merges ``scgpt_annotation<suffix>_runs.csv`` files (e.g. one per seed) into
    ``scgpt_annotation.md``/``.csv``.

Run one step per process with one thread (``OMP_NUM_THREADS=1``)::

    python -m benchmarks.studies.scgpt integration [--epochs N] [--scvi-epochs 100] [--kang-cells 1000]
    python -m benchmarks.studies.scgpt response [--populations monocytes|all|ID ...] [--epochs 15] [--cells 1500]
    python -m benchmarks.studies.scgpt programs [--cells 6000] [--epochs 3] [--resolutions 0.5 1 2]
    python -m benchmarks.studies.scgpt throughput [--cells 2000]
    python -m benchmarks.studies.scgpt annotation [--seeds 0] [--datasets pbmc68k_reduced paul15]
    python -m benchmarks.studies.scgpt report SUFFIX ...
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .._common import (
    RESULTS,
    ROOT,
    data_dir,
    load_tasks,
    markdown_table,
    pin_threads,
    splits,
    upsert_runs,
    write_results,
)
from .._common import metrics as _metrics
from .geneformer import _peers, _quiet, _suite_rows, pbmc_corpus
from .sims_pretraining import labelled_subset

OUTPUT = ROOT / "output"
PBMC_MODEL = OUTPUT / "scgpt_pbmc"
FRACTIONS = (0.01, 0.1, 1.0)
KANG = (("kang2018_pbmc_ctrl_unlabeled.h5ad", "control"), ("kang2018_pbmc_stim_unlabeled.h5ad", "stimulated"))
GENE_GROUPS = {
    "HLA class I": ["HLA-A", "HLA-B", "HLA-C", "HLA-E"],
    "HLA class II": ["HLA-DRA", "HLA-DRB1", "HLA-DRB5", "HLA-DPA1", "HLA-DPB1", "HLA-DQA1", "HLA-DQB1"],
    "CD3": ["CD3D", "CD3E", "CD3G"],
}
METHOD_ORDER = ("PCA", "Harmony", "scVI", "SCGPT")
INTEGRATION_DATASETS = ("cellbench", "panc8", "kang")


# -- shared helpers -----------------------------------------------------------------------------
def _base():
    base = data_dir()
    if base is None:
        raise SystemExit("The shared data folder is needed (../shared/data or $SCATTN_DATA_DIR).")
    return base


def load_kang(n_per_condition: int | None, seed: int, conditions=("control", "stimulated"), *,
              min_cells: int = 0):
    """Kang 2018 counts, `n_per_condition` cells drawn at random per condition (`None`: all);
    ``obs["condition"]`` categorical (control, stimulated); cell names suffixed by condition.
    `min_cells` > 0 keeps the genes expressed in that many cells (``--quick`` only: seurat_v3's
    loess fails on a few hundred cells with many rare genes)."""
    import anndata as ad
    from scipy import sparse

    rng = np.random.default_rng(seed)
    parts = []
    for name, cond in KANG:
        if cond not in conditions:
            continue
        a = ad.read_h5ad(_base() / name)
        if n_per_condition is not None and n_per_condition < a.n_obs:
            a = a[np.sort(rng.choice(a.n_obs, n_per_condition, replace=False))].copy()
        a.obs = pd.DataFrame({"condition": cond}, index=a.obs_names.astype(str) + f"-{cond}")
        parts.append(a)
    kang = ad.concat(parts)
    kang.obs["condition"] = pd.Categorical(kang.obs["condition"], categories=list(conditions))
    kang.X = sparse.csr_matrix(kang.X, dtype=np.float32)
    if min_cells:
        kang = kang[:, np.asarray((kang.X > 0).sum(0)).ravel() >= min_cells].copy()
    return kang


def _lognorm(x, target: float = 1e4) -> np.ndarray:
    """log1p(counts per `target` over the given genes), dense."""
    from scipy import sparse

    x = x.toarray() if sparse.issparse(x) else np.asarray(x)
    x = x.astype(np.float64)
    total = x.sum(axis=1, keepdims=True)
    return np.log1p(x / np.maximum(total, 1e-12) * target)


def marker_scores(adata) -> pd.DataFrame:
    """Cells x PBMC types of ``markers_pbmc.csv``: :func:`scanpy.tl.score_genes` of each type's
    markers on log1p(counts per 10k over all genes of `adata`); types without a marker present
    are left out."""
    import scanpy as sc

    markers = pd.read_csv(ROOT / "markers_pbmc.csv")
    ln = adata.copy()
    ln.obs = ln.obs[[]]
    sc.pp.normalize_total(ln, target_sum=1e4)
    sc.pp.log1p(ln)
    scores = {}
    for cell_type, genes in markers.groupby("cell_type", sort=False)["gene"]:
        present = [g for g in dict.fromkeys(genes) if g in ln.var_names]
        if present:
            sc.tl.score_genes(ln, present, score_name="_score", random_state=0)
            scores[cell_type] = ln.obs["_score"].to_numpy()
    pin_threads()
    return pd.DataFrame(scores, index=adata.obs_names)


def _tokens(adata, max_length: int) -> np.ndarray:
    """Tokens per cell as SCGPT builds them: min(expressed genes, max_length - 1) + <cls>."""
    from scipy import sparse

    expressed = np.asarray((sparse.csr_matrix(adata.X) > 0).sum(axis=1)).ravel()
    return np.minimum(expressed, max_length - 1) + 1


def _pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """For a markdown table: counts as integers, missing values blank."""
    out = df.astype(object)
    for col in df.columns:
        if col in ("epochs", "n_cells", "n_genes", "pairs", "scgpt_pretrain_epochs"):
            out[col] = [str(int(v)) if pd.notna(v) else "" for v in df[col]]
    return out.where(df.notna(), "")


def _write_md(path: Path, text: str) -> None:
    path.write_text(text)
    print(f"wrote {path}", flush=True)


# -- 1. integration -----------------------------------------------------------------------------
def kang_integration_task(n_per_condition: int, seed: int, *, min_cells: int = 0):
    """Kang 2018, control and stimulated as the two batches, labels from marker scores."""
    from .._integration import IntegrationTask, _hvg

    a = load_kang(n_per_condition, seed, min_cells=min_cells)
    a.obs["batch"] = a.obs["condition"].astype(str)
    a.obs["cell_type"] = marker_scores(a).idxmax(axis=1).to_numpy()
    a = _hvg(a, "batch")
    a.obs["cell_type"] = a.obs["cell_type"].astype(str).astype("category")
    a.layers["counts"] = a.X.copy()
    pin_threads()
    return IntegrationTask("kang", a, "batch",
                           f"Kang 2018 control vs IFN-beta stimulated as batches, {n_per_condition} cells "
                           "each; labels = argmax of marker scores (markers_pbmc.csv), not corrected for the "
                           "stimulation (CD14, a monocyte marker, falls in stimulated monocytes), so labels "
                           "partly follow the condition: see the counts per condition (control / stimulated)")


def harmony_latent(task, n_comps: int, seed: int) -> np.ndarray:
    """Harmony (harmonypy) on the `n_comps`-component PCA of :func:`pca_latent`."""
    import os

    import harmonypy

    from .._integration import pca_latent

    pca = pca_latent(task, n_comps=n_comps)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    ho = harmonypy.run_harmony(pca, task.adata.obs[[task.batch_key]].astype(str), task.batch_key,
                               random_state=seed, verbose=False, ncores=threads)
    z = np.asarray(ho.Z_corr, dtype=np.float32)
    pin_threads()
    return z if z.shape[0] == task.adata.n_obs else z.T  # harmonypy gives dims x cells


def fit_scgpt_integration(task, epochs: int | None, seed: int, pretrain_epochs: int = 0
                          ) -> tuple[np.ndarray, dict]:
    """SCGPT with its default integration training (GEP, GEPC, ECS, DAR with batches), from
    scratch or after `pretrain_epochs` of generative pretraining on the same cells."""
    import scattn as sa

    from .._measure import measure

    _quiet(seed)
    a = task.adata.copy()
    sa.model.SCGPT.setup_anndata(a, batch_key=task.batch_key)
    model = sa.model.SCGPT(a)

    def fit():
        if pretrain_epochs:
            model.pretrain(max_epochs=pretrain_epochs, accelerator="cpu")
        model.train(max_epochs=epochs, accelerator="cpu")

    m = measure(fit)
    latent = model.get_latent_representation()
    n_epochs = len(model.history["train_loss"])
    # training tokens (the 90% of cells train() trains on) per second of train(), validation included
    tokens = float(_tokens(a, model.module.max_length).sum()) * 0.9 * n_epochs
    return latent, dict(train_s=m.seconds, peak_mb=m.peak_mb, epochs=n_epochs, train_tokens_per_s=tokens / m.seconds)


def integration(*, datasets, epochs: int | None, scvi_epochs: int, kang_cells: int, n_comps: int,
                pretrain_epochs: int = 0,
                seed: int, quick: bool, suffix: str) -> pd.DataFrame:
    from .._integration import (
        fit_vae,
        integration_scores,
        knn_accuracy,
        load_integration_tasks,
        pca_latent,
    )
    from .._measure import measure

    _quiet(seed)
    pin_threads()
    out = RESULTS / f"scgpt_integration{suffix}"
    rows: list[dict] = []
    notes: dict[str, str] = {}
    for name in datasets:
        if name == "kang":
            task = kang_integration_task(kang_cells, seed, min_cells=10 if quick else 0)
        else:
            task = load_integration_tasks([name])[0]
        if quick and task.adata.n_obs > 200:  # a tiny configuration: 200 random cells
            keep = np.sort(np.random.default_rng(seed).choice(task.adata.n_obs, 200, replace=False))
            task.adata = task.adata[keep].copy()
        a = task.adata
        labels = a.obs["cell_type"].astype(str).to_numpy()
        notes[name] = (f"{task.note}; {a.n_obs} cells ({', '.join(f'{k} {v}' for k, v in a.obs['batch'].value_counts().items())}), "
                       f"{a.n_vars} genes; cell types: "
                       + ", ".join(f"{k} {v}" for k, v in a.obs["cell_type"].value_counts().items()))
        if name == "kang":
            tab = pd.crosstab(a.obs["cell_type"], a.obs["batch"])
            notes[name] += "; per condition: " + "; ".join(
                f"{ct} {' / '.join(str(int(v)) for v in r.to_numpy())}" for ct, r in tab.iterrows())
        print(f"== {name}: {notes[name]}", flush=True)
        latents, costs = {}, {}
        m = measure(lambda t=task: pca_latent(t, n_comps=n_comps))
        latents["PCA"], costs["PCA"] = m.value, dict(train_s=m.seconds, peak_mb=m.peak_mb)
        m = measure(lambda t=task: harmony_latent(t, n_comps, seed))
        latents["Harmony"], costs["Harmony"] = m.value, dict(train_s=m.seconds, peak_mb=m.peak_mb)
        print(f"{name} PCA {costs['PCA']['train_s']:.1f} s, Harmony {costs['Harmony']['train_s']:.1f} s", flush=True)
        every = np.arange(a.n_obs)
        fit = fit_vae("scVI", task, every, every, epochs=scvi_epochs, seed=seed)
        latents["scVI"] = fit.latent
        costs["scVI"] = dict(train_s=fit.seconds_per_epoch * fit.epochs, peak_mb=fit.peak_mb, epochs=fit.epochs)
        print(f"{name} scVI {costs['scVI']['train_s']:.1f} s ({fit.epochs} epochs)", flush=True)
        latents["SCGPT"], costs["SCGPT"] = fit_scgpt_integration(task, epochs, seed, pretrain_epochs)
        print(f"{name} SCGPT {costs['SCGPT']['train_s']:.1f} s ({costs['SCGPT']['epochs']} epochs)", flush=True)
        pin_threads()
        start = time.perf_counter()
        scores = integration_scores(task, latents, leiden=True)
        print(f"{name} scib-metrics {time.perf_counter() - start:.0f} s", flush=True)
        pin_threads()
        for method in METHOD_ORDER:
            row = dict(dataset=name, scgpt_pretrain_epochs=pretrain_epochs, method=method, n_cells=a.n_obs,
                       n_genes=a.n_vars)
            if scores is not None and method in scores.index:
                row.update({k: float(v) for k, v in scores.loc[method].items()})
            row["knn_acc"] = knn_accuracy(latents[method], labels, seed=seed)
            row.update(costs[method])
            row["note"] = notes[name]
            rows.append(row)
        # one runs file for every dataset and pretraining: this run's rows replace earlier ones
        table = upsert_runs(f"{out}_runs.csv", pd.DataFrame([r for r in rows if r["dataset"] == name]),
                            ("dataset", "scgpt_pretrain_epochs", "method"))
        _integration_md(table, out, epochs=epochs, scvi_epochs=scvi_epochs, n_comps=n_comps, seed=seed)
        plot_integration(task, latents, _integration_png(out, name, pretrain_epochs), seed=seed)
        print(table[table["dataset"] == name].to_string(index=False), flush=True)
    return pd.DataFrame(rows)


def _integration_png(out, name: str, pretrain_epochs) -> Path:
    return Path(f"{out}{'_pretrained' if pretrain_epochs else ''}_{name}.png")


def _integration_md(table: pd.DataFrame, out, **params) -> None:
    import scattn as sa

    lines = ["# SCGPT (preset cpu) integration beside scVI, Harmony and PCA\n\n",
             "Produced by `python -m benchmarks.studies.scgpt integration` (its docstring says what is "
             f"run); scattn {sa.__version__}; parameters: {params}. Metrics: scib-metrics `Benchmarker` "
             "(raw values, not min-max scaled; PCR comparison off; BRAS is scib-metrics 0.5's batch "
             "silhouette; Total = 0.6 bio + 0.4 batch), "
             "`train_tokens_per_s` (SCGPT) = tokens of its training cells x epochs / `train_s`; "
             "`knn_acc` = 15-NN accuracy of cell types on the embedding (5-fold CV); `train_s` = wall "
             "seconds of the fit, `peak_mb` = its peak memory above the start (MiB).\n"]
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    first = {d: i for i, d in enumerate(INTEGRATION_DATASETS)}
    for name in sorted(table["dataset"].unique(), key=lambda d: (first.get(d, len(first)), d)):
        sub = table[table["dataset"] == name]
        sub = sub.assign(_m=sub["method"].map(order)).sort_values(["scgpt_pretrain_epochs", "_m"], kind="stable")
        variants = sorted(sub["scgpt_pretrain_epochs"].unique())
        lines.append(f"\n## {name}\n\n{sub['note'].iloc[0]}")
        if len(variants) > 1 or variants[0]:
            lines.append("; `scgpt_pretrain_epochs` N > 0: SCGPT pretrained N epochs (generative, the same "
                         "cells, no label) before its integration fine-tuning (train_s includes both; the "
                         "other methods rerun beside it)")
        lines.append("\n\n")
        skip = ("dataset", "n_cells", "n_genes", "note", "_m") + (("scgpt_pretrain_epochs",) if len(variants) == 1 else ())
        cols = [c for c in sub.columns if c not in skip and sub[c].notna().any()]
        lines.append(markdown_table(_display(sub[cols])))
        for n in variants:
            lines.append(f"\n![UMAP{' (pretrained)' if n else ''}]({_integration_png(Path(str(out)).name, name, n)})\n")
    _write_md(Path(f"{out}.md"), "".join(lines))


def plot_integration(task, latents: dict, path: Path, *, seed: int) -> None:
    """UMAP of each embedding (rows), coloured by cell type and by batch (columns)."""
    import anndata as ad
    import scanpy as sc
    from matplotlib.lines import Line2D

    plt = _plt()
    obs = task.adata.obs[["cell_type", "batch"]].astype(str)
    columns = {"cell_type": "cell type", "batch": "batch"}
    palettes = {}
    for col in columns:
        levels = sorted(obs[col].unique())
        cmap = plt.get_cmap("Dark2" if col == "batch" else "tab10" if len(levels) <= 10 else "tab20")
        palettes[col] = {lev: cmap(i % cmap.N) for i, lev in enumerate(levels)}
    n = len(latents)
    fig, axes = plt.subplots(n + 1, 2, figsize=(7.2, 2.9 * n + 1.6),
                             gridspec_kw={"height_ratios": [1] * n + [0.55]})
    order = np.random.default_rng(seed).permutation(len(obs))  # no batch drawn on top of the other
    for i, (method, z) in enumerate(latents.items()):
        a = ad.AnnData(obs=obs.copy())
        a.obsm["z"] = np.asarray(z, dtype=np.float32)
        sc.pp.neighbors(a, use_rep="z", n_neighbors=15, random_state=seed)
        sc.tl.umap(a, random_state=seed)
        xy = a.obsm["X_umap"][order]
        for j, col in enumerate(columns):
            ax = axes[i, j]
            colors = [palettes[col][v] for v in obs[col].to_numpy()[order]]
            ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=4 if len(obs) > 1000 else 8, linewidths=0, rasterized=True)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"by {columns[col]}", fontsize=10)
            if j == 0:
                ax.set_ylabel(method, fontsize=11, fontweight="bold")
    pin_threads()
    for j, col in enumerate(columns):
        ax = axes[n, j]
        ax.axis("off")
        handles = [Line2D([], [], marker="o", ls="", color=c, markersize=6, label=lev)
                   for lev, c in palettes[col].items()]
        ax.legend(handles=handles, loc="upper center", ncol=2 if len(handles) > 4 else 1, fontsize=7.5,
                  frameon=False, title=columns[col], title_fontsize=8.5, handletextpad=0.2, columnspacing=0.8)
    fig.suptitle(f"{task.name}: UMAP of each embedding", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


# -- 2. response --------------------------------------------------------------------------------
def kang_populations(data, *, n_pcs: int, n_ifn: int, seed: int, k: int = 15, resolution: float = 0.5):
    """Leiden populations of the control cells on the HVGs minus the `n_ifn` genes of largest
    |mean log fold change|; stimulated cells by majority vote of their `k` nearest control cells
    in the control PCA. Returns (population codes, lognorm matrix, lfc per gene)."""
    import anndata as ad
    import scanpy as sc
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier

    ln = _lognorm(data.X)
    ctrl = (data.obs["condition"] == "control").to_numpy()
    lfc = ln[~ctrl].mean(0) - ln[ctrl].mean(0)
    identity = np.argsort(-np.abs(lfc))[n_ifn:]  # the genes outside the interferon response
    x = ln[:, np.sort(identity)]
    mu, sd = x[ctrl].mean(0), x[ctrl].std(0)
    sd[sd == 0] = 1
    x = np.clip((x - mu) / sd, -10, 10)
    pca = PCA(n_pcs, random_state=seed).fit(x[ctrl])
    z = pca.transform(x)
    a = ad.AnnData(obs=pd.DataFrame(index=data.obs_names[ctrl]))
    a.obsm["X_pca"] = z[ctrl]
    sc.pp.neighbors(a, use_rep="X_pca", n_neighbors=k, random_state=seed)
    sc.tl.leiden(a, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
    pin_threads()
    pops = np.empty(data.n_obs, dtype=int)
    pops[ctrl] = a.obs["leiden"].astype(int).to_numpy()
    pops[~ctrl] = KNeighborsClassifier(k).fit(z[ctrl], pops[ctrl]).predict(z[~ctrl])
    return pops, ln, lfc


def response(*, n_cells: int, n_genes: int, populations, epochs: int, min_cells: int, n_top: int,
             seed: int, quick: bool, suffix: str) -> pd.DataFrame:
    import scattn as sa

    from .._integration import _hvg
    from .._measure import measure

    _quiet(seed)
    pin_threads()
    out = RESULTS / f"scgpt_response{suffix}"
    data = load_kang(n_cells, seed, min_cells=10 if quick else 0)
    scores = marker_scores(data)
    if "CD14" not in data.var_names:
        raise SystemExit("CD14 is not among the Kang genes kept; pass --populations explicitly.")
    cd14 = np.log1p(data[:, "CD14"].X.toarray().ravel() / np.asarray(data.X.sum(1)).ravel() * 1e4)
    data = _hvg(data, None, n_top=n_genes)
    pin_threads()
    n_ifn = 50 if quick else 200
    pops, ln, lfc = kang_populations(data, n_pcs=30, n_ifn=n_ifn, seed=seed)
    ctrl = (data.obs["condition"] == "control").to_numpy()
    ids = sorted(set(pops))
    info = pd.DataFrame({
        "population": ids,
        "type": [scores[ctrl & (pops == p)].mean().idxmax() if (ctrl & (pops == p)).any() else "" for p in ids],
        "n_control": [int((ctrl & (pops == p)).sum()) for p in ids],
        "n_stimulated": [int((~ctrl & (pops == p)).sum()) for p in ids],
        "mean_CD14_control": [float(cd14[ctrl & (pops == p)].mean()) if (ctrl & (pops == p)).any() else np.nan
                              for p in ids],
    })
    info["enough"] = (info["n_control"] >= min_cells) & (info["n_stimulated"] >= min_cells)
    print(info.to_string(index=False), flush=True)
    if populations in (None, ["monocytes"]):
        held = [int(info.loc[info["mean_CD14_control"].idxmax(), "population"])]
    elif populations == ["all"]:
        held = info.loc[info["enough"], "population"].astype(int).tolist()
    else:
        held = [int(p) for p in populations]
    genes = data.var_names.astype(str)
    mean = {(p, c): ln[(pops == p) & (ctrl if c == "control" else ~ctrl)].mean(0)
            for p in ids for c in ("control", "stimulated")
            if ((pops == p) & (ctrl if c == "control" else ~ctrl)).any()}
    rows = []
    for p in held:
        name = f"P{p} ({info.set_index('population').loc[p, 'type']})"
        in_p = pops == p
        train = data[ctrl | ~in_p].copy()
        ctrl_p = data[ctrl & in_p].copy()
        _quiet(seed)
        sa.model.SCGPT.setup_anndata(train, condition_key="condition")
        model = sa.model.SCGPT(train)
        m = measure(lambda mod=model: mod.train(tasks=("gep", "gepc"), max_epochs=epochs, accelerator="cpu"))
        n_epochs = len(model.history["train_loss"])
        order = pd.Index(genes).get_indexer(pd.Index(model.var_names_).astype(str))
        assert (order >= 0).all()
        pred_stim = np.zeros((ctrl_p.n_obs, len(genes)))
        pred_ctrl = np.zeros_like(pred_stim)
        pred_stim[:, order] = model.predict_response(ctrl_p, condition="stimulated")
        pred_ctrl[:, order] = model.predict_response(ctrl_p, condition="control")
        pin_threads()
        obs_ctrl, obs_stim = mean[(p, "control")], mean[(p, "stimulated")]
        observed = obs_stim - obs_ctrl
        others = [q for q in ids if q != p and info.set_index("population").loc[q, "enough"]]
        additive = np.mean([mean[(q, "stimulated")] - mean[(q, "control")] for q in others], axis=0) \
            if others else np.zeros_like(observed)
        top = np.argsort(-np.abs(observed))[:n_top]
        preds = {  # method -> (predicted change, predicted stimulated pseudo-bulk)
            "scGPT (delta)": (pred_stim.mean(0) - pred_ctrl.mean(0), None),
            "scGPT (decoded)": (pred_stim.mean(0) - obs_ctrl, pred_stim.mean(0)),
            "additive (other populations)": (additive, None),
            "no change": (np.zeros_like(observed), None),
        }
        base = dict(population=p, name=name, n_control=int(ctrl_p.n_obs), n_stimulated=int((~ctrl & in_p).sum()),
                    n_train=train.n_obs, n_genes=len(genes), epochs=n_epochs, train_s=m.seconds, peak_mb=m.peak_mb,
                    additive_from=len(others), top_genes=",".join(genes[top]))
        for method, (delta, stim) in preds.items():
            stim = obs_ctrl + delta if stim is None else stim
            row = dict(base, method=method,
                       r_delta_all=_pearson(delta, observed), r_delta_top=_pearson(delta[top], observed[top]),
                       mse_delta_all=float(np.mean((delta - observed) ** 2)),
                       mse_delta_top=float(np.mean((delta[top] - observed[top]) ** 2)),
                       r_stim_all=_pearson(stim, obs_stim), r_stim_top=_pearson(stim[top], obs_stim[top]),
                       r_ctrl_decoded=_pearson(pred_ctrl.mean(0), obs_ctrl) if method.startswith("scGPT") else np.nan)
            rows.append(row)
            print(f"{name} {method}: r(delta) all {row['r_delta_all']:.3f}, top {n_top} {row['r_delta_top']:.3f}; "
                  f"r(stim) all {row['r_stim_all']:.3f}", flush=True)
        panel = dict(name=name, genes=genes, observed=observed, top=top,
                     preds={k: preds[k][0] for k in ("scGPT (delta)", "additive (other populations)")})
        # one runs file for every held-out population: this population's rows replace earlier ones
        table = upsert_runs(f"{out}_runs.csv", pd.DataFrame([r for r in rows if r["population"] == p]),
                            ("population", "method"))
        _response_md(table, info, out, n_top=n_top, epochs=epochs, n_cells=n_cells, seed=seed,
                     n_genes=len(genes), min_cells=min_cells, n_ifn=n_ifn)
        plot_response([panel], Path(f"{out}_P{p}.png"), n_top=n_top)
    return pd.DataFrame(rows)


def _response_md(table, info, out, **params) -> None:
    import scattn as sa

    cols = ["name", "method", "r_delta_all", "r_delta_top", "mse_delta_all", "mse_delta_top", "r_stim_all",
            "r_stim_top", "r_ctrl_decoded"]
    table = table.sort_values("population", kind="stable")
    first = table.drop_duplicates("population")
    text = ("# SCGPT response prediction: Kang 2018, IFN-beta stimulation of a held-out population\n\n"
            "Produced by `python -m benchmarks.studies.scgpt response` (its docstring has the full protocol); "
            f"scattn {sa.__version__}; parameters: {params}.\n\n"
            "Populations: Leiden (resolution 0.5) of the control cells on a 30-PC PCA of the HVGs minus the "
            f"{params['n_ifn']} genes of largest |mean log fold change| stimulated vs control (the interferon response); "
            "stimulated cells take the majority population of their 15 nearest control cells in that PCA. "
            "`type`: the marker type (markers_pbmc.csv) with the highest mean score among a population's "
            "control cells (descriptive only).\n\n" + markdown_table(info) +
            "\nFor each held-out population P, SCGPT (GEP + GEPC, condition tokens) trains from scratch on "
            "all control cells + stimulated cells outside P, then decodes P's control cells as stimulated "
            "and as control. Expression: log1p(counts per 10k over the model genes). Change = stimulated "
            "pseudo-bulk minus control pseudo-bulk of P. `scGPT (delta)`: decoded-as-stimulated minus "
            "decoded-as-control; `scGPT (decoded)`: decoded-as-stimulated minus P's observed control mean "
            "(its stimulated prediction is the decoded mean itself); `additive`: the unweighted mean of "
            "the observed change of the other populations with enough cells; `no change`: 0 (a constant: "
            "Pearson r of changes undefined, NaN). `_top`: P's "
            f"{params['n_top']} genes of largest observed |change|, chosen with the held-out truth (the "
            "standard protocol of scGen/GEARS). `r_stim_*`: Pearson r of predicted vs observed stimulated "
            "pseudo-bulk (observed control mean + predicted change, except `scGPT (decoded)`); over all "
            "genes it is dominated by each gene's baseline level. `r_ctrl_decoded`: decoded-as-control "
            "vs observed control mean of P.\n\n" + markdown_table(table[cols]) +
            "\nTraining: " + "; ".join(f"{r['name']}: {r['n_train']} cells, {r['epochs']} epochs, "
                                       f"{r['train_s']:.0f} s, top genes {r['top_genes']}"
                                       for _, r in first.iterrows())
            + "\n\n" + "".join(f"![response {r['name']}]({Path(str(out)).name}_P{r['population']}.png)\n"
                               for _, r in first.iterrows()))
    _write_md(Path(f"{out}.md"), text)


def _label_points(ax, xs, ys, names, *, fontsize: float = 6.5, color: str = "#7b1d12") -> None:
    """Name points with labels pushed apart until none overlap (a small repel, no extra
    dependency), each joined to its point by a thin line. Set the axis limits first."""
    bbox = ax.get_window_extent()
    dpi_scale = ax.figure.dpi / 72
    width_pt, height_pt = bbox.width / dpi_scale, bbox.height / dpi_scale
    pts = ax.transAxes.inverted().transform(ax.transData.transform(np.c_[xs, ys]))
    w = np.array([0.6 * fontsize * len(n) / width_pt for n in names])
    h = 1.25 * fontsize / height_pt
    pos = pts + np.array([0.015, 0.0])
    for _ in range(500):
        moved = False
        for i in range(len(pos)):
            for j in range(i + 1, len(pos)):
                dy = pos[j, 1] - pos[i, 1]
                if pos[i, 0] < pos[j, 0] + w[j] and pos[j, 0] < pos[i, 0] + w[i] and abs(dy) < h:
                    step = (h - abs(dy)) / 2 + 1e-3
                    sign = 1.0 if dy > 0 or (dy == 0 and j > i) else -1.0
                    pos[j, 1] += sign * step
                    pos[i, 1] -= sign * step
                    moved = True
        if not moved:
            break
    pos[:, 0] = np.clip(pos[:, 0], 0.01, 0.99 - w)
    pos[:, 1] = np.clip(pos[:, 1], 0.02, 0.98)
    for (x, y), (tx, ty), name in zip(np.c_[xs, ys], pos, names, strict=True):
        ax.annotate(name, (x, y), xytext=(tx, ty), textcoords="axes fraction", fontsize=fontsize, color=color,
                    ha="left", va="center", arrowprops=dict(arrowstyle="-", lw=0.4, color=color, alpha=0.6))


def plot_response(panels: list[dict], path: Path, *, n_top: int) -> None:
    """Observed vs predicted change per gene, scGPT and additive side by side, one row per
    held-out population; the top changed genes in red, named."""
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 4.8 * len(panels)), squeeze=False)
    for i, panel in enumerate(panels):
        obs, top = panel["observed"], panel["top"]
        for j, (method, pred) in enumerate(panel["preds"].items()):
            ax = axes[i, j]
            rest = np.setdiff1d(np.arange(len(obs)), top)
            ax.scatter(obs[rest], pred[rest], s=5, color="#9a9a9a", alpha=0.6, linewidths=0, label="other genes")
            ax.scatter(obs[top], pred[top], s=18, color="#c0392b", linewidths=0, label=f"top {n_top} observed")
            lo = min(obs.min(), pred.min())
            hi = max(obs.max(), pred.max())
            pad = 0.05 * (hi - lo)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.7, ls="--")
            ax.axhline(0, color="k", lw=0.4)
            ax.axvline(0, color="k", lw=0.4)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            _label_points(ax, obs[top], pred[top], [panel["genes"][g] for g in top])
            ax.set_title(f"{panel['name']}: {method}\nr all {_pearson(pred, obs):.2f}, "
                         f"top {n_top} {_pearson(pred[top], obs[top]):.2f}", fontsize=10)
            ax.set_xlabel("observed change (log1p CP10k, stimulated - control)")
            ax.set_ylabel("predicted change")
            ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


# -- 3. programs --------------------------------------------------------------------------------
def programs(*, n_cells: int, n_genes: int, epochs: int, resolutions, seed: int, quick: bool, suffix: str,
             from_saved: bool) -> pd.DataFrame:
    import scanpy as sc

    import scattn as sa

    _quiet(seed)
    pin_threads()
    out = RESULTS / f"scgpt_programs{suffix}"
    model_dir = PBMC_MODEL.with_name(PBMC_MODEL.name + suffix)
    corpus = pbmc_corpus()
    rng = np.random.default_rng(seed)
    if n_cells < corpus.n_obs:
        corpus = corpus[np.sort(rng.choice(corpus.n_obs, n_cells, replace=False))].copy()
    sc.pp.filter_genes(corpus, min_cells=3)
    hv = corpus.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(hv, n_top_genes=n_genes, flavor="seurat_v3")
    pin_threads()
    listed = [g for genes in GENE_GROUPS.values() for g in genes]
    present = [g for g in listed if g in corpus.var_names]
    hvgs = hv.var_names[hv.var["highly_variable"]]
    keep = corpus.var_names.isin(hvgs) | corpus.var_names.isin(present)
    corpus = corpus[:, keep].copy()
    corpus.obs = corpus.obs[[c for c in corpus.obs.columns if c == "source"]]
    print(f"corpus {corpus.n_obs} cells x {corpus.n_vars} genes ({len(present)} of {len(listed)} listed genes "
          f"present; {sum(g not in hvgs for g in present)} of them added beyond the HVGs)", flush=True)
    sa.model.SCGPT.setup_anndata(corpus)
    if from_saved:
        model = sa.model.SCGPT.load(str(model_dir), adata=corpus)
    else:
        model = sa.model.SCGPT(corpus)
        start = time.perf_counter()
        model.pretrain(max_epochs=epochs, accelerator="cpu")
        seconds = time.perf_counter() - start
        model.save(str(model_dir), overwrite=True)
        _pretraining_csv(model, corpus, seconds, epochs, suffix)
    # gene programs at each resolution
    table = pd.DataFrame({"gene": present,
                          "group": [next(k for k, v in GENE_GROUPS.items() if g in v) for g in present],
                          "highly_variable": [g in hvgs for g in present]})
    checks = []
    plot_res = 1.0 if 1.0 in resolutions else resolutions[0]
    for res in resolutions:
        key = "gene_programs" if res == plot_res else f"gene_programs_r{res:g}"
        sa.tl.gene_programs(corpus, model, resolution=res, random_state=seed, key_added=key)
        pin_threads()
        progs = corpus.var[key]
        sizes = progs.value_counts()
        col = f"program_r{res:g}"
        table[col] = [str(progs[g]) if pd.notna(progs[g]) else "none" for g in present]
        table[f"size_r{res:g}"] = [int(sizes[progs[g]]) if pd.notna(progs[g]) else 0 for g in present]
        group_programs = {k: set(table.loc[table["group"] == k, col]) for k in GENE_GROUPS}
        n_programs = int(corpus.uns[key]["params"]["n_programs"])

        def together(found: set, n: int = n_programs) -> str:
            if n <= 1:
                return "trivially (one program)"
            return "yes" if len(found) == 1 and "none" not in found else "no"

        checks.append(dict(
            resolution=res, n_programs=n_programs,
            **{f"{k} together": together(v) for k, v in group_programs.items()},
            **{f"{k} programs": "; ".join(sorted(v, key=lambda x: (len(x), x))) for k, v in group_programs.items()},
            class_I_apart_from_II="yes" if not (group_programs["HLA class I"] & group_programs["HLA class II"])
            else "no"))
        print(checks[-1], flush=True)
    # cosine similarities of the embeddings
    emb = model.get_gene_embeddings()
    emb.index = emb.index.astype(str)
    unit = emb.to_numpy(float)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    unit = pd.DataFrame(unit, index=emb.index)

    def mean_cos(a, b=None) -> tuple[float, int]:
        a = [g for g in a if g in unit.index]
        if b is None:
            sims = unit.loc[a].to_numpy() @ unit.loc[a].to_numpy().T
            vals = sims[np.triu_indices(len(a), 1)]
        else:
            b = [g for g in b if g in unit.index]
            vals = (unit.loc[a].to_numpy() @ unit.loc[b].to_numpy().T).ravel()
        return (float(vals.mean()) if len(vals) else np.nan), int(len(vals))

    sims = []
    for label, args in (("within HLA class I", (GENE_GROUPS["HLA class I"],)),
                        ("within HLA class II", (GENE_GROUPS["HLA class II"],)),
                        ("HLA class I vs class II", (GENE_GROUPS["HLA class I"], GENE_GROUPS["HLA class II"])),
                        ("within CD3", (GENE_GROUPS["CD3"],))):
        value, pairs = mean_cos(*args)
        sims.append(dict(comparison=label, mean_cosine=value, pairs=pairs))
    pool = np.array([g for g in hvgs if g in unit.index and g not in listed])
    i, j = rng.integers(0, len(pool), (2, 5000))
    ok = i != j
    null = np.sum(unit.loc[pool[i[ok]]].to_numpy() * unit.loc[pool[j[ok]]].to_numpy(), axis=1)
    sims.append(dict(comparison="null: random pairs of other HVGs", mean_cosine=float(null.mean()),
                     pairs=int(ok.sum()), sd=float(null.std()), p95=float(np.quantile(null, 0.95)),
                     p99=float(np.quantile(null, 0.99))))
    for row in sims[:-1]:
        row["percentile_in_null"] = float((null < row["mean_cosine"]).mean() * 100)
    sims = pd.DataFrame(sims)
    checks = pd.DataFrame(checks)
    table.to_csv(f"{out}.csv", index=False)
    sims.to_csv(f"{out}_similarity.csv", index=False)
    checks.to_csv(f"{out}_checks.csv", index=False)
    print(table.to_string(index=False), sims.to_string(index=False), checks.to_string(index=False), sep="\n\n")
    fig = sa.pl.gene_programs(corpus, model, genes=present, return_fig=True, show=False)
    fig.savefig(f"{out}.png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    pin_threads()
    text = ("# SCGPT gene programs from a model pretrained on human PBMCs\n\n"
            "Produced by `python -m benchmarks.studies.scgpt programs` (its docstring has the protocol); "
            f"corpus: {corpus.n_obs} cells (Kang 2018 control + stimulated + pbmc3k, random), "
            f"{corpus.n_vars} genes (2,000 HVGs + listed genes present), pretraining {epochs} epochs "
            f"(`scgpt_pretraining{suffix}.csv`). Programs: `sa.tl.gene_programs` (Leiden on the 15-NN "
            "cosine graph of the gene embeddings; clusters of >= 3 genes) on every model gene.\n\n"
            "## Programs of the listed genes\n\n" + markdown_table(_display(table)) +
            "\n## Checks per resolution\n\n" + markdown_table(checks) +
            "\n## Cosine similarity of the gene embeddings\n\n`percentile_in_null`: share of random pairs "
            "with a lower cosine.\n\n" + markdown_table(_display(sims)) +
            f"\n![programs]({Path(str(out)).name}.png)\n")
    _write_md(Path(f"{out}.md"), text)
    return table


def _pretraining_csv(model, corpus, seconds: float, epochs: int, suffix: str) -> None:
    hist = model.pretrain_history_ or {}
    tokens = _tokens(corpus, model.module.max_length)
    per_epoch = float(tokens.sum()) * 0.95  # pretrain's default train_size
    n_epochs = len(hist["train_loss"]) if "train_loss" in hist else epochs
    rows = []
    for e in range(n_epochs):
        row = dict(epoch=e + 1, cells=corpus.n_obs, genes=corpus.n_vars)
        for key, frame in hist.items():
            if len(frame) > e and not key.startswith(("elbo", "kl_", "reconstruction")):
                row[key] = float(frame.iloc[e, 0])
        rows.append(row)
    table = pd.DataFrame(rows)
    table["seconds_total"] = seconds
    table["train_tokens_per_epoch"] = per_epoch
    table["tokens_per_s"] = per_epoch * n_epochs / seconds
    write_results(table, RESULTS / f"scgpt_pretraining{suffix}",
                  f"SCGPT (preset cpu) generative pretraining (GEP + GEPC) on {corpus.n_obs} human PBMCs, "
                  f"{corpus.n_vars} genes, {n_epochs} epochs, {seconds:.0f} s, "
                  f"{per_epoch * n_epochs / seconds:.0f} training tokens/s (validation passes in the seconds)")


# -- 4. throughput ------------------------------------------------------------------------------
def attention_mask_cost(*, b: int = 32, heads: int = 4, t: int = 512, dim: int = 32, repeats: int = 5,
                        seed: int = 0) -> list[dict]:
    """Seconds per attention call (32 cells x 4 heads x 512 tokens x 32 dims, half the tokens
    unknown): the fused kernel with the padding mask, with scGPT's generative mask (one boolean
    (B, 1, T, T) mask), and the explicit softmax with the same mask; the two generative paths
    agree to 1e-5."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, heads, t, dim, generator=gen) for _ in range(3))
    lengths = torch.randint(t // 2, t + 1, (b,), generator=gen)
    pad = (torch.arange(t)[None] < lengths[:, None])[:, None, None, :]
    unknown = torch.rand(b, t, generator=gen) < 0.5
    generative = pad & (~unknown[:, None, None, :] | torch.eye(t, dtype=torch.bool))

    def explicit():
        scores = (q @ k.transpose(-1, -2)) / dim**0.5
        return scores.masked_fill(~generative, float("-inf")).softmax(-1) @ v

    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=generative)
    if not torch.allclose(fused, explicit(), atol=1e-5):
        raise RuntimeError("The fused and explicit generative attention disagree.")
    rows = []
    for phase, fn in (("attention call, padding mask (fused kernel)",
                       lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=pad)),
                      ("attention call, generative mask (fused kernel)",
                       lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=generative)),
                      ("attention call, generative mask (explicit softmax)", explicit)):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        rows.append(dict(phase=phase, batch_size=b, tokens=b * t, seconds=(time.perf_counter() - start) / repeats))
        print(rows[-1], flush=True)
    return rows


def throughput(*, n_cells: int, n_genes: int, seed: int, suffix: str) -> pd.DataFrame:
    import scattn as sa

    from .._integration import _hvg
    from .._measure import measure

    _quiet(seed)
    pin_threads()
    data = _hvg(load_kang(n_cells, seed, conditions=("control",)), None, n_top=n_genes)
    data.obs = data.obs[[]]
    pin_threads()
    sa.model.SCGPT.setup_anndata(data)
    model = sa.model.SCGPT(data)
    max_length = model.module.max_length
    tokens = int(_tokens(data, max_length).sum())
    once = dict(max_epochs=1, train_size=1.0, accelerator="cpu", limit_val_batches=0)  # no validation set
    rows = []

    def record(phase, m, batch_size):
        rows.append(dict(phase=phase, cells=data.n_obs, genes=data.n_vars, tokens=tokens, batch_size=batch_size,
                         seconds=m.seconds, cells_per_s=data.n_obs / m.seconds, tokens_per_s=tokens / m.seconds,
                         peak_mb=m.peak_mb))
        print(rows[-1], flush=True)

    m = measure(lambda: model.pretrain(**once, early_stopping=False))
    record("pretraining, GEP + GEPC (1 epoch)", m, 32)
    m = measure(lambda: model.train(**once, tasks=("gep", "gepc", "ecs"), early_stopping=False))
    record("fine-tuning, GEP + GEPC + ECS (1 epoch)", m, 32)
    from scattn import settings

    m = measure(lambda: model.get_latent_representation(data))
    record("inference, get_latent_representation", m, settings.batch_size)
    rows.extend(attention_mask_cost())
    table = pd.DataFrame(rows)
    write_results(table, RESULTS / f"scgpt_throughput{suffix}",
                  f"SCGPT (preset cpu: 4 layers, width 128, {max_length} tokens) throughput on {data.n_obs} Kang "
                  f"2018 control cells, {data.n_vars} HVGs, {tokens} tokens (min(expressed genes, "
                  f"{max_length - 1}) + <cls> per cell), one epoch per training phase on every cell; seconds "
                  "of the whole call (set-up included); peak_mb above the start. Produced by `python -m "
                  f"benchmarks.studies.scgpt throughput`; scattn {sa.__version__}")
    return table


# -- 5. annotation ------------------------------------------------------------------------------
def _budget(n_cells: int, cap: int, *, train_size: float = 0.9, batch_size: int = 32, steps: int = 300) -> int:
    """SCGPT's default budget with `cap` epochs instead of 30: max(cap epochs, `steps` steps)."""
    per_epoch = max(1, math.ceil(round(n_cells * train_size) / batch_size))
    return max(cap, math.ceil(steps / per_epoch))


def own_cells_scgpt(task, seed: int, epochs: int):
    """An SCGPT pretrained (GEP + GEPC) on every cell of `task`, labels never read."""
    import scattn as sa

    _quiet(seed)
    cells = task.adata.copy()
    cells.obs = cells.obs[[]]
    sa.model.SCGPT.setup_anndata(cells, expression=task.expression)
    model = sa.model.SCGPT(cells)
    model.pretrain(max_epochs=epochs, accelerator="cpu")
    return model


def _scgpt_classifier(train, test, task, seed, source, max_epochs) -> tuple[np.ndarray, int, float]:
    import scattn as sa

    _quiet(seed)
    sa.model.SCGPT.setup_anndata(train, labels_key=task.labels_key, expression=task.expression)
    model = sa.model.SCGPT(train) if source is None else sa.model.SCGPT.from_pretrained(source, train)
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, accelerator="cpu")
    seconds = time.perf_counter() - start
    pred = model.predict(test, inplace=False).prediction.astype(str).to_numpy()
    return pred, len(model.history["train_loss"]), seconds


def annotation(datasets, seeds, fractions, *, pretrain_epochs: int, max_epochs: int | None, suffix: str,
               quick: bool) -> pd.DataFrame:
    import scattn as sa

    rows: list[dict] = []
    out = RESULTS / f"scgpt_annotation{suffix}"
    for task in load_tasks(list(datasets)):
        start = time.perf_counter()
        source = own_cells_scgpt(task, 0, pretrain_epochs)
        source_note = (f"pretrained on its own {task.adata.n_obs} cells, no labels, {pretrain_epochs} epochs "
                       f"({time.perf_counter() - start:.0f} s)")
        print(f"{task.name}: {source_note}", flush=True)
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
                pin_threads()
                epochs = 1 if quick else _budget(train.n_obs, max_epochs) if max_epochs else None
                for name, src in (("SCGPT (scratch)", None), ("SCGPT (pretrained)", source)):
                    pred, n_epochs, seconds = _scgpt_classifier(train.copy(), test, task, seed, src, epochs)
                    rows.append(dict(base, method=name, epochs=n_epochs, train_s=seconds,
                                     note=source_note if src is not None else "", **_metrics(y, pred)))
                    print(f"{task.name} seed {seed} {fraction:.0%} {name}: macro F1 {rows[-1]['macro_f1']:.3f} "
                          f"({n_epochs} epochs, {seconds:.0f} s)", flush=True)
                pd.DataFrame(rows).to_csv(f"{out}_runs.csv", index=False)  # kept as it goes
    runs = pd.concat([pd.DataFrame(rows), _suite_rows(datasets, seeds)], ignore_index=True)
    runs.to_csv(f"{out}_runs.csv", index=False)
    return summarize_annotation([runs], out, f"seeds {list(seeds)}; fine-tuning cap {max_epochs} epochs "
                                f"(or 300 steps); scattn {sa.__version__}")


def summarize_annotation(runs: list[pd.DataFrame], out, note: str) -> pd.DataFrame:
    """Mean (and spread) per dataset, label fraction and method, written to `out`.csv/.md (the
    Geneformer study's summary, for SCGPT)."""
    runs = pd.concat(runs, ignore_index=True)
    if "train_s" not in runs:
        runs["train_s"] = np.nan
    table = (runs.groupby(["dataset", "fraction", "method"], sort=False)
             .agg(macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"),
                  accuracy=("accuracy", "mean"), n_labelled=("n_labelled", "mean"),
                  seeds=("seed", "nunique"), train_s=("train_s", "mean"))
             .reset_index())
    write_results(table, out, "SCGPT (preset cpu) annotation, macro F1 (stratified 80/20 splits of `python -m "
                  "benchmarks`; the labelled fraction of the training cells trains, the held-out 20% is "
                  "predicted; `SCGPT (pretrained)` starts from a model pretrained on the dataset's own cells "
                  "without labels; rows marked `(suite)` are from benchmark_runs.csv, same splits, 100% "
                  f"labels); {note}")
    return table


# -- command line -------------------------------------------------------------------------------
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)

    def common(sp):
        sp.add_argument("--quick", action="store_true", help="tiny sizes, 1 epoch; writes *_quick files")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--suffix", default=None, help="appended to the result file names "
                        "(default: '' or '_quick' with --quick)")
        return sp

    pi = common(sub.add_parser("integration", help="SCGPT vs scVI, Harmony, PCA (scib-metrics)"))
    pi.add_argument("--datasets", nargs="+", default=None,
                    help="among cellbench, panc8, kang (default: all three; with --quick: kang)")
    pi.add_argument("--epochs", type=int, default=None, help="SCGPT max epochs (default: its own budget)")
    pi.add_argument("--scvi-epochs", type=int, default=100)
    pi.add_argument("--kang-cells", type=int, default=1000, help="cells per condition")
    pi.add_argument("--pca-comps", type=int, default=30)
    pi.add_argument("--pretrain-epochs", type=int, default=0,
                    help="SCGPT pretrained (generative, same cells) this many epochs before fine-tuning")
    pr = common(sub.add_parser("response", help="held-out population's IFN-beta response, Kang 2018"))
    pr.add_argument("--cells", type=int, default=1500, help="cells per condition")
    pr.add_argument("--genes", type=int, default=2000)
    pr.add_argument("--populations", nargs="+", default=None,
                    help="population IDs, 'all', or 'monocytes' (default: highest mean CD14)")
    pr.add_argument("--epochs", type=int, default=15)
    pr.add_argument("--min-cells", type=int, default=30)
    pr.add_argument("--top", type=int, default=20, help="top observed DE genes scored apart")
    pg = common(sub.add_parser("programs", help="gene programs of a PBMC-pretrained model"))
    pg.add_argument("--cells", type=int, default=6000)
    pg.add_argument("--genes", type=int, default=2000)
    pg.add_argument("--epochs", type=int, default=3)
    pg.add_argument("--resolutions", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    pg.add_argument("--from-saved", action="store_true", help="load the saved model instead of pretraining")
    pt = common(sub.add_parser("throughput", help="tokens/s and cells/s, cpu preset"))
    pt.add_argument("--cells", type=int, default=2000)
    pt.add_argument("--genes", type=int, default=2000)
    pa = common(sub.add_parser("annotation", help="from scratch vs pretrained at 1/10/100%% labels"))
    pa.add_argument("--datasets", nargs="+", default=["pbmc68k_reduced", "paul15"])
    pa.add_argument("--seeds", nargs="+", type=int, default=None, help="split seeds (default: --seed)")
    pa.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    pa.add_argument("--pretrain-epochs", type=int, default=5)
    pa.add_argument("--max-epochs", type=int, default=10,
                    help="fine-tuning cap: max(this many epochs, 300 steps); 0: SCGPT's own budget")
    prep = sub.add_parser("report", help="merge scgpt_annotation<suffix>_runs.csv files")
    prep.add_argument("suffixes", nargs="+")
    args = p.parse_args(argv)
    if args.step == "report":
        files = [RESULTS / f"scgpt_annotation{x}_runs.csv" for x in args.suffixes]
        summarize_annotation([pd.read_csv(f) for f in files], RESULTS / "scgpt_annotation",
                             f"merged from {', '.join(f.name for f in files)}")
        return
    suffix = args.suffix if args.suffix is not None else ("_quick" if args.quick else "")
    q = args.quick
    start = time.perf_counter()
    if args.step == "integration":
        datasets = args.datasets or (["kang"] if q else list(INTEGRATION_DATASETS))
        integration(datasets=datasets, epochs=1 if q else args.epochs, scvi_epochs=2 if q else args.scvi_epochs,
                    kang_cells=300 if q else args.kang_cells, n_comps=args.pca_comps, seed=args.seed, quick=q,
                    suffix=suffix, pretrain_epochs=args.pretrain_epochs)
    elif args.step == "response":
        response(n_cells=200 if q else args.cells, n_genes=500 if q else args.genes, populations=args.populations,
                 epochs=1 if q else args.epochs, min_cells=10 if q else args.min_cells, n_top=args.top,
                 seed=args.seed, quick=q, suffix=suffix)
    elif args.step == "programs":
        programs(n_cells=400 if q else args.cells, n_genes=300 if q else args.genes, epochs=1 if q else args.epochs,
                 resolutions=args.resolutions, seed=args.seed, quick=q, suffix=suffix, from_saved=args.from_saved)
    elif args.step == "throughput":
        throughput(n_cells=300 if q else args.cells, n_genes=300 if q else args.genes, seed=args.seed,
                   suffix=suffix)
    else:
        annotation(["pbmc68k_reduced"] if q else args.datasets, args.seeds or [args.seed],
                   [0.1] if q else args.fractions, pretrain_epochs=1 if q else args.pretrain_epochs,
                   max_epochs=args.max_epochs or None, suffix=suffix, quick=q)
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
