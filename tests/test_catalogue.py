"""The catalogue of what scattn checks: every bad or awkward input and what it gets.

Each case runs against the public API and expects a clear error (``raises``), a warning
(``warns``) or a log line at the default verbosity (``logs``), with a message that names the
problem. Every case that fails must leave the user's AnnData as it was. ``docs/checks.md``
lists the same cases (a test keeps the two in step).
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import scattn as sa
from tests.conftest import TINY_CFAN, TINY_SIMS, make_counts

DOCS = Path(__file__).resolve().parents[1] / "docs" / "checks.md"


@dataclass
class Case:
    id: str
    area: str
    what: str
    expect: str  # "raises", "warns" or "logs"
    exc: type | None
    match: str
    run: Callable


CASES: list[Case] = []


def case(id, area, what, expect, match, exc=ValueError):
    def deco(fn):
        CASES.append(Case(id, area, what, expect, exc if expect == "raises" else None, match, fn))
        return fn
    return deco


def _data(n=90, seed=0):
    d = make_counts(n, seed=seed)
    d.obs["label"] = d.obs["cell_type"].astype(str)
    return d


def _set(d, **kw):
    kw.setdefault("labels_key", "label")
    kw.setdefault("layer", "counts")
    sa.model.CFAN.setup_anndata(d, **kw)
    return d


def _query(n=40, seed=7):
    q = _data(n, seed)
    return q


# -- set-up ---------------------------------------------------------------------------------------
@case("setup-not-anndata", "set-up", "an object that is not an AnnData", "raises", "Expected an AnnData", TypeError)
def _(ctx):
    sa.model.CFAN.setup_anndata(pd.DataFrame(), labels_key="label")


@case("setup-view", "set-up", "a view of an AnnData", "raises", "is a view")
def _(ctx):
    _set(_data()[:10])


@case("setup-labels-missing", "set-up", "a labels_key that is not an obs column", "raises", "is not a column of adata.obs", KeyError)
def _(ctx):
    _set(_data(), labels_key="nope")


@case("setup-classifier-no-labels", "set-up", "a classifier set up without labels_key", "raises", "is a classifier: pass labels_key")
def _(ctx):
    sa.model.CGRAN.setup_anndata(_data(), layer="counts")


@case("setup-batch-key", "set-up", "batch_key for a model without a batch covariate", "raises", "unexpected keyword argument 'batch_key'", TypeError)
def _(ctx):
    _set(_data(), batch_key="label")


@case("setup-covariates", "set-up", "categorical covariates for a model without them", "raises", "unexpected keyword argument 'categorical_covariate_keys'", TypeError)
def _(ctx):
    _set(_data(), categorical_covariate_keys=["label"])


@case("setup-unexpected-arg", "set-up", "an argument setup_anndata does not know", "raises", "unexpected keyword argument 'labels'", TypeError)
def _(ctx):
    _set(_data(), labels="label")


@case("setup-layer-missing", "set-up", "a layer that does not exist", "raises", "Layer 'nope' not found", KeyError)
def _(ctx):
    _set(_data(), layer="nope")


def _emptied(d, row: int):
    """`d` with cell `row` holding no counts."""
    x = d.layers["counts"].toarray()
    x[row] = 0
    d.layers["counts"] = sparse.csr_matrix(x)
    return d


def _with(values_fn, layer="counts"):
    d = _data()
    x = d.layers[layer].toarray()
    values_fn(x)
    d.layers[layer] = sparse.csr_matrix(x) if not np.isnan(x).any() else x
    return d


@case("setup-nan", "set-up", "NaN in the expression", "raises", "NaN or infinite values")
def _(ctx):
    _set(_with(lambda x: x.__setitem__((0, 0), np.nan)))


@case("setup-inf", "set-up", "infinite values in the expression", "raises", "NaN or infinite values")
def _(ctx):
    _set(_with(lambda x: x.__setitem__((0, 0), np.inf)))


@case("setup-negative", "set-up", "negative values (scaled data)", "raises", "negative values")
def _(ctx):
    _set(_with(lambda x: x.__setitem__((0, 0), -1.0)))


@case("setup-non-integer", "set-up", "non-integer values declared as counts", "raises", "non-integer values")
def _(ctx):
    _set(_with(lambda x: x.__setitem__((0, 0), 0.5)))


@case("setup-counts-as-log1p", "set-up", "raw counts declared log-normalised", "raises", "look like raw counts")
def _(ctx):
    d = _with(lambda x: x.__setitem__((0, 0), 200.0))
    _set(d, expression="log1p")


@case("setup-expression-kind", "set-up", "an unknown expression kind", "raises", "expression must be one of")
def _(ctx):
    _set(_data(), expression="tpm")


@case("setup-non-numeric", "set-up", "a non-numeric matrix", "raises", "non-numeric dtype", TypeError)
def _(ctx):
    d = _data()
    d.layers["counts"] = np.full(d.shape, "a", dtype=object)
    _set(d)


@case("setup-empty-cell", "set-up", "a cell with no expression", "raises", "cells with no expression")
def _(ctx):
    _set(_emptied(_data(), 3))


@case("setup-duplicated-genes", "set-up", "duplicated gene names", "raises", "duplicated gene names")
def _(ctx):
    d = _data()
    d.var_names = ["G0"] * 2 + list(d.var_names[2:])
    _set(d)


@case("setup-zero-cells", "set-up", "an AnnData with 0 cells", "raises", "0 cells")
def _(ctx):
    _set(_data()[[]].copy())


@case("setup-zero-genes", "set-up", "an AnnData with 0 genes", "raises", "0 genes")
def _(ctx):
    _set(_data()[:, []].copy())


@case("setup-all-unlabelled", "set-up", "every cell unlabelled", "raises", "are unlabelled")
def _(ctx):
    d = _data()
    d.obs["label"] = "Unknown"
    _set(d)


@case("setup-single-class", "set-up", "a single labelled class", "raises", "single labelled class")
def _(ctx):
    d = _data()
    d.obs["label"] = "a"
    _set(d)


@case("setup-unlabeled-none", "set-up", "unlabeled_category=None", "raises", "unlabeled_category must be a label value")
def _(ctx):
    _set(_data(), unlabeled_category=None)


@case("setup-classes-duplicated", "set-up", "classes with duplicates", "raises", "classes must be unique")
def _(ctx):
    _set(_data(), classes=["type0", "type0", "type1"])


@case("setup-label-outside-classes", "set-up", "a label outside the given classes", "raises", "labels outside the model's classes")
def _(ctx):
    _set(_data(), classes=["type0", "type1"])


@case("setup-id-like-labels", "set-up", "a continuous or ID column as labels", "warns", "continuous or ID column")
def _(ctx):
    d = _data()
    d.obs["label"] = np.random.default_rng(0).random(d.n_obs)
    _set(d)


@case("setup-slash-labels", "set-up", "class names containing '/'", "warns", "contain '/'")
def _(ctx):
    d = _data()
    d.obs["label"] = d.obs["label"].str.replace("type", "CD4+/T")
    _set(d)


# -- construction ---------------------------------------------------------------------------------
@case("init-n-top-genes", "model", "n_top_genes below 1", "raises", "n_top_genes must be >= 1")
def _(ctx):
    sa.model.CFAN(_set(_data()), n_top_genes=0)


@case("init-dropout", "model", "dropout outside [0, 1)", "raises", "dropout must be in")
def _(ctx):
    sa.model.CFAN(_set(_data()), dropout=1.0)


@case("init-kernel-size", "model", "an even CFAN kernel size", "raises", "kernel_size must be a positive odd")
def _(ctx):
    sa.model.CFAN(_set(_data()), kernel_size=2)


@case("init-cgran-heads", "model", "no attention heads", "raises", "n_heads and every head dim")
def _(ctx):
    d = _data()
    sa.model.CGRAN.setup_anndata(d, labels_key="label", layer="counts")
    sa.model.CGRAN(d, n_heads=0)


@case("init-genes-absent", "model", "a gene list naming absent genes", "raises", "not in adata.var_names")
def _(ctx):
    sa.model.CFAN(_set(_data()), genes=["G1", "NOPE"])


@case("init-sims-lambda", "model", "a negative sparsity weight", "raises", "lambda_sparse must be >= 0")
def _(ctx):
    d = _data()
    sa.model.SIMS.setup_anndata(d, labels_key="label", layer="counts")
    sa.model.SIMS(d, lambda_sparse=-1.0)


# -- training -------------------------------------------------------------------------------------
def _fresh_cfan(d=None):
    return sa.model.CFAN(_set(_data() if d is None else d), **TINY_CFAN)


@case("train-max-epochs", "train", "max_epochs below 1", "raises", "max_epochs must be >= 1")
def _(ctx):
    _fresh_cfan().train(max_epochs=0)


@case("train-train-size", "train", "train_size outside (0, 1]", "raises", "train_size must be in")
def _(ctx):
    _fresh_cfan().train(max_epochs=1, train_size=0.0)


@case("train-sims-batch-size", "train", "a SIMS batch of one cell", "raises", "batch_size must be >= 2")
def _(ctx):
    d = _data()
    sa.model.SIMS.setup_anndata(d, labels_key="label", layer="counts")
    sa.model.SIMS(d, **TINY_SIMS).train(max_epochs=1, batch_size=1)


@case("train-no-head", "train", "training a SIMS set up without labels", "raises", "no classifier")
def _(ctx):
    d = _data()
    sa.model.SIMS.setup_anndata(d, layer="counts")
    sa.model.SIMS(d, **TINY_SIMS).train(max_epochs=1)


@case("train-x-changed", "train", "the model's X made non-integer after set-up", "raises", "non-integer values")
def _(ctx):
    m = _fresh_cfan()
    m.adata.layers["counts"] = m.adata.layers["counts"] * 0.5
    m.train(max_epochs=1)


@case("train-loaded-without-labels", "train", "training a model loaded on data without labels", "raises", "training needs labelled cells")
def _(ctx):
    model, _ = ctx["trained_cfan"]
    model.save(ctx["tmp"] / "m")
    d = _data()
    del d.obs["label"]
    sa.model.CFAN.load(ctx["tmp"] / "m", adata=d).train(max_epochs=1)


@case("pretrain-mask-ratio", "train", "a mask ratio outside (0, 1)", "raises", "mask_ratio must be in")
def _(ctx):
    d = _data()
    sa.model.SIMS.setup_anndata(d, labels_key="label", layer="counts")
    sa.model.SIMS(d, **TINY_SIMS).pretrain(max_epochs=1, mask_ratio=1.0)


# -- prediction -----------------------------------------------------------------------------------
def _predict(ctx, q, **kw):
    model, _ = ctx["trained_cfan"]
    return model.predict(q, **kw)


@case("predict-threshold", "predict", "unknown_threshold outside (0, 1)", "raises", "unknown_threshold must be in")
def _(ctx):
    _predict(ctx, _query(), unknown_threshold=1.5)


@case("predict-top-k", "predict", "attention_top_k below 1", "raises", "attention_top_k must be >= 1")
def _(ctx):
    _predict(ctx, _query(), attention_top_k=0)


@case("predict-not-anndata", "predict", "predicting a DataFrame", "raises", "Expected an AnnData", TypeError)
def _(ctx):
    _predict(ctx, pd.DataFrame(np.ones((3, 3))))


@case("predict-no-shared-genes", "predict", "data sharing no gene with the model", "raises", "shares no gene with the model")
def _(ctx):
    q = _query()
    q.var_names = [f"X{i}" for i in range(q.n_vars)]
    _predict(ctx, q)


@case("predict-low-overlap", "predict", "data with too few of the model's genes", "raises", "below the minimum overlap")
def _(ctx):
    model, _ = ctx["trained_cfan"]
    q = _query()[:, ~_query().var_names.isin(model.var_names_[:40])].copy()
    _predict(ctx, q)


@case("predict-missing-genes", "predict", "data lacking some of the model's genes", "warns", "are missing from the data and are filled with zeros")
def _(ctx):
    _predict(ctx, _query()[:, 3:].copy())


@case("predict-nan", "predict", "new data with NaN", "raises", "NaN or infinite values")
def _(ctx):
    q = _query()
    x = q.layers["counts"].toarray()
    x[0, 0] = np.nan
    q.layers["counts"] = x
    _predict(ctx, q)


@case("predict-negative", "predict", "new data with negative values", "raises", "negative values")
def _(ctx):
    q = _query()
    q.layers["counts"] = -q.layers["counts"]
    _predict(ctx, q)


@case("predict-layer-missing", "predict", "new data without the model's layer", "raises", "set up with layer='counts'", KeyError)
def _(ctx):
    q = _query()
    del q.layers["counts"]
    _predict(ctx, q)


@case("predict-empty-cell", "predict", "a new cell with no expression at all", "raises", "cells with no expression")
def _(ctx):
    _predict(ctx, _emptied(_query(), 0))


@case("predict-empty-on-model-genes", "predict", "a cell with counts only outside the model's genes", "warns", "no counts on any of the model's")
def _(ctx):
    model, _ = ctx["trained_cfan"]
    q = _query()
    x = q.layers["counts"].toarray()
    x[0] = 0
    extra = ad.AnnData(np.zeros((q.n_obs, 1)), obs=q.obs[[]], var=pd.DataFrame(index=["OTHER"]))
    q = ad.concat([q, extra], axis=1, merge="first")
    x = np.hstack([x, np.zeros((q.n_obs, 1))])
    x[0, -1] = 5
    q.layers["counts"] = sparse.csr_matrix(x)
    res = model.predict(q, inplace=False)
    assert res.prediction.iloc[0] == "Unknown" and np.isnan(res.confidence.iloc[0])
    assert np.isnan(res.embedding[0]).all() and np.isfinite(res.embedding[1:]).all()


@case("predict-duplicated-genes", "predict", "new data with duplicated genes", "raises", "duplicated gene names")
def _(ctx):
    q = _query()
    q.var_names = ["G9"] * 2 + list(q.var_names[2:])
    _predict(ctx, q)


@case("predict-counts-to-log1p-model", "predict", "raw counts for a model set up on log1p", "raises", "look like raw counts")
def _(ctx):
    d = _data()
    d.layers["log"] = sparse.csr_matrix(np.log1p(d.layers["counts"].toarray()))
    sa.model.CFAN.setup_anndata(d, labels_key="label", layer="log", expression="log1p")
    m = sa.model.CFAN(d, **TINY_CFAN)
    q = _query()
    x = q.layers["counts"].toarray()
    x[0, 0] = 300
    q.layers["log"] = sparse.csr_matrix(x)
    m.predict(q)


@case("predict-untrained", "predict", "predicting with an untrained model", "warns", "untrained model")
def _(ctx):
    _fresh_cfan().predict(inplace=False)


@case("predict-x-changed", "predict", "the model's X made non-integer after training", "raises", "non-integer values")
def _(ctx):
    m = _fresh_cfan()
    m.adata.layers["counts"] = m.adata.layers["counts"] * 0.5
    m.predict()


@case("predict-subset-in-place", "predict", "the model's AnnData subset in place after training", "raises", "changed shape since set-up")
def _(ctx):
    m = _fresh_cfan()
    m.adata._inplace_subset_obs(np.arange(20))
    m.predict()


@case("predict-overwrite", "predict", "key_added naming results that exist", "logs", "overwrites obs\\['cfan_prediction'\\]")
def _(ctx):
    q = _query()
    _predict(ctx, q)
    _predict(ctx, q)


@case("predict-no-classifier", "predict", "predicting with a model that has no classifier", "raises", "no classifier")
def _(ctx):
    d = _data()
    sa.model.SIMS.setup_anndata(d, layer="counts")
    sa.model.SIMS(d, **TINY_SIMS).predict()


# -- save and load --------------------------------------------------------------------------------
def _saved(ctx, name="m"):
    model, adata = ctx["trained_cfan"]
    path = ctx["tmp"] / name
    model.save(path, overwrite=True)
    return path, adata


def _damage(ctx, content: bytes):
    path, adata = _saved(ctx)
    (path / "model.pt").write_bytes(content)
    sa.model.CFAN.load(path, adata=adata)


@case("load-empty-file", "save/load", "an empty model.pt", "raises", "is not a readable scattn model")
def _(ctx):
    _damage(ctx, b"")


@case("load-truncated-file", "save/load", "a truncated model.pt", "raises", "is not a readable scattn model")
def _(ctx):
    path, _ = _saved(ctx, "full")
    _damage(ctx, (path / "model.pt").read_bytes()[:1000])


@case("load-foreign-pickle", "save/load", "a model.pt holding another pickle", "raises", "is not a readable scattn model")
def _(ctx):
    _damage(ctx, pickle.dumps([1, 2]))


@case("load-foreign-torch", "save/load", "a model.pt of another program", "raises", "is not a scattn model file")
def _(ctx):
    path, adata = _saved(ctx)
    torch.save({"state": torch.zeros(2)}, path / "model.pt")
    sa.model.CFAN.load(path, adata=adata)


@case("load-other-class", "save/load", "loading a CFAN as a CGRAN", "raises", "holds a saved CFAN model, not a CGRAN")
def _(ctx):
    path, adata = _saved(ctx)
    sa.model.CGRAN.load(path, adata=adata)


@case("load-missing", "save/load", "a directory without a saved model", "raises", "No saved model", FileNotFoundError)
def _(ctx):
    sa.model.CFAN.load(ctx["tmp"] / "nothing", adata=_data())


@case("load-other-genes", "save/load", "an AnnData with other genes", "raises", "genes differ from the")
def _(ctx):
    path, _ = _saved(ctx)
    sa.model.CFAN.load(path, adata=_data()[:, 5:].copy())


@case("load-no-adata", "save/load", "no AnnData given and none saved", "raises", "holds no AnnData")
def _(ctx):
    path, _ = _saved(ctx)
    sa.model.CFAN.load(path)


@case("load-nan", "save/load", "loading onto data with NaN", "raises", "NaN or infinite values")
def _(ctx):
    path, _ = _saved(ctx)
    d = _with(lambda x: x.__setitem__((0, 0), np.nan))
    sa.model.CFAN.load(path, adata=d)


@case("load-non-integer", "save/load", "loading onto non-integer counts", "raises", "non-integer values")
def _(ctx):
    path, _ = _saved(ctx)
    sa.model.CFAN.load(path, adata=_with(lambda x: x.__setitem__((0, 0), 0.5)))


@case("load-empty-cell", "save/load", "loading onto data with an empty cell", "raises", "cells with no expression")
def _(ctx):
    path, _ = _saved(ctx)
    sa.model.CFAN.load(path, adata=_emptied(_data(), 2))


@case("load-unknown-label", "save/load", "loading onto data with a label the model does not know", "raises", "labels outside the model's classes")
def _(ctx):
    path, _ = _saved(ctx)
    d = _data()
    d.obs.loc[d.obs_names[0], "label"] = "novel"
    sa.model.CFAN.load(path, adata=d)


@case("save-to-file", "save/load", "saving to a path that is a file", "raises", "is a file, not a directory")
def _(ctx):
    model, _ = ctx["trained_cfan"]
    (ctx["tmp"] / "f").write_text("x")
    model.save(ctx["tmp"] / "f")


@case("save-existing", "save/load", "saving into an existing directory", "raises", "pass `overwrite=True`")
def _(ctx):
    path, _ = _saved(ctx)
    ctx["trained_cfan"][0].save(path)


# -- transfer -------------------------------------------------------------------------------------
def _ref(ctx):
    return ctx["trained_cfan"][0]


@case("query-untrained-reference", "transfer", "an untrained reference model", "raises", "reference model is not trained", RuntimeError)
def _(ctx):
    sa.model.CFAN.load_query_data(_query(), _fresh_cfan())


@case("query-wrong-reference", "transfer", "a reference of another class", "raises", "reference_model must be a trained CGRAN", TypeError)
def _(ctx):
    sa.model.CGRAN.load_query_data(_query(), _ref(ctx))


@case("query-fine-tune", "transfer", "an unknown fine_tune", "raises", "fine_tune must be")
def _(ctx):
    sa.model.CFAN.load_query_data(_query(), _ref(ctx), fine_tune="head")


@case("query-own-adata", "transfer", "the reference's own AnnData as query", "raises", "reference model's own AnnData")
def _(ctx):
    sa.model.CFAN.load_query_data(ctx["trained_cfan"][1], _ref(ctx))


@case("query-no-shared-genes", "transfer", "a query sharing no gene", "raises", "shares no gene")
def _(ctx):
    q = _query()
    q.var_names = [f"X{i}" for i in range(q.n_vars)]
    sa.model.CFAN.load_query_data(q, _ref(ctx))


@case("query-new-labels", "transfer", "query labels the reference lacks", "raises", "labels outside the model's classes")
def _(ctx):
    q = _query()
    q.obs.loc[q.obs_names[:5], "label"] = "novel"
    sa.model.CFAN.load_query_data(q, _ref(ctx))


@case("query-min-overlap", "transfer", "min_gene_overlap outside (0, 1]", "raises", "min_gene_overlap must be in")
def _(ctx):
    sa.model.CFAN.load_query_data(_query(), _ref(ctx), min_gene_overlap=0.0)


@case("query-missing-genes", "transfer", "a query lacking some reference genes", "warns", "missing from the query; they read as zero")
def _(ctx):
    sa.model.CFAN.load_query_data(_query()[:, 5:].copy(), _ref(ctx))


def _pretrained(ctx):
    if "pretrained" not in ctx:
        d = _data(60, 3)
        del d.obs["label"]
        sa.model.SIMS.setup_anndata(d, layer="counts")
        m = sa.model.SIMS(d, **TINY_SIMS)
        m.pretrain(max_epochs=1, batch_size=32)
        ctx["pretrained"] = m
    return ctx["pretrained"]


@case("pretrained-unregistered", "transfer", "from_pretrained on an AnnData not set up", "raises", "Register adata first")
def _(ctx):
    sa.model.SIMS.from_pretrained(_pretrained(ctx), _data())


@case("pretrained-expression", "transfer", "from_pretrained onto another kind of data", "raises", "set it up the same way")
def _(ctx):
    d = _data()
    d.layers["log"] = sparse.csr_matrix(np.log1p(d.layers["counts"].toarray()))
    sa.model.SIMS.setup_anndata(d, labels_key="label", layer="log", expression="log1p")
    sa.model.SIMS.from_pretrained(_pretrained(ctx), d)


@case("pretrained-untrained-source", "transfer", "a source neither pretrained nor trained", "raises", "neither pretrained nor trained")
def _(ctx):
    d = _data()
    sa.model.SIMS.setup_anndata(d, labels_key="label", layer="counts")
    sa.model.SIMS.from_pretrained(sa.model.SIMS(d, **TINY_SIMS), d)


@case("pretrained-wrong-type", "transfer", "a source that is neither a model nor a directory", "raises", "must be a SIMS or a directory", TypeError)
def _(ctx):
    sa.model.SIMS.from_pretrained(3, _data())


# -- tools ----------------------------------------------------------------------------------------
def _predicted(ctx):
    model, _ = ctx["trained_cfan"]
    q = _query()
    model.predict(q)
    return q


@case("tool-no-results", "tools", "a tool on data no model predicted", "raises", "No scattn model results")
def _(ctx):
    sa.tl.marker_genes_from_attention(_data())


@case("tool-several-results", "tools", "two models' results and no key", "raises", "several scattn model results")
def _(ctx):
    q = _predicted(ctx)
    ctx["trained_cfan"][0].predict(q, key_added="other")
    sa.tl.marker_genes_from_attention(q)


@case("markers-negative-layer", "tools", "markers from a layer without positive weights", "raises", "has no positive weight")
def _(ctx):
    q = _predicted(ctx)
    q.layers["cfan_attention"] = -abs(q.layers["cfan_attention"])
    sa.tl.marker_genes_from_attention(q)


@case("markers-groupby-missing", "tools", "markers grouped by a missing column", "raises", "is not a column of adata.obs", KeyError)
def _(ctx):
    sa.tl.marker_genes_from_attention(_predicted(ctx), groupby="nope")


@case("evaluate-disjoint-labels", "tools", "integer truth codes against named predictions", "raises", "share no class name")
def _(ctx):
    q = _predicted(ctx)
    q.obs["codes"] = q.obs["label"].astype("category").cat.codes
    sa.tl.evaluate(q, "codes")


@case("evaluate-all-unlabelled", "tools", "evaluating with every truth label missing", "raises", "No cell to evaluate")
def _(ctx):
    q = _predicted(ctx)
    q.obs["label"] = np.nan
    sa.tl.evaluate(q, "label")


@case("evaluate-missing-predictions", "tools", "labelled cells without a prediction", "raises", "have no prediction")
def _(ctx):
    q = _predicted(ctx)
    q.obs["cfan_prediction"] = q.obs["cfan_prediction"].astype(object)
    q.obs.loc[q.obs_names[0], "cfan_prediction"] = np.nan
    sa.tl.evaluate(q, "label")


@case("gene-sets-cfan", "tools", "gene sets from a model without gene-gene attention", "raises", "has no gene-to-gene attention", TypeError)
def _(ctx):
    sa.tl.gene_sets_from_attention(_predicted(ctx), ctx["trained_cfan"][0])


@case("gene-sets-no-model", "tools", "gene sets without a model", "raises", "model=None", TypeError)
def _(ctx):
    sa.tl.gene_sets_from_attention(_predicted(ctx), None)


@case("novelty-threshold", "tools", "a novelty threshold outside (0, 1)", "raises", "threshold must be in")
def _(ctx):
    sa.tl.novelty(_predicted(ctx), _predicted(ctx), threshold=2.0)


@case("tool-overwrite", "tools", "a tool writing over its earlier result", "logs", "overwrites uns\\['cfan_markers'\\]")
def _(ctx):
    sa.tl.marker_genes_from_attention(_predicted(ctx))


# -- scViT (counts and batches) -------------------------------------------------------------------
def _scvit_data(n=60, seed=0, batches=("b0", "b1")):
    d = make_counts(n, seed=seed)
    d.obs["batch"] = [batches[i % len(batches)] for i in range(n)]
    return d


def _scvit_set(d, **kw):
    kw.setdefault("layer", "counts")
    kw.setdefault("batch_key", "batch")
    sa.model.SCVIT.setup_anndata(d, **kw)
    return d


def _scvit(ctx):
    """An scViT with batches b0 and b1, trained one epoch (made once)."""
    if "scvit" not in ctx:
        m = sa.model.SCVIT(_scvit_set(_scvit_data()), n_latent=4, n_hidden=16, patch_size=8,
                           d_model=8, n_heads=2)
        m.train(max_epochs=1, batch_size=32, accelerator="cpu")
        ctx["scvit"] = m
    return ctx["scvit"]


def _scvit_with(value):
    d = _scvit_data()
    x = d.layers["counts"].toarray()
    x[0, 0] = value
    d.layers["counts"] = sparse.csr_matrix(x)
    return d


@case("scvit-non-integer", "set-up", "scViT on non-integer counts", "raises", "non-integer values")
def _(ctx):
    _scvit_set(_scvit_with(0.5))


@case("scvit-negative", "set-up", "scViT on negative values", "raises", "negative values")
def _(ctx):
    _scvit_set(_scvit_with(-1.0))


@case("scvit-log1p", "set-up", "scViT set up on log-normalised data", "raises", "unexpected keyword argument 'expression'", TypeError)
def _(ctx):
    d = _scvit_data()
    d.layers["log"] = sparse.csr_matrix(np.log1p(d.layers["counts"].toarray()))
    _scvit_set(d, layer="log", expression="log1p")


@case("scvit-single-cell-batch", "set-up", "a batch holding a single cell", "raises", "hold a single cell")
def _(ctx):
    d = _scvit_data()
    d.obs.loc[d.obs_names[0], "batch"] = "lonely"
    _scvit_set(d)


@case("scvit-unseen-batch", "predict", "scViT predicting a batch it was not trained on", "raises", "batch\\(es\\) the model was not trained on")
def _(ctx):
    _scvit(ctx).predict(_scvit_data(30, seed=5, batches=("b0", "b2")))


@case("scvit-query-other-genes", "transfer", "an scViT query with other genes than the reference", "raises", "prepare_query_anndata")
def _(ctx):
    q = _scvit_data(30, seed=6, batches=("b2",))
    q.var_names = [*q.var_names[:-1], "NEW"]
    with pytest.warns(UserWarning, match="missing from the query"):
        sa.model.SCVIT.load_query_data(q, _scvit(ctx))


# -- Geneformer (vocabulary and tokens) ------------------------------------------------------------
_TINY_GF = {"n_layers": 1, "d_model": 8, "n_heads": 2, "d_ff": 16, "max_length": 16}


def _geneformer(ctx):
    """A Geneformer whose vocabulary is the tiny data's gene names, trained one epoch (made once)."""
    if "geneformer" not in ctx:
        d = _data(60)
        sa.model.Geneformer.setup_anndata(d, labels_key="label", layer="counts")
        m = sa.model.Geneformer(d, **_TINY_GF)
        m.train(max_epochs=1, batch_size=32, accelerator="cpu")
        ctx["geneformer"] = m
    return ctx["geneformer"]


