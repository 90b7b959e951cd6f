"""Reconstruction and integration: data, methods (scViT variants, scVI, PCA) and metrics.

Shared by the scViT study (``python -m benchmarks.studies.scvit``) and the integration task
family of ``python -m benchmarks``. Every counts dataset in ``../shared/data`` with labels or
batches: paul15 (no batches), CellBench CEL-seq2 + Drop-seq (two batches), the panc8
technologies holding integer counts (inDrop, Smart-seq2) as batches.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from ._common import data_dir

N_TOP_GENES = 2000
#: scViT variants of the ablation: name -> SCVIT arguments. "report" is the configuration the
#: report describes (convolutional stem, 16-gene patches, 4 heads, genes in a fixed order)
VARIANTS: dict[str, dict] = {
    "scViT": {},  # the defaults: linear patch stem, 64-gene patches, 2 heads, correlation order
    "report (conv stem, 16-gene patches, 4 heads, given order, cosine)": {
        "stem": "conv", "patch_size": 16, "n_heads": 4, "gene_order": "given",
        "train": {"cosine_annealing": True}},
    "conv stem": {"stem": "conv"},
    "no attention": {"n_heads": 0},
    "shared linear (ViT)": {"stem": "shared", "patchwise": False},
    "given order": {"gene_order": "given"},
    "random order": {"gene_order": "random"},
    "cosine annealing": {"train": {"cosine_annealing": True}},
    "scVI's encoder (dense)": {"encoder": "dense"},
    "scVI's decoder (dense)": {"decoder": "dense"},
}


@dataclass
class IntegrationTask:
    name: str
    adata: ad.AnnData  # counts in X, obs["cell_type"], obs["batch"] (one level without batches)
    batch_key: str | None
    note: str


def _hvg(adata: ad.AnnData, batch_key: str | None, n_top: int = N_TOP_GENES) -> ad.AnnData:
    import scanpy as sc

    sc.pp.filter_genes(adata, min_cells=3)
    if adata.n_vars <= n_top:
        return adata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat_v3", batch_key=batch_key)
    return adata[:, adata.var["highly_variable"]].copy()


def load_integration_tasks(names: list[str] | None = None) -> list[IntegrationTask]:
    """The counts datasets with labels or batches, 2,000 variable genes (seurat_v3, per batch)."""
    root = data_dir()
    if root is None:
        return []
    tasks = []
    want = set(names) if names else None

    def wanted(name):
        return want is None or name in want

    if wanted("paul15"):
        a = ad.read_h5ad(root / "paul15.h5ad")
        a.obs["batch"] = "paul15"
        tasks.append(IntegrationTask("paul15", _hvg(a, None), None, "MARS-seq, no batches"))
    if wanted("cellbench"):
        parts = {p: ad.read_h5ad(root / f"cellbench_3cl_{p}.h5ad") for p in ("celseq2", "dropseq")}
        a = ad.concat(parts, label="batch", join="inner", index_unique="-")
        tasks.append(IntegrationTask("cellbench", _hvg(a, "batch"), "batch",
                                     "CEL-seq2 and Drop-seq as batches"))
    if wanted("panc8"):
        a = ad.read_h5ad(root / "panc8_subset.h5ad")
        a = a[a.obs["tech"].isin(["indrop", "smartseq2"])].copy()  # the integer-count technologies
        a.obs["batch"] = a.obs["tech"].astype(str)
        keep = a.obs["cell_type"].value_counts()
        a = a[a.obs["cell_type"].isin(keep.index[keep >= 5])].copy()
        tasks.append(IntegrationTask("panc8", _hvg(a, "batch"), "batch",
                                     "inDrop and Smart-seq2 (integer counts) as batches"))
    for t in tasks:
        t.adata.obs["cell_type"] = t.adata.obs["cell_type"].astype(str).astype("category")
        t.adata.layers["counts"] = t.adata.X.copy()
    return tasks


@dataclass
class Fit:
    latent: np.ndarray  # all cells (train and held-out), posterior mean
    heldout_nll: float  # mean negative log-likelihood per held-out cell
    seconds_per_epoch: float
    peak_mb: float
    epochs: int


def fit_vae(method: str, task: IntegrationTask, train: np.ndarray, test: np.ndarray, *,
            epochs: int, seed: int, variant: dict | None = None) -> Fit:
    """Train scVI or an scViT variant on the `train` cells; held-out NLL on `test`."""
    import scvi
    import torch

    import scattn as sa

    from ._measure import measure

    tr = task.adata[train].copy()
    te = task.adata[test].copy()
    torch.manual_seed(seed)
    sa.settings.seed = seed
    common = dict(layer="counts", batch_key=task.batch_key)
    if method == "scVI":
        scvi.settings.seed = seed
        scvi.model.SCVI.setup_anndata(tr, **common)
        model = scvi.model.SCVI(tr)
        train_kwargs = {}
    else:
        sa.model.SCVIT.setup_anndata(tr, **common)
        variant = dict(variant or {})
        train_kwargs = variant.pop("train", {})
        model = sa.model.SCVIT(tr, **variant)
    m = measure(lambda: model.train(max_epochs=epochs, train_size=1.0, batch_size=128,
                                    enable_progress_bar=False, accelerator="cpu", **train_kwargs))
    n_epochs = len(model.history["elbo_train"]) if "elbo_train" in model.history else epochs
    full = task.adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latent = model.get_latent_representation(full)
        nll = float(model.get_reconstruction_error(te)["reconstruction_loss"])
    return Fit(np.asarray(latent), nll, m.seconds / max(n_epochs, 1), m.peak_mb, n_epochs)


def fit_scgpt(task: IntegrationTask, train: np.ndarray, *, epochs: int | None, seed: int) -> Fit:
    """SCGPT from scratch, fine-tuned for integration (its defaults: GEP, GEPC, ECS, and DAR
    with batches) on the `train` cells; the embedding of every cell. No likelihood: NaN."""
    import scattn as sa

    from ._measure import measure

    tr = task.adata[train].copy()
    tr.X = tr.layers["counts"]
    sa.settings.seed = seed
    sa.settings.progress_bar = False
    sa.model.SCGPT.setup_anndata(tr, layer="counts", batch_key=task.batch_key)
    model = sa.model.SCGPT(tr)
    m = measure(lambda: model.train(max_epochs=epochs, accelerator="cpu"))
    n_epochs = len(model.history["train_loss"])
    full = task.adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latent = model.get_latent_representation(full)
    return Fit(np.asarray(latent), np.nan, m.seconds / max(n_epochs, 1), m.peak_mb, n_epochs)


def evaluate_split(task: IntegrationTask, train: np.ndarray, test: np.ndarray,
                   methods: dict[str, dict | None], *, epochs: dict[str, int], seed: int,
                   ) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Fit each method on one split and score its latent.

    `methods`: name -> ``None`` for scVI and PCA (by name), else the scViT arguments
    (:data:`VARIANTS`); `epochs`: per method. Returns one row per method (``heldout_nll``,
    ``knn_acc``, ``mlp_acc``; the cost: ``s_per_epoch``, ``train_s``, ``peak_mb``, ``epochs``,
    and the ratios ``s_per_epoch_vs_scvi``, ``peak_mb_vs_scvi`` where scVI ran) and the latents.
    """
    from ._measure import measure

    labels = task.adata.obs["cell_type"].to_numpy()
    rows, latents = [], {}
    for method, variant in methods.items():
        row = {"method": method}
        if method == "PCA":
            m = measure(lambda: pca_latent(task))
            latent, row["heldout_nll"] = m.value, np.nan
            row.update(train_s=m.seconds, peak_mb=m.peak_mb)
        elif method == "SCGPT":
            fit = fit_scgpt(task, train, epochs=epochs.get(method), seed=seed)
            latent = fit.latent
            row.update(heldout_nll=np.nan, s_per_epoch=fit.seconds_per_epoch,
                       train_s=fit.seconds_per_epoch * fit.epochs, peak_mb=fit.peak_mb, epochs=fit.epochs)
        else:
            fit = fit_vae(method, task, train, test, epochs=epochs[method], seed=seed, variant=variant)
            latent = fit.latent
            row.update(heldout_nll=fit.heldout_nll, s_per_epoch=fit.seconds_per_epoch,
                       train_s=fit.seconds_per_epoch * fit.epochs, peak_mb=fit.peak_mb, epochs=fit.epochs)
        latents[method] = latent
        row["knn_acc"] = knn_accuracy(latent, labels, seed=seed)
        row["mlp_acc"] = mlp_accuracy(latent, labels, train, test, seed=seed)
        rows.append(row)
        print(row, flush=True)
    scvi_row = next((r for r in rows if r["method"] == "scVI"), None)
    for row in rows:
        for col in ("s_per_epoch", "peak_mb"):
            if scvi_row is not None and col in row and scvi_row.get(col):
                row[f"{col}_vs_scvi"] = row[col] / scvi_row[col]
    return rows, latents


