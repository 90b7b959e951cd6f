"""CGRAN, CFAN, SIMS, Geneformer and SCGPT (scattn): the task's matrix as is; markers from the attribution layer."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ..._peers import PATIENCE
from ._base import Fitted, Split, markers_from_layer


def _fit_scattn(name: str, split: Split, seed: int, budget: dict) -> Fitted:
    import scattn as sa

    sa.settings.seed = seed
    sa.settings.progress_bar = False
    train = split.train.copy()
    model_cls = getattr(sa.model, name)
    model_cls.setup_anndata(train, labels_key=split.labels_key, expression=split.expression)
    model = model_cls(train)
    kwargs = dict(budget)
    if name == "SIMS" and budget:  # capped runs: pytorch-tabnet's patience, as its peer trains
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

    def predict_query(test: AnnData) -> tuple[np.ndarray, np.ndarray]:
        """scattn's path for another study: adapt to the unlabelled query
        (``load_query_data``, then ``train``), "Unknown" under the confidence of the
        reference model's lowest 1% of held-out reference cells (as ``scattn annotate``)."""
        threshold = None
        held = getattr(model, "validation_indices", None)
        if held is not None and len(held) >= 20:
            conf = model.predict_proba(model.adata, indices=np.sort(held)).to_numpy().max(1)
            threshold = sa.tl.unknown_threshold(conf, p_ref=0.01)
        query = test.copy()
        query.obs = query.obs[[]]  # unlabelled, as a new study comes
        adapted = model_cls.load_query_data(query, model)
        adapted.train(**kwargs)
        pred = adapted.predict(inplace=False)
        labels = pred.prediction.astype(str).to_numpy()  # as `predict` (cells without counts: Unknown)
        flagged = labels if threshold is None else np.where(pred.confidence.to_numpy() < threshold, "Unknown", labels)
        return labels, flagged

    return Fitted(predict, epochs=len(model.history["train_loss"]), markers=markers,
                  extra_markers={"(vs rest)": lambda k: markers(k, "rest")}, predict_query=predict_query)


def fit_cgran(split, seed, budget):
    return _fit_scattn("CGRAN", split, seed, budget)


def fit_cfan(split, seed, budget):
    return _fit_scattn("CFAN", split, seed, budget)


def fit_sims(split, seed, budget):
    return _fit_scattn("SIMS", split, seed, budget)


def fit_geneformer(split, seed, budget):
    return _fit_scattn("Geneformer", split, seed, budget)


def fit_scgpt(split, seed, budget):
    return _fit_scattn("SCGPT", split, seed, budget)