@case("geneformer-symbols-vs-ensembl", "predict", "data named by symbols for a vocabulary of Ensembl IDs", "raises", "pass `gene_id_key=`")
def _(ctx):
    d = make_counts(40, seed=3)
    d.var_names = [f"ENSG{i:011d}" for i in range(d.n_vars)]
    sa.model.Geneformer.setup_anndata(d, layer="counts")
    m = sa.model.Geneformer(d, **_TINY_GF)
    q = make_counts(20, seed=4)
    q.var_names = [f"SYM{i}" for i in range(q.n_vars)]
    m.get_latent_representation(q)


@case("geneformer-genes-outside-vocabulary", "predict", "genes outside the vocabulary", "warns", "not in the model's vocabulary")
def _(ctx):
    q = _data(20, seed=5)
    q.var_names = [*q.var_names[:-3], "X1", "X2", "X3"]
    _geneformer(ctx).predict(q, inplace=False)


@case("geneformer-no-vocabulary-gene", "training", "cells expressing no vocabulary gene", "raises", "express none of the model's")
def _(ctx):
    d = _data(40, seed=6)
    x = np.hstack([d.layers["counts"].toarray(), np.eye(40, 1, dtype=np.float32)])
    x[0, :-1] = 0
    q = ad.AnnData(sparse.csr_matrix(x), obs=d.obs[[]].copy(), var=pd.DataFrame(index=[*d.var_names, "OUT"]))
    q.layers["counts"] = q.X.copy()
    with pytest.warns(UserWarning, match="not in the model's vocabulary"):
        _geneformer(ctx).pretrain(q, max_epochs=1)


