"""Tools find the key a model wrote: one result is used, none or several are clear errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import scattn as sa
from scattn._read import find_key, model_results
from tests.conftest import make_counts


def _fake_result(adata: ad.AnnData, key: str, model: str = "CGRAN", *, seed: int = 0) -> None:
    """Write what a model's predict writes (prediction, confidence, attention, markers, params)."""
    rng = np.random.default_rng(seed)
    groups = pd.Categorical(np.array(["a", "b"])[np.arange(adata.n_obs) % 2])
    adata.obs[f"{key}_prediction"] = groups
    adata.obs[f"{key}_confidence"] = rng.uniform(0.5, 1.0, adata.n_obs)
    att = rng.random((adata.n_obs, adata.n_vars))
    adata.layers[f"{key}_attention"] = sparse.csr_matrix(att)
    adata.uns[f"{key}_markers"] = sa.tl.attention_markers(att, groups, adata.var_names, n_top=3)
    adata.uns[key] = {"params": {"model": model, "scattn_version": sa.__version__, "key_added": key}}


def _blank(n_obs: int = 20, n_vars: int = 8) -> ad.AnnData:
    return ad.AnnData(
        X=np.ones((n_obs, n_vars), dtype=np.float32),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n_obs)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_vars)]),
    )


# -- the helper --------------------------------------------------------------------------------
def test_find_key_one_result():
    adata = _blank()
    _fake_result(adata, "mine", "CFAN")
    adata.uns["novelty"] = {"params": {"key": "mine"}}  # a tool's record is not a model result
    adata.uns["copied"] = {"params": {"model": "CFAN", "scattn_version": "0", "key_added": "other"}}
    assert list(model_results(adata)) == ["mine"]
    assert find_key(adata) == "mine"
    assert find_key(adata, needs=("attention", "prediction", "markers", "confidence")) == "mine"


def test_find_key_none_says_what_to_run():
    adata = _blank()
    with pytest.raises(ValueError, match=r"No scattn model results.*`model.predict\(adata\)`.*`layer=`"):
        find_key(adata, needs=("attention",), argument="layer")
    with pytest.raises(ValueError, match=r"predict\(adata\)` then `sa.tl.gene_sets_from_attention"):
        find_key(adata, needs=("gene_sets",))
    _fake_result(adata, "cgran")
    del adata.layers["cgran_attention"]
    with pytest.raises(ValueError, match=r"'cgran' \(CGRAN\) lacks layers\['cgran_attention'\]"):
        find_key(adata, needs=("attention", "prediction"))
    with pytest.raises(ValueError, match="Unknown slots"):
        find_key(adata, needs=("nope",))
    with pytest.raises(TypeError, match="Expected an AnnData"):
        find_key(adata.obs)


def test_find_key_several_lists_them():
    adata = _blank()
    _fake_result(adata, "cgran", "CGRAN")
    _fake_result(adata, "sims", "SIMS", seed=1)
    with pytest.raises(ValueError, match=r"several.*'cgran' \(CGRAN\), 'sims' \(SIMS\).*"
                                         r"key='cgran_markers' or key='sims_markers'"):
        find_key(adata, needs=("markers",), template="{key}_markers")
    assert find_key(adata, needs=("markers",), model="SIMS") == "sims"  # preferred class
    del adata.obs["sims_confidence"]
    assert find_key(adata, needs=("confidence",)) == "cgran"  # the only one with what is needed


def test_find_key_after_h5ad_round_trip(trained_cfan, tmp_path):
    model, adata = trained_cfan
    adata = adata.copy()
    model.predict(adata)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = sc.read_h5ad(tmp_path / "a.h5ad")
    assert find_key(back, needs=("attention", "prediction", "markers", "confidence")) == "cfan"


# -- tools with no key, on models other than CGRAN ----------------------------------------------
def test_markers_with_no_key(predicted_other):
    key, _, adata = predicted_other
    written = adata.uns[f"{key}_markers"]
    sa.tl.marker_genes_from_attention(adata, n_top=10)
    res = adata.uns[f"{key}_markers"]
    assert res is not written
    assert res["params"]["attention_layer"] == f"{key}_attention"
    assert res["params"]["groupby"] == f"{key}_prediction"
    sa.tl.marker_genes_from_attention(adata, groupby="cell_type", key_added="by_truth", n_top=10)
    assert adata.uns["by_truth"]["params"]["attention_layer"] == f"{key}_attention"
    assert adata.uns["by_truth"]["names"].dtype.names == ("type0", "type1", "type2")


