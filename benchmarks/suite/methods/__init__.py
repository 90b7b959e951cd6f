"""The classifiers the benchmark compares: scattn's models and the peers a user would pick.

Every method is a function ``fit(split, seed, budget) -> Fitted``, `budget` a dict of
training arguments (``max_epochs``, for CGRAN also ``lr``; empty: the method's defaults): it
trains on
``split.train`` (labels in ``split.labels_key``) and returns an object whose ``predict``
labels new cells (``split.test``, labels hidden) and, where the method has them, whose
``markers`` ranks genes per class on the training cells. The runner times ``fit`` and
``predict`` separately (:mod:`benchmarks._measure`).

Inputs, per method (what each one's documentation asks for):

* **CGRAN, CFAN, SIMS** (scattn): the task's matrix as is (``expression="counts"`` or
  ``"log1p"``); each model normalises and picks its genes itself (CGRAN, CFAN: 1000 variable
  genes; SIMS: all genes). Markers: :func:`scattn.tl.marker_genes_from_attention` on the
  attribution layer of the training cells, grouped by their true labels.
* **scANVI** (scvi-tools): counts only; the 2000 ``seurat_v3`` variable genes of the training
  cells, scVI (2 layers, 30 latent dims, NB) then ``SCANVI.from_scvi_model`` 20 epochs with
  100 samples per label, as the scvi-tools tutorial does. The one method not on every gene.
* **CellTypist**: ``celltypist.train`` (logistic regression, its default for small data) on
  log1p(CP10k) of all genes, ``celltypist.annotate`` without majority voting (which needs a
  clustering of the query). Markers: ``Model.extract_top_markers``.
* **pytorch-tabnet**: ``TabNetClassifier`` with SIMS' recipe (SIMS wraps it), log1p(CP10k) of
  all genes. Markers: its explain matrix through the same rule as SIMS'.
* **LogisticRegression**, **LinearSVM** (scikit-learn, C = 1): log1p(CP10k) of all genes.
  Markers: the largest positive coefficients of each class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData

from ._common import lognorm_matrix

PATIENCE = 15
N_HVG = 2000
SCATTN_MODELS = ("CGRAN", "CFAN", "SIMS")
PEERS = ("scANVI", "CellTypist", "pytorch-tabnet", "LogisticRegression", "LinearSVM")


@dataclass
class Split:
    """One train/test problem: a within-dataset split or a cross-study pair."""

    task: str
    seed: int
    train: AnnData
    test: AnnData  # labels hidden ("Unknown")
    y_test: np.ndarray
    labels_key: str
    expression: str  # "counts" or "log1p"
    markers: bool = False  # score the method's markers on this task


@dataclass
class Fitted:
    """A trained method: how it predicts, how long it trained, and its markers (if any)."""

    predict: Callable[[AnnData], np.ndarray]
    epochs: float = np.nan
    markers: Callable[[int], dict[str, list[str]]] | None = None
    note: str = ""
    # further marker rankings of the same model, scored as "<method> <label>"
    extra_markers: dict[str, Callable[[int], dict[str, list[str]]]] = field(default_factory=dict)


def metrics(y_true, y_pred) -> dict:
    """Accuracy, balanced accuracy, macro and median F1 from :func:`scattn.tl.evaluate`."""
    import anndata as ad

    import scattn as sa

    obs = pd.DataFrame({"truth": pd.Categorical(np.asarray(y_true, dtype=str)),
                        "pred": np.asarray(y_pred, dtype=str)})
    obs.index = obs.index.astype(str)
    m = sa.tl.evaluate(ad.AnnData(obs=obs), "truth", "pred")
    return {k: float(m[k]) for k in ("accuracy", "balanced_accuracy", "macro_f1", "median_f1")}


def _labels(split: Split) -> np.ndarray:
    return split.train.obs[split.labels_key].astype(str).to_numpy()


def _top_from_scores(scores: np.ndarray, classes, genes, k: int) -> dict[str, list[str]]:
    """Top-`k` genes per class from a classes x genes score matrix (positive scores only)."""
    out = {}
    for c, row in zip(classes, np.asarray(scores), strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        out[str(c)] = [str(genes[j]) for j in order if row[j] > 0]
    return out


def markers_from_layer(adata: AnnData, layer: str, groupby: str, k: int,
                       contrast: str = "max_other") -> dict[str, list[str]]:
    """Top-`k` markers per group from an attribution layer (the CGRAN paper's picking rule)."""
    import scanpy as sc

    import scattn as sa

    sa.tl.marker_genes_from_attention(adata, groupby=groupby, layer=layer, key_added="_bench_markers",
                                      contrast=contrast)
    groups = adata.uns["_bench_markers"]["names"].dtype.names
    return {g: sc.get.rank_genes_groups_df(adata, group=g, key="_bench_markers")["names"]
            .astype(str).head(k).tolist() for g in groups}


# -- scattn ---------------------------------------------------------------------------------
def _fit_scattn(name: str, split: Split, seed: int, budget: dict) -> Fitted:
    import scattn as sa

    sa.settings.seed = seed
    sa.settings.progress_bar = False
    train = split.train.copy()
    model_cls = getattr(sa.model, name)
    model_cls.setup_anndata(train, labels_key=split.labels_key, expression=split.expression)
    model = model_cls(train)
    kwargs = dict(budget)
    if name == "SIMS":
        kwargs["early_stopping_patience"] = PATIENCE
    model.train(**kwargs)

    def predict(test: AnnData) -> np.ndarray:
        return model.predict(test, inplace=False).prediction.astype(str).to_numpy()

    cache = {}

    def markers(k: int, contrast: str = "max_other") -> dict[str, list[str]]:
        if "data" not in cache:
            cache["data"] = split.train.copy()
            model.predict(cache["data"])  # writes the attribution layer of the training cells
        return markers_from_layer(cache["data"], f"{model._key}_attention", split.labels_key, k, contrast)

    return Fitted(predict, epochs=len(model.history["train_loss"]), markers=markers,
                  extra_markers={"(vs rest)": lambda k: markers(k, "rest")})


def fit_cgran(split, seed, budget):
    return _fit_scattn("CGRAN", split, seed, budget)


def fit_cfan(split, seed, budget):
    return _fit_scattn("CFAN", split, seed, budget)


def fit_sims(split, seed, budget):
    return _fit_scattn("SIMS", split, seed, budget)


# -- scANVI ---------------------------------------------------------------------------------
def fit_scanvi_model(train: AnnData, labels_key: str, seed: int, *, scvi_epochs: int | None = None,
                     scanvi_epochs: int = 20):
    """scVI then scANVI as the scvi-tools tutorial runs them; returns (model, genes used)."""
    import scanpy as sc
    import scvi

    scvi.settings.seed = seed
    if train.n_vars > N_HVG:
        hvg = sc.pp.highly_variable_genes(train, n_top_genes=N_HVG, flavor="seurat_v3", inplace=False)
        train = train[:, hvg["highly_variable"].to_numpy()].copy()
    else:
        train = train.copy()
    scvi.model.SCVI.setup_anndata(train, labels_key=labels_key)
    vae = scvi.model.SCVI(train, n_layers=2, n_latent=30, gene_likelihood="nb")
    vae.train(max_epochs=scvi_epochs, enable_progress_bar=False)
    lvae = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category="Unknown")
    lvae.train(max_epochs=scanvi_epochs, n_samples_per_label=100, enable_progress_bar=False)
    lvae.n_epochs_ = len(vae.history["train_loss"]) + len(lvae.history["train_loss"])
    return lvae, train.var_names