@case("geneformer-too-long", "model", "token sequences longer than the model's positions", "raises", "exceed the model's")
def _(ctx):
    _geneformer(ctx).module.encoder.embed(torch.zeros(1, 17, dtype=torch.long))


@case("geneformer-gene-id-key-elsewhere", "set-up", "gene_id_key for a model without a vocabulary", "raises", "unexpected keyword argument 'gene_id_key'", TypeError)
def _(ctx):
    d = _data(30)
    d.var["ids"] = d.var_names
    sa.model.SIMS.setup_anndata(d, layer="counts", gene_id_key="ids")


@case("geneformer-unknown-perturbed-gene", "tools", "perturbing a gene outside the vocabulary", "raises", "not in the model's vocabulary")
def _(ctx):
    _geneformer(ctx).get_perturbed_representation(_data(20, seed=7), genes=["NOT_A_GENE"])


# -- scGPT (conditions, tasks, response) ------------------------------------------------------------
_TINY_GPT = {"n_layers": 1, "d_model": 8, "n_heads": 2, "d_ff": 16, "max_length": 16}


def _scgpt(ctx):
    """An SCGPT with two conditions on the tiny data, trained one epoch (made once)."""
    if "scgpt" not in ctx:
        d = _data(60)
        d.obs["condition"] = np.where(np.arange(60) % 2, "stimulated", "control")
        sa.model.SCGPT.setup_anndata(d, layer="counts", condition_key="condition")
        m = sa.model.SCGPT(d, **_TINY_GPT)
        m.train(max_epochs=1, accelerator="cpu")
        ctx["scgpt"] = (m, d)
    return ctx["scgpt"]


