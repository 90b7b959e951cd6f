"""Results go into an AnnData all-or-nothing; overwrites are said."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from scattn._write import write_results
from tests.conftest import make_counts


def test_failure_after_the_first_key_undoes_everything(caplog):
    adata = make_counts(20)
    adata.obs["a"] = 1.0
    before_obs = adata.obs.copy()
    with pytest.raises(ValueError):
        write_results(adata, [("obs", "a", np.zeros(20)), ("obs", "b", np.ones(20)),
                              ("obsm", "X_bad", np.zeros((3, 2)))], by="test")  # wrong shape
    pd.testing.assert_frame_equal(adata.obs, before_obs)
    assert "X_bad" not in adata.obsm
    with caplog.at_level(logging.WARNING, logger="scattn"):
        write_results(adata, [("obs", "a", np.zeros(20)), ("uns", "u", {})], by="test")
    assert "test overwrites obs['a']" in caplog.text and "uns" not in caplog.text.split("overwrites")[1]
    with pytest.raises(ValueError, match="Unknown AnnData slot"):
        write_results(adata, [("varm", "x", 1)], by="test")


def test_predict_that_fails_midway_leaves_no_trace(trained_cfan, monkeypatch):
    model, _ = trained_cfan
    query = make_counts(30, seed=9)
    query.obs["cfan_prediction"] = "mine"  # the user's own column under the key
    snapshot = (query.obs.copy(), set(query.obsm), set(query.layers), set(query.uns))
    layers_type = type(query.layers)
    original = layers_type.__setitem__

    def fail(self, key, value):
        if key == "cfan_attention":
            raise OSError("forced failure after obs and obsm were written")
        return original(self, key, value)

    monkeypatch.setattr(layers_type, "__setitem__", fail)
    with pytest.raises(OSError, match="forced failure"):
        model.predict(query)
    pd.testing.assert_frame_equal(query.obs, snapshot[0])
    assert (set(query.obsm), set(query.layers), set(query.uns)) == snapshot[1:]


def test_var_columns_are_written_all_or_nothing():
    adata = make_counts(20, n_genes=20)
    adata.var["mine"] = "kept"
    before = adata.var.copy()
    column = pd.Series(pd.Categorical(["p1"] * 20), index=adata.var_names)
    with pytest.raises(ValueError):
        write_results(adata, [("var", "mine", column), ("var", "new", np.arange(20)),
                              ("obsm", "X_bad", np.zeros((3, 2)))], by="test")  # wrong shape
    pd.testing.assert_frame_equal(adata.var, before)
    write_results(adata, [("var", "program", column), ("uns", "program", {})], by="test")
    assert list(adata.var["program"]) == ["p1"] * 20 and "program" in adata.uns
