"""CellTypist: ``celltypist.train`` on log1p(CP10k) of all genes; markers from ``extract_top_markers``."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ..._peers import celltypist_labels, fit_celltypist_model
from ._base import Fitted, cp10k, train_labels


def fit_celltypist(split, seed, budget):
    model = fit_celltypist_model(cp10k(split, split.train), train_labels(split), split.train.var_names)

    def predict(test: AnnData) -> np.ndarray:
        return celltypist_labels(model, cp10k(split, test), test.obs_names, test.var_names)

    def markers(k: int) -> dict[str, list[str]]:
        return {str(c): [str(g) for g in model.extract_top_markers(c, k)] for c in model.cell_types}

    return Fitted(predict, markers=markers)