@case("scgpt-unseen-condition", "predict", "a condition level the model was not trained with", "raises", "level.*not trained with")
def _(ctx):
    m, d = _scgpt(ctx)
    q = d.copy()
    q.obs["condition"] = "IFN-gamma"
    m.get_latent_representation(q)


@case("scgpt-response-unknown-condition", "tools", "a response asked under an unknown condition", "raises", "not one the model was trained with")
def _(ctx):
    m, d = _scgpt(ctx)
    m.predict_response(d, condition="IFN-gamma")


@case("scgpt-condition-key-elsewhere", "set-up", "condition_key for a model without condition tokens", "raises", "unexpected keyword argument 'condition_key'", TypeError)
def _(ctx):
    d = _data(30)
    d.obs["condition"] = "control"
    sa.model.CFAN.setup_anndata(d, labels_key="label", layer="counts", condition_key="condition")


@case("scgpt-dar-without-batches", "training", "adversarial batch removal without batches", "raises", "needs at least two batches")
def _(ctx):
    m, _ = _scgpt(ctx)
    m.train(max_epochs=1, tasks=("gep", "dar"))


@case("scgpt-non-counts", "set-up", "scGPT set up for counts on non-integer values", "raises", "(?i)non-integer|count")
def _(ctx):
    d = _data(30)
    d.layers["counts"] = d.layers["counts"] * 0.37
    sa.model.SCGPT.setup_anndata(d, layer="counts")