def test_novelty_and_threshold_with_no_key(predicted_other):
    key, _, adata = predicted_other
    t = sa.tl.unknown_threshold(adata, p_ref=0.1)
    assert np.isclose(t, np.quantile(adata.obs[f"{key}_confidence"], 0.1))
    sa.tl.novelty(adata, adata, p_ref=0.1, groupby="cell_type")
    assert adata.uns["novelty"]["params"]["key"] == key
    assert adata.uns["novelty"]["table"]["n_cells"].sum() == adata.n_obs


def test_evaluate_with_no_prediction_key(predicted_other):
    key, _, adata = predicted_other
    res = sa.tl.evaluate(adata, "cell_type")
    assert adata.uns["evaluation"]["params"]["prediction_key"] == f"{key}_prediction"
    assert res["n_cells"] == adata.n_obs


def test_two_models_are_ambiguous_until_named(both_predicted):
    adata = both_predicted
    listing = r"'cfan' \(CFAN\), 'sims' \(SIMS\)"
    with pytest.raises(ValueError, match=listing + r".*layer='cfan_attention' or layer='sims_attention'"):
        sa.tl.marker_genes_from_attention(adata)
    with pytest.raises(ValueError, match=listing + ".*key='cfan' or key='sims'"):
        sa.tl.novelty(adata, adata, p_ref=0.1)
    with pytest.raises(ValueError, match=listing):
        sa.tl.unknown_threshold(adata)
    with pytest.raises(ValueError, match=listing + ".*prediction_key='cfan_prediction'"):
        sa.tl.evaluate(adata, "cell_type")
    # named, as before
    sa.tl.marker_genes_from_attention(adata, layer="sims_attention", key_added="m")
    assert adata.uns["m"]["params"]["groupby"] == "sims_prediction"
    sa.tl.novelty(adata, adata, p_ref=0.1, key="cfan")
    assert adata.uns["novelty"]["params"]["key"] == "cfan"
    assert 0 < sa.tl.unknown_threshold(adata, key="sims") < 1


def test_no_model_results_is_a_clear_error():
    adata = make_counts()
    with pytest.raises(ValueError, match=r"No scattn model results.*model.predict\(adata\)"):
        sa.tl.marker_genes_from_attention(adata)
    with pytest.raises(ValueError, match=r"model.predict\(adata\).*`key=`"):
        sa.tl.novelty(adata, 0.05, threshold=0.5)
    with pytest.raises(ValueError, match="No scattn model results"):
        sa.tl.evaluate(adata, "cell_type")
    assert sa.tl.unknown_threshold(np.linspace(0.2, 1, 11), p_ref=0.1) > 0  # arrays need no key


def test_gene_sets_need_a_cgran(trained, trained_cfan):
    cgran, _ = trained
    cfan, adata = trained_cfan
    adata = adata.copy()
    cfan.predict(adata)
    with pytest.raises(TypeError, match=r"CFAN has no gene-to-gene attention.*CGRAN"):
        sa.tl.gene_sets_from_attention(adata, cfan)
    with pytest.raises(TypeError, match="got model=None"):
        sa.tl.gene_sets_from_attention(adata, None)
    assert not any(k.endswith("_gene_sets") for k in adata.uns)
    # with CFAN's and CGRAN's results, a CGRAN model takes its own markers
    cgran.predict(adata)
    sa.tl.gene_sets_from_attention(adata, cgran, n_genes=3)
    assert adata.uns["cgran_gene_sets"]["params"]["markers_key"] == "cgran_markers"
    # CGRAN's attention among CFAN's markers, when asked for
    sa.tl.gene_sets_from_attention(adata, cgran, key="cfan_markers", n_genes=3)
    assert adata.uns["cfan_gene_sets"]["params"]["markers_key"] == "cfan_markers"
    # the old name of `key` warns for one release and gives the same result
    new = adata.uns.pop("cfan_gene_sets")
    with pytest.warns(FutureWarning, match=r"gene_sets_from_attention\(markers_key=...\) is deprecated.*key="):
        sa.tl.gene_sets_from_attention(adata, cgran, markers_key="cfan_markers", n_genes=3)
    pd.testing.assert_frame_equal(adata.uns["cfan_gene_sets"]["attention"], new["attention"])
    with pytest.raises(TypeError, match="both markers_key= and key="):
        sa.tl.gene_sets_from_attention(adata, cgran, markers_key="cfan_markers", key="cfan_markers")
