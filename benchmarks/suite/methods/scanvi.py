"""scANVI (scvi-tools): counts only, through the shared recipe :func:`benchmarks._peers.fit_scanvi_model`."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ..._peers import fit_scanvi_model
from ._base import Fitted, NotApplicable


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