@case("scgpt-bad-checkpoint", "model", "a directory that is not an scGPT checkpoint", "raises", "not an scGPT checkpoint", exc=FileNotFoundError)
def _(ctx):
    d = _data(30)
    sa.model.SCGPT.setup_anndata(d, layer="counts")
    sa.model.SCGPT.from_scgpt(ctx["tmp"], d)


# -- issue 25: fresh install, new models' inputs, checkpoints as published -------------------------
@case("setup-csc-array", "set-up", "X as a scipy sparse array in CSC form (csr_array/csc_array are accepted, read per minibatch)", "warns", "CSR")
def _(ctx):
    d = _data(30)
    d.layers["counts"] = sparse.csc_array(d.layers["counts"])
    _set(d)


@case("train-few-cells", "training", "nine cells or fewer: none left for validation at the default train_size", "logs", "none for validation.*without validation")
def _(ctx):
    d = _set(_data(9))
    sa.model.CFAN(d, **TINY_CFAN).train(max_epochs=1)


@case("pretrain-few-cells", "training", "pretraining on nine cells or fewer (none left for validation)", "logs", "pretrain\\(\\): 9 cells leave none for validation")
def _(ctx):
    d = _data(9)
    sa.model.SCGPT.setup_anndata(d, layer="counts")
    sa.model.SCGPT(d, **_TINY_GPT).pretrain(max_epochs=1)


