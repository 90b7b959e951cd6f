import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import scattn as sa
from scattn.tl import attention_markers


def _planted(n_per=30, n_genes=40, k=5, seed=0):
    """Attention where group g's cells put their top weights on genes 5g..5g+4."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(["a", "b", "c"], n_per)
    att = rng.random((len(groups), n_genes)) * 0.1
    for gi, g in enumerate("abc"):
        att[groups == g, 5 * gi : 5 * gi + 5] += 1.0
    return sparse.csr_matrix(att), pd.Categorical(groups), pd.Index([f"g{j}" for j in range(n_genes)])


def test_planted_markers_rank_first():
    att, groups, genes = _planted()
    res = attention_markers(att, groups, genes, n_top=5, n_genes=10)
    for gi, g in enumerate("abc"):
        assert set(res["names"][g][:5]) == {f"g{j}" for j in range(5 * gi, 5 * gi + 5)}
        assert (res["scores"][g][:5] == 1.0).all()  # picked by all of g, by none of the others
        assert (res["pvals_adj"][g][:5] < 1e-10).all()
        assert np.all(np.diff(res["scores"][g]) <= 0)
    assert res["pts"].loc["g0", "a"] == 1.0 and res["pts_rest"].loc["g0", "a"] == 0.0


def test_markers_leave_the_attention_matrix_untouched():
    """A float32 CSR layer (what predict writes) with explicit zeros and more than n_top
    weights per cell: picking the top weights once rewrote its arrays in place (the layer's
    indptr said n_top per row, its data did not, and later reads corrupted memory)."""
    att, groups, genes = _planted()
    att = att.astype(np.float32)
    att.data[::7] = 0  # explicit zeros
    before = (att.data.copy(), att.indices.copy(), att.indptr.copy())
    attention_markers(att, groups, genes, n_top=3, n_genes=5)
    for now, then in zip((att.data, att.indices, att.indptr), before, strict=True):
        np.testing.assert_array_equal(now, then)


def test_contrast_rest_keeps_markers_shared_by_related_groups():
    """A gene picked by all cells of a and b (not c) scores 0 against the max other group,
    and P(a) - P(rest) = 1 - 30/60 = 0.5 against the rest, which ranks it first for a."""
    att, groups, genes = _planted()
    att = att.toarray()
    att[np.asarray(groups) != "c", 39] += 2.0  # g39: shared by a and b
    att[np.asarray(groups) == "c", 38] += 2.0  # c's sixth pick, so no pick is left to chance
    res = attention_markers(sparse.csr_matrix(att), groups, genes, n_top=6, n_genes=40)
    assert res["scores"]["a"][list(res["names"]["a"]).index("g39")] == 0.0
    assert res["params"]["contrast"] == "max_other"
    rest = attention_markers(sparse.csr_matrix(att), groups, genes, n_top=6, n_genes=40, contrast="rest")
    assert rest["names"]["a"][0] in {f"g{j}" for j in range(5)}  # its own markers: 1 - 0
    pos = list(rest["names"]["a"]).index("g39")
    assert pos == 5 and np.isclose(rest["scores"]["a"][pos], 0.5)
    assert rest["names"]["c"][5] != "g39" and rest["params"]["contrast"] == "rest"
    with pytest.raises(ValueError, match="contrast must be"):
        attention_markers(sparse.csr_matrix(att), groups, genes, contrast="max")


def test_tool_writes_rank_genes_groups_layout():
    att, groups, genes = _planted()
    adata = sc.AnnData(X=np.ones((len(groups), len(genes))), obs=pd.DataFrame({"ct": groups}))
    adata.var_names = genes
    adata.layers["m_attention"] = att
    sa.tl.marker_genes_from_attention(adata, groupby="ct", layer="m_attention", n_top=5)
    assert adata.uns["m_markers"]["params"]["groupby"] == "ct"
    df = sc.get.rank_genes_groups_df(adata, group="b", key="m_markers")
    assert set(df["names"][:5]) == {"g5", "g6", "g7", "g8", "g9"}
    out = sa.tl.marker_genes_from_attention(adata, groupby="ct", layer="m_attention", key_added="x", copy=True)
    assert "x" in out.uns and "x" not in adata.uns
    # default groupby: the predictions written with the layer
    adata.obs["m_prediction"] = adata.obs["ct"]
    sa.tl.marker_genes_from_attention(adata, layer="m_attention", key_added="y")
    assert adata.uns["y"]["params"]["groupby"] == "m_prediction"
    sa.tl.marker_genes_from_attention(adata, layer="m_attention", key_added="z", contrast="rest")
    assert adata.uns["z"]["params"]["contrast"] == "rest"


def test_tool_errors():
    att, groups, genes = _planted()
    adata = sc.AnnData(X=np.ones((len(groups), len(genes))), obs=pd.DataFrame({"ct": groups}))
    adata.var_names = genes
    with pytest.raises(KeyError, match="Layer 'cgran_attention' not found.*predict"):
        sa.tl.marker_genes_from_attention(adata, groupby="ct", layer="cgran_attention")
    with pytest.raises(ValueError, match=r"No scattn model results.*model.predict\(adata\).*`layer=`"):
        sa.tl.marker_genes_from_attention(adata, groupby="ct")  # no layer, no model to take it from
    adata.layers["cgran_attention"] = att
    with pytest.raises(KeyError, match="groupby 'nope'"):
        sa.tl.marker_genes_from_attention(adata, groupby="nope", layer="cgran_attention")
    with pytest.raises(ValueError, match="n_top must be"):
        sa.tl.marker_genes_from_attention(adata, groupby="ct", layer="cgran_attention", n_top=0)


def test_model_markers_find_planted_genes(trained):
    """Trained briefly on data with planted markers, attention picks some of them."""
    model, adata = trained
    adata = adata.copy()
    model.predict(adata)
    sa.tl.marker_genes_from_attention(adata, groupby="cell_type", key_added="by_truth", n_top=10)
    names = adata.uns["by_truth"]["names"]
    assert names.dtype.names == ("type0", "type1", "type2")


def test_gene_sets(trained):
    model, adata = trained
    adata = adata.copy()
    model.predict(adata)
    sa.tl.gene_sets_from_attention(adata, model, n_genes=3)
    res = adata.uns["cgran_gene_sets"]
    genes = res["genes"]
    assert res["attention"].shape == (len(genes), len(genes))
    assert np.allclose(res["attention"], res["attention"].T)
    assert sorted(g for s in res["gene_sets"].values() for g in s) == sorted(genes)
    assert res["params"]["n_sets"] == len(adata.uns["cgran_markers"]["names"].dtype.names)
    with pytest.raises(KeyError, match="No markers"):
        sa.tl.gene_sets_from_attention(adata, model, key="nope")
    with pytest.raises(ValueError, match="n_sets must be"):
        sa.tl.gene_sets_from_attention(adata, model, n_genes=2, n_sets=100)


def test_results_write_to_h5ad(trained, tmp_path):
    model, adata = trained
    adata = adata.copy()
    model.predict(adata)
    sa.tl.gene_sets_from_attention(adata, model, n_genes=3)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = sc.read_h5ad(tmp_path / "a.h5ad")
    df = sc.get.rank_genes_groups_df(back, group=None, key="cgran_markers")
    assert len(df) > 0 and "cgran_gene_sets" in back.uns