def fit_scanvi(split, seed, budget):
    if split.expression != "counts":
        raise NotApplicable("scANVI needs counts")
    # the budget caps scVI's epochs (default: scvi-tools' own rule, ~400 on a few thousand
    # cells); neither scVI nor scANVI stops early by default
    cap = budget.get("max_epochs")
    model, genes = fit_scanvi_model(split.train, split.labels_key, seed, scvi_epochs=cap,
                                    scanvi_epochs=20 if cap is None else min(20, cap))

    def predict(test: AnnData) -> np.ndarray:
        return np.asarray(model.predict(test[:, genes].copy()), dtype=str)

    return Fitted(predict, epochs=model.n_epochs_, note=f"{len(genes)} variable genes")


class NotApplicable(Exception):
    """The method cannot run on this task (e.g. scANVI without counts)."""


# -- CellTypist ---------------------------------------------------------------------------
def _cp10k(split: Split, adata: AnnData):
    return lognorm_matrix(adata, split.expression)


def fit_celltypist(split, seed, budget):
    import celltypist

    x = _cp10k(split, split.train)
    # check_expression is off: pbmc68k_reduced is log-normalised over its 765 genes only,
    # so its cells do not sum to exactly 10,000 as CellTypist's check expects
    model = celltypist.train(x, labels=_labels(split), genes=split.train.var_names.to_numpy(),
                             check_expression=False, n_jobs=1)

    def predict(test: AnnData) -> np.ndarray:
        a = AnnData(_cp10k(split, test), obs=pd.DataFrame(index=test.obs_names.astype(str)))
        a.var_names = test.var_names
        result = celltypist.annotate(a, model=model, majority_voting=False)
        return result.predicted_labels["predicted_labels"].astype(str).to_numpy()

    def markers(k: int) -> dict[str, list[str]]:
        return {str(c): [str(g) for g in model.extract_top_markers(c, k)] for c in model.cell_types}

    return Fitted(predict, markers=markers)


# -- pytorch-tabnet --------------------------------------------------------------------------
def _plateau_scheduler():
    """ReduceLROnPlateau as pytorch-tabnet 4.1 recognises one (it looks for `is_better`, a
    method recent torch releases renamed; without it the callback calls ``step()`` bare)."""
    import torch

    class Plateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def is_better(self, a, best):
            return self._is_better(a, best) if hasattr(self, "_is_better") else a < best

    return Plateau