@case("tools-untrained-model", "tools", "a tool given a model that is neither trained nor pretrained", "raises", "neither trained nor pretrained")
def _(ctx):
    d = _data(30)
    sa.model.SCGPT.setup_anndata(d, layer="counts")
    sa.tl.gene_programs(d, sa.model.SCGPT(d, **_TINY_GPT), n_neighbors=5)


def _geneformer_pair(ctx):
    """A pretrained Geneformer and one fine-tuned from it (made once)."""
    if "gf_pair" not in ctx:
        unlabelled, labelled = _data(40, seed=8), _data(40, seed=8)
        sa.model.Geneformer.setup_anndata(unlabelled, layer="counts")
        base = sa.model.Geneformer(unlabelled, **_TINY_GF)
        base.pretrain(max_epochs=1)
        sa.model.Geneformer.setup_anndata(labelled, layer="counts", labels_key="label")
        tuned = sa.model.Geneformer.from_pretrained(base, labelled)
        tuned.train(max_epochs=1)
        ctx["gf_pair"] = (base, tuned, labelled)
    return ctx["gf_pair"]


@case("attention-shift-not-pretrained", "tools", "attention_shift with a never-pretrained model as the pretrained one", "raises", "was never pretrained")
def _(ctx):
    base, tuned, labelled = _geneformer_pair(ctx)
    sa.tl.attention_shift(labelled.copy(), sa.model.Geneformer(base.adata, **_TINY_GF), tuned)


