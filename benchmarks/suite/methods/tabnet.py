"""pytorch-tabnet with SIMS' recipe (:func:`benchmarks._peers.fit_tabnet_model`) on log1p(CP10k)
of all genes; markers from its explain matrix through the same rule as SIMS'."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ..._peers import fit_tabnet_model
from ._base import Fitted, cp10k, dense, markers_from_layer, train_labels


def fit_tabnet(split, seed, budget):
    x = dense(cp10k(split, split.train))
    y = train_labels(split)
    clf = fit_tabnet_model(x, y, seed, max_epochs=budget.get("max_epochs", 500))

    def predict(test: AnnData) -> np.ndarray:
        return np.asarray(clf.predict(dense(cp10k(split, test))), dtype=str)

    def markers(k: int) -> dict[str, list[str]]:
        from scipy import sparse

        explain, _ = clf.explain(x)
        explain = explain / np.maximum(explain.sum(1, keepdims=True), 1e-12)
        data = AnnData(sparse.csr_matrix(x), obs=split.train.obs[[split.labels_key]].copy())
        data.var_names = split.train.var_names
        data.layers["tabnet_attention"] = sparse.csr_matrix(explain)
        return markers_from_layer(data, "tabnet_attention", split.labels_key, k)

    return Fitted(predict, epochs=len(clf.history["loss"]), markers=markers)
