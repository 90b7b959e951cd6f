"""CellTypist: ``celltypist.train`` on log1p(CP10k) of all genes; markers from ``extract_top_markers``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._base import Fitted, cp10k, train_labels


def fit_celltypist(split, seed, budget):
    import celltypist

    x = cp10k(split, split.train)
    # check_expression is off: pbmc68k_reduced is log-normalised over its 765 genes only,
    # so its cells do not sum to exactly 10,000 as CellTypist's check expects
    model = celltypist.train(x, labels=train_labels(split), genes=split.train.var_names.to_numpy(),
                             check_expression=False, n_jobs=1)

    def predict(test: AnnData) -> np.ndarray:
        a = AnnData(cp10k(split, test), obs=pd.DataFrame(index=test.obs_names.astype(str)))
        a.var_names = test.var_names
        result = celltypist.annotate(a, model=model, majority_voting=False)
        return result.predicted_labels["predicted_labels"].astype(str).to_numpy()

    def markers(k: int) -> dict[str, list[str]]:
        return {str(c): [str(g) for g in model.extract_top_markers(c, k)] for c in model.cell_types}

    return Fitted(predict, markers=markers)