@case("attention-shift-other-lineage", "tools", "attention_shift with a fine-tuned model that comes from another pretrained model", "raises", "not fine-tuned from this `pretrained`")
def _(ctx):
    base, tuned, labelled = _geneformer_pair(ctx)
    other = sa.model.Geneformer(base.adata, **_TINY_GF)
    other.pretrain(max_epochs=2)  # (the same seed and epochs would give the very same weights)
    sa.tl.attention_shift(labelled.copy(), other, tuned)


@case("gene-programs-n-neighbors", "tools", "gene_programs with n_neighbors above the number of model genes", "raises", "n_neighbors=1000 needs at least n_neighbors \\+ 1")
def _(ctx):
    m, d = _scgpt(ctx)
    sa.tl.gene_programs(d.copy(), m, n_neighbors=1000)


@case("scgpt-dar-one-batch", "training", "adversarial batch removal on data set up with batch_key but one batch", "raises", "has one batch")
def _(ctx):
    d = _data(30)
    d.obs["batch"] = "only"
    sa.model.SCGPT.setup_anndata(d, layer="counts", batch_key="batch")
    sa.model.SCGPT(d, **_TINY_GPT).train(max_epochs=1, tasks=("gep", "dar"))


@case("scgpt-response-empty-cells", "tools", "predict_response on cells with no counts on any model gene", "warns", "have no counts on any of the model's .* predicted expression rows are NaN")
def _(ctx):
    m, d = _scgpt(ctx)
    x = np.hstack([d.layers["counts"][:4].toarray(), np.ones((4, 1), dtype=np.float32)])
    x[0, :-1] = 0
    q = ad.AnnData(sparse.csr_matrix(x), obs=d.obs.iloc[:4].copy(), var=pd.DataFrame(index=[*d.var_names, "OUT"]))
    q.layers["counts"] = q.X.copy()
    with pytest.warns(UserWarning, match="not in the model's vocabulary"):
        m.predict_response(q, condition="stimulated")


