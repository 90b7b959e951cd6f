"""Shared fixtures: tiny synthetic count data with planted markers, and a tiny trained CGRAN."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

matplotlib.use("Agg")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# small architecture so every mechanics test trains in seconds
TINY = {"n_top_genes": 60, "n_embedding": 16, "group_size": 20, "n_heads": 2, "head_dims": (4, 4)}


def best_validation_epoch(history: dict) -> int:
    """The epoch :class:`scattn.train.BestValidationWeights` keeps: the highest validation
    accuracy, ties to the lower validation loss (written out here, independently)."""
    acc = history["accuracy_validation"].to_numpy().ravel().astype(float)
    loss = history["validation_loss"].to_numpy().ravel().astype(float)
    best = [i for i in range(len(acc)) if acc[i] == acc.max()]
    return min(best, key=lambda i: loss[i])


def make_counts(n_cells: int = 150, n_genes: int = 80, n_types: int = 3, seed: int = 0) -> ad.AnnData:
    """Poisson counts where type k over-expresses genes 5k..5k+4 (named MK{k}_{i})."""
    rng = np.random.default_rng(seed)
    types = np.repeat(np.arange(n_types), int(np.ceil(n_cells / n_types)))[:n_cells]
    rate = rng.gamma(2.0, 0.5, size=n_genes)
    lam = np.tile(rate, (n_cells, 1))
    names = [f"G{j}" for j in range(n_genes)]
    for k in range(n_types):
        cols = np.arange(5 * k, 5 * k + 5)
        lam[np.ix_(types == k, cols)] += 8.0
        for i, c in enumerate(cols):
            names[c] = f"MK{k}_{i}"
    x = rng.poisson(lam).astype(np.float32)
    x[x.sum(1) == 0, -1] = 1
    adata = ad.AnnData(
        X=sparse.csr_matrix(x),
        obs=pd.DataFrame({"cell_type": pd.Categorical([f"type{k}" for k in types])},
                         index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=names),
    )
    adata.layers["counts"] = adata.X.copy()
    return adata


@pytest.fixture
def adata() -> ad.AnnData:
    return make_counts()


def _train_tiny(model_name: str, arch: dict):
    """(model, adata): a model trained 2 epochs on tiny data, a few cells unlabelled."""
    import scattn as sa

    sa.settings.seed = 0
    sa.settings.progress_bar = False
    data = make_counts()
    data.obs["label"] = data.obs["cell_type"].astype(str)
    data.obs.loc[data.obs_names[::10], "label"] = "Unknown"
    model_cls = getattr(sa.model, model_name)
    model_cls.setup_anndata(data, labels_key="label", layer="counts")
    model = model_cls(data, **arch)
    model.train(max_epochs=2, lr=1e-2, batch_size=32)
    return model, data


@pytest.fixture(scope="session")
def trained():
    """(model, adata): a CGRAN trained 2 epochs on tiny data, a few cells unlabelled."""
    return _train_tiny("CGRAN", TINY)


TINY_CFAN = {"n_top_genes": 60, "n_extractors": 4, "n_features": 16, "n_qk": 8, "n_values": 8,
             "conv_channels": 4}


@pytest.fixture(scope="session")
def trained_cfan():
    """(model, adata): a CFAN trained 2 epochs on tiny data, a few cells unlabelled."""
    return _train_tiny("CFAN", TINY_CFAN)


TINY_SIMS = {"n_d": 4, "n_a": 4, "n_steps": 2, "n_independent": 1, "n_shared": 1, "virtual_batch_size": 16}


@pytest.fixture(scope="session")
def trained_sims():
    """(model, adata): a SIMS trained 2 epochs on tiny data, a few cells unlabelled."""
    return _train_tiny("SIMS", TINY_SIMS)


#: a tiny architecture of every model, by class name (mechanics tests of all six)
TINY_ARCH = {
    "CFAN": TINY_CFAN,
    "CGRAN": TINY,
    "SIMS": TINY_SIMS,
    "SCVIT": {"n_latent": 4, "n_hidden": 16, "patch_size": 8, "d_model": 8, "n_heads": 2},
    "Geneformer": {"n_layers": 1, "d_model": 8, "n_heads": 2, "d_ff": 16, "max_length": 16},
    "SCGPT": {"n_layers": 1, "d_model": 8, "n_heads": 2, "d_ff": 16, "max_length": 16},
}
#: models that can be set up without labels
UNSUPERVISED = ("SCVIT", "Geneformer", "SCGPT")


def tiny_model(name: str, adata: ad.AnnData, *, labels: bool = True):
    """A tiny `name` model on `adata` (counts in ``layers["counts"]``, labels in
    ``obs["cell_type"]``; set up without labels for an unsupervised model if `labels` is False)."""
    import scattn as sa

    cls = getattr(sa.model, name)
    kwargs = {"layer": "counts"}
    if labels or name not in UNSUPERVISED:
        kwargs["labels_key"] = "cell_type"
    cls.setup_anndata(adata, **kwargs)
    return cls(adata, **TINY_ARCH[name])


@pytest.fixture(params=["cfan", "sims"])
def predicted_other(request, trained_cfan, trained_sims):
    """(key, model, adata): a CFAN or SIMS predicted into a fresh copy of its data."""
    model, adata = trained_cfan if request.param == "cfan" else trained_sims
    adata = adata.copy()
    model.predict(adata)
    return request.param, model, adata


@pytest.fixture
def both_predicted(trained_cfan, trained_sims):
    """A copy of the tiny data with a CFAN's and a SIMS' predictions in it."""
    adata = trained_cfan[1].copy()
    trained_cfan[0].predict(adata)
    trained_sims[0].predict(adata)
    return adata


def shared_path(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path