def tabnet_classifier(seed: int, **kwargs):
    """pytorch-tabnet's TabNetClassifier with SIMS' architecture, optimiser and clipping."""
    import torch
    from pytorch_tabnet.tab_model import TabNetClassifier

    return TabNetClassifier(
        n_d=8, n_a=8, n_steps=3, gamma=1.3, n_independent=2, n_shared=2, lambda_sparse=1e-3,
        momentum=0.02, optimizer_fn=torch.optim.Adam, optimizer_params={"lr": 1e-2, "weight_decay": 1e-3},
        clip_value=0.5, seed=seed, verbose=0, device_name="cpu", **kwargs,
    )


def fit_tabnet_model(x: np.ndarray, y: np.ndarray, seed: int, max_epochs: int):
    """TabNetClassifier fitted with SIMS' recipe: class-weighted CE, 10% validation holding
    every class, early stopping on its log-loss, lr x0.75 on plateaus."""
    import torch

    from scattn.model._sims import default_batch_size

    rng = np.random.default_rng(seed)
    val = np.concatenate([rng.choice(np.flatnonzero(y == c), max(1, round(0.1 * (y == c).sum())), replace=False)
                          for c in np.unique(y) if (y == c).sum() >= 2])
    is_val = np.isin(np.arange(len(y)), val)
    classes, counts = np.unique(y, return_counts=True)
    weight = torch.tensor(len(y) / (len(classes) * counts), dtype=torch.float32)
    clf = tabnet_classifier(seed, scheduler_fn=_plateau_scheduler(),
                            scheduler_params={"mode": "min", "factor": 0.75, "patience": 5})
    clf.fit(x[~is_val], y[~is_val], eval_set=[(x[is_val], y[is_val])], eval_metric=["logloss"],
            max_epochs=max_epochs, patience=PATIENCE, batch_size=default_batch_size(int((~is_val).sum())),
            virtual_batch_size=128, loss_fn=torch.nn.CrossEntropyLoss(weight=weight), drop_last=False,
            compute_importance=False)  # an extra pass over the data SIMS does not make
    return clf


def _dense(m) -> np.ndarray:
    return np.asarray(m.todense() if hasattr(m, "todense") else m, dtype=np.float32)


def fit_tabnet(split, seed, budget):
    x = _dense(_cp10k(split, split.train))
    y = _labels(split)
    clf = fit_tabnet_model(x, y, seed, max_epochs=budget.get("max_epochs", 500))

    def predict(test: AnnData) -> np.ndarray:
        return np.asarray(clf.predict(_dense(_cp10k(split, test))), dtype=str)

    def markers(k: int) -> dict[str, list[str]]:
        from scipy import sparse

        explain, _ = clf.explain(x)
        explain = explain / np.maximum(explain.sum(1, keepdims=True), 1e-12)
        data = AnnData(sparse.csr_matrix(x), obs=split.train.obs[[split.labels_key]].copy())
        data.var_names = split.train.var_names
        data.layers["tabnet_attention"] = sparse.csr_matrix(explain)
        return markers_from_layer(data, "tabnet_attention", split.labels_key, k)

    return Fitted(predict, epochs=len(clf.history["loss"]), markers=markers)


# -- scikit-learn ----------------------------------------------------------------------------
def _fit_linear(estimator, split: Split) -> Fitted:
    estimator.fit(_cp10k(split, split.train), _labels(split))

    def predict(test: AnnData) -> np.ndarray:
        return np.asarray(estimator.predict(_cp10k(split, test)), dtype=str)

    def markers(k: int) -> dict[str, list[str]]:
        coef = estimator.coef_
        if coef.shape[0] == 1:  # binary: one row, positive for classes_[1]
            coef = np.vstack([-coef, coef])
        return _top_from_scores(coef, estimator.classes_, split.train.var_names, k)

    return Fitted(predict, markers=markers)


def fit_lr(split, seed, budget):
    from sklearn.linear_model import LogisticRegression

    return _fit_linear(LogisticRegression(max_iter=2000, C=1.0), split)


def fit_svm(split, seed, budget):
    from sklearn.svm import LinearSVC

    return _fit_linear(LinearSVC(C=1.0, random_state=seed), split)


METHODS: dict[str, Callable[[Split, int, dict], Fitted]] = {
    "CGRAN": fit_cgran,
    "CFAN": fit_cfan,
    "SIMS": fit_sims,
    "scANVI": fit_scanvi,
    "CellTypist": fit_celltypist,
    "pytorch-tabnet": fit_tabnet,
    "LogisticRegression": fit_lr,
    "LinearSVM": fit_svm,
}


def wilcoxon_markers(split: Split, k: int) -> dict[str, list[str]]:
    """scanpy's Wilcoxon ``rank_genes_groups`` on the training cells (the marker baseline)."""
    import scanpy as sc

    data = AnnData(_cp10k(split, split.train), obs=split.train.obs[[split.labels_key]].copy())
    data.var_names = split.train.var_names
    sc.tl.rank_genes_groups(data, split.labels_key, method="wilcoxon", key_added="wilcoxon")
    groups = data.uns["wilcoxon"]["names"].dtype.names
    return {g: sc.get.rank_genes_groups_df(data, group=g, key="wilcoxon")["names"].astype(str).head(k).tolist()
            for g in groups}