_SCGPT_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "scgpt_tiny"


def _scgpt_checkpoint_data():
    import json

    ref = np.load(_SCGPT_FIXTURE / "reference.npz")
    inv = {v: k for k, v in json.loads((_SCGPT_FIXTURE / "vocab.json").read_text()).items()}
    a = ad.AnnData(sparse.csr_matrix(ref["counts"]), var=pd.DataFrame(index=[inv[int(i)] for i in ref["col_gene_ids"]]))
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    sa.model.SCGPT.setup_anndata(a)
    return a


@case("scgpt-checkpoint-missing-tensors", "model", "an scGPT args.json with 3 layers beside a best_model.pt with 2", "raises", "lacks 12 tensor\\(s\\)")
def _(ctx):
    import json
    import shutil

    d = ctx["tmp"] / "missing"
    shutil.copytree(_SCGPT_FIXTURE, d, dirs_exist_ok=True)
    args = json.loads((_SCGPT_FIXTURE / "args.json").read_text())
    (d / "args.json").write_text(json.dumps({**args, "nlayers": 3}))
    sa.model.SCGPT.from_scgpt(d, _scgpt_checkpoint_data())


@case("scgpt-checkpoint-truncated", "model", "an scGPT best_model.pt cut in half", "raises", "truncated or corrupt")
def _(ctx):
    import shutil

    d = ctx["tmp"] / "truncated"
    shutil.copytree(_SCGPT_FIXTURE, d, dirs_exist_ok=True)
    data = (d / "best_model.pt").read_bytes()
    (d / "best_model.pt").write_bytes(data[: len(data) // 2])
    sa.model.SCGPT.from_scgpt(d, _scgpt_checkpoint_data())


@case("scgpt-checkpoint-unsupported", "model", "an scGPT args.json with a setting scattn cannot reproduce (pre_norm, avg-pool, ...)", "raises", "cannot reproduce")
def _(ctx):
    import json
    import shutil

    d = ctx["tmp"] / "prenorm"
    shutil.copytree(_SCGPT_FIXTURE, d, dirs_exist_ok=True)
    args = json.loads((_SCGPT_FIXTURE / "args.json").read_text())
    (d / "args.json").write_text(json.dumps({**args, "pre_norm": True}))
    sa.model.SCGPT.from_scgpt(d, _scgpt_checkpoint_data())


@case("geneformer-emb-layer", "model", "a Geneformer embedding layer outside -n_layers..0", "raises", "emb_layer must be an integer from -")
def _(ctx):
    _geneformer(ctx).get_latent_representation(emb_layer=3)


@case("geneformer-embedding-no-vocabulary-gene", "predict", "an embedding of cells with no count on any vocabulary gene", "warns", "have no counts on any of the model's")
def _(ctx):
    d = _data(20, seed=9)
    x = np.hstack([d.layers["counts"].toarray(), np.ones((20, 1), dtype=np.float32)])
    x[0, :-1] = 0
    q = ad.AnnData(sparse.csr_matrix(x), obs=d.obs.copy(), var=pd.DataFrame(index=[*d.var_names, "OUT"]))
    q.layers["counts"] = q.X.copy()
    with pytest.warns(UserWarning, match="not in the model's vocabulary"):
        _geneformer(ctx).get_latent_representation(q)


def _snapshot(x) -> tuple:
    if not isinstance(x, ad.AnnData):
        return ()
    return (tuple(x.obs.columns), tuple(x.obsm.keys()), tuple(x.layers.keys()), tuple(x.uns.keys()),
            x.shape)


@pytest.fixture(scope="module")
def ctx(trained_cfan, tmp_path_factory):
    return {"trained_cfan": trained_cfan, "tmp": tmp_path_factory.mktemp("catalogue")}


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_case(c: Case, ctx, caplog):
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    model_data = ctx["trained_cfan"][1]
    before = _snapshot(model_data)
    if c.expect == "raises":
        with pytest.raises(c.exc, match=c.match):
            c.run(ctx)
    elif c.expect == "warns":
        with pytest.warns(UserWarning, match=c.match):
            c.run(ctx)
    else:
        with caplog.at_level(logging.WARNING, logger="scattn"):
            c.run(ctx)
        assert re.search(c.match, caplog.text), caplog.text
    assert _snapshot(model_data) == before  # the trained model's AnnData is never touched


def test_catalogue_is_large_and_documented():
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)
    text = DOCS.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in text]
    assert not missing, f"docs/checks.md lacks: {missing}"


def catalogue_markdown() -> str:
    """The table of docs/checks.md, from the catalogue (``python -m tests.test_catalogue``)."""
    rows = ["| case | input | what scattn does | message contains |", "|---|---|---|---|"]
    verbs = {"raises": "error", "warns": "warning", "logs": "log line (default verbosity)"}
    for c in CASES:
        kind = f"{c.exc.__name__}" if c.exc else verbs[c.expect]
        shown = c.match.replace("\\", "").replace("|", "\\|")
        rows.append(f"| `{c.id}` | {c.what} | {kind} | {shown} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(catalogue_markdown())