def pca_latent(task: IntegrationTask, n_comps: int = 10) -> np.ndarray:
    """HVG + PCA: log-normalised, scaled, 10 components (the classical baseline)."""
    import scanpy as sc

    a = task.adata.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.scale(a, max_value=10)
    return sc.pp.pca(a, n_comps=n_comps, random_state=0, copy=True).obsm["X_pca"]


def knn_accuracy(latent: np.ndarray, labels, k: int = 15, folds: int = 5, seed: int = 0) -> float:
    """Mean accuracy of a k-nearest-neighbour classifier on the latent, stratified k-fold."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    y = np.asarray(labels)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes with fewer cells than folds
        return float(cross_val_score(KNeighborsClassifier(k), latent, y, cv=cv).mean())


def mlp_accuracy(latent: np.ndarray, labels, train: np.ndarray, test: np.ndarray, seed: int = 0) -> float:
    """The report's protocol: a small MLP on the latent, trained on `train`, scored on `test`."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    scaler = StandardScaler().fit(latent[train])
    clf = MLPClassifier((64,), max_iter=500, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(scaler.transform(latent[train]), y[train])
    return float((clf.predict(scaler.transform(latent[test])) == y[test]).mean())


def integration_scores(task: IntegrationTask, latents: dict[str, np.ndarray], *, leiden: bool = False
                       ) -> pd.DataFrame | None:
    """scib-metrics' bio conservation and batch correction of each latent (rows: methods).

    `leiden`: also scib-metrics' Leiden NMI and ARI (off by default since scib-metrics 0.5;
    Leiden at several resolutions per embedding, the best NMI/ARI kept). `None` without batches. Without scib-metrics: silhouette of labels and of batches
    (scanpy/scikit-learn), ARI and NMI of Leiden clusters, graph connectivity.
    """
    if task.batch_key is None:
        return None
    a = task.adata.copy()
    for name, z in latents.items():
        a.obsm[name] = np.asarray(z, dtype=np.float32)
    try:
        from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation
    except ImportError:
        return _fallback_scores(a, task.batch_key, list(latents))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm = Benchmarker(a, batch_key=task.batch_key, label_key="cell_type",
                         embedding_obsm_keys=list(latents),
                         bio_conservation_metrics=BioConservation(nmi_ari_cluster_labels_leiden=leiden),
                         batch_correction_metrics=BatchCorrection(pcr_comparison=False),
                         pre_integrated_embedding_obsm_key=list(latents)[0], n_jobs=1,
                         progress_bar=False)
        bm.benchmark()
        res = bm.get_results(min_max_scale=False)
    res = res.drop(index="Metric Type", errors="ignore").astype(float)
    res.index.name = "method"
    return res



def _fallback_scores(a: ad.AnnData, batch_key: str, keys: list[str]) -> pd.DataFrame:
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    rows = {}
    for key in keys:
        z = a.obsm[key]
        sc.pp.neighbors(a, use_rep=key, key_added="bm")
        sc.tl.leiden(a, neighbors_key="bm", key_added="bm_leiden", flavor="igraph", n_iterations=2)
        rows[key] = {
            "silhouette_label": (silhouette_score(z, a.obs["cell_type"]) + 1) / 2,
            "ARI": adjusted_rand_score(a.obs["cell_type"], a.obs["bm_leiden"]),
            "NMI": normalized_mutual_info_score(a.obs["cell_type"], a.obs["bm_leiden"]),
            "silhouette_batch (1 - |s|)": 1 - abs(silhouette_score(z, a.obs[batch_key])),
        }
    return pd.DataFrame(rows).T.rename_axis("method")


def now() -> float:
    return time.perf_counter()
