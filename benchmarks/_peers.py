"""How the peers are trained, shared by the suite's adapters (:mod:`benchmarks.suite.methods`)
and the SIMS studies (:mod:`benchmarks.studies.sims_accuracy`, ``sims_speed``), so that both
run the very same recipe.

* scANVI: :func:`fit_scanvi_model`, scVI then ``SCANVI.from_scvi_model`` as the scvi-tools
  tutorial runs them, on the 2000 ``seurat_v3`` variable genes.
* pytorch-tabnet: :func:`tabnet_classifier` (SIMS' architecture, optimiser, clipping) and
  :func:`fit_tabnet_model` (SIMS' training recipe).
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

PATIENCE = 15  # early-stopping patience of SIMS and of pytorch-tabnet with SIMS' recipe
N_HVG = 2000  # scANVI's variable genes


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


def fit_celltypist_model(x, labels, genes):
    """``celltypist.train`` (logistic regression, its default for small data) on log1p(CP10k).

    ``check_expression`` is off: pbmc68k_reduced is log-normalised over its 765 genes only, so
    its cells do not sum to exactly 10,000 as CellTypist's check expects.
    """
    import celltypist

    return celltypist.train(x, labels=labels, genes=np.asarray(genes), check_expression=False, n_jobs=1)


def celltypist_labels(model, x, obs_names, genes) -> np.ndarray:
    """``celltypist.annotate`` without majority voting (which needs a clustering of the query)."""
    import celltypist
    import pandas as pd

    a = AnnData(x, obs=pd.DataFrame(index=pd.Index(obs_names).astype(str)))
    a.var_names = pd.Index(genes)
    result = celltypist.annotate(a, model=model, majority_voting=False)
    return result.predicted_labels["predicted_labels"].astype(str).to_numpy()
