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

    def predict_query(test: AnnData) -> tuple[np.ndarray, None]:
        """scArches query mapping as the scvi-tools tutorial runs it: the unlabelled query
        registered with the reference model, trained 100 epochs without weight decay
        (``unfrozen=False``: the new batch's weights only), then predicted."""
        import scvi

        query = test[:, test.var_names.isin(genes)].copy()
        query.obs = query.obs[[]].assign(**{split.labels_key: "Unknown"})
        scvi.model.SCANVI.prepare_query_anndata(query, model)
        mapped = scvi.model.SCANVI.load_query_data(query, model)
        mapped.train(max_epochs=100 if cap is None else cap, plan_kwargs={"weight_decay": 0.0},
                     check_val_every_n_epoch=10, enable_progress_bar=False)
        return np.asarray(mapped.predict(), dtype=str), None

    return Fitted(predict, epochs=model.n_epochs_, note=f"{len(genes)} variable genes",
                  predict_query=predict_query)
