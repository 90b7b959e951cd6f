"""sa.tl.gene_programs and sa.tl.gene_network on a fake scGPT-like model with planted gene
programs (embeddings) and a planted strong attention edge."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scattn as sa

GROUPS = {
    "A": [f"A{i}" for i in range(8)],
    "B": [f"B{i}" for i in range(8)],
    "C": [f"C{i}" for i in range(8)],
}
MODEL_GENES = [g for group in GROUPS.values() for g in group]


class FakeSCGPT:
    """Duck-typed scGPT: 3 groups of 8 genes whose embeddings share a direction per group
    (plus noise), and gene-gene attention with one planted strong edge A0 -> C5."""

    def __init__(self, genes=MODEL_GENES, d: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.var_names_ = pd.Index(genes)
        centres = rng.normal(size=(3, d)) * 3.0
        group = np.arange(len(genes)) // 8 % 3
        self._emb = centres[group] + rng.normal(size=(len(genes), d))
        att = rng.uniform(0.0, 0.1, size=(len(genes), len(genes)))
        att[0, 21] = 0.9  # A0 -> C5
        att[9, 10] = np.nan  # B1, B2: never together in a cell
        self._att = att
        self.calls: list[dict] = []

    def get_gene_embeddings(self) -> pd.DataFrame:
        return pd.DataFrame(self._emb, index=self.var_names_)

    def get_gene_attention(self, adata=None, indices=None, *, genes=None, batch_size=None) -> pd.DataFrame:
        self.calls.append({"adata": adata, "indices": indices, "batch_size": batch_size})
        return pd.DataFrame(self._att, index=self.var_names_, columns=self.var_names_)


def make_cells(n_cells: int = 20, extra: tuple[str, ...] = ("X0", "X1")) -> ad.AnnData:
    """Cells with the model's genes in another order, plus genes the model lacks, and an
    Ensembl-like ID column."""
    rng = np.random.default_rng(1)
    names = list(reversed(MODEL_GENES)) + list(extra)
    adata = ad.AnnData(
        X=rng.poisson(1.0, size=(n_cells, len(names))).astype(np.float32),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(len(names))]}, index=names),
    )
    return adata


@pytest.fixture
def model():
    return FakeSCGPT()


@pytest.fixture
def cells():
    return make_cells()


def _snapshot(adata):
    return (
        adata.obs.copy(),
        adata.var.copy(),
        dict(adata.uns),
        set(adata.obsm),
        set(adata.layers),
        adata.X.copy(),
    )


def test_gene_programs_recovers_planted_groups(model, cells, tmp_path):
    before = _snapshot(cells)
    with pytest.warns(UserWarning, match="2 of the 26 genes.*left out"):
        assert sa.tl.gene_programs(cells, model) is None
    programs = cells.uns["gene_programs"]["programs"]
    assert list(programs) == ["program 1", "program 2", "program 3"]
    assert sorted(sorted(m) for m in programs.values()) == sorted(
        sorted(g) for g in GROUPS.values()
    )
    for members in programs.values():  # in adata's gene order
        assert members == [g for g in cells.var_names if g in members]
    column = cells.var["gene_programs"]
    assert isinstance(column.dtype, pd.CategoricalDtype)
    assert list(column.cat.categories) == list(programs)
    assert column[["X0", "X1"]].isna().all()
    for program, members in programs.items():
        assert (column[members] == program).all()
    params = cells.uns["gene_programs"]["params"]
    assert params == {
        "model_class": "FakeSCGPT",
        "n_neighbors": 15,
        "resolution": 1.0,
        "min_size": 3,
        "metric": "cosine",
        "gene_id_key": None,
        "random_state": 0,
        "n_genes": 24,
        "n_programs": 3,
    }
    # nothing else changed
    obs, var, uns, obsm, layers, x = before
    pd.testing.assert_frame_equal(cells.obs, obs)
    pd.testing.assert_frame_equal(cells.var.drop(columns="gene_programs"), var)
    assert set(cells.uns) == set(uns) | {"gene_programs"}
    assert (set(cells.obsm), set(cells.layers)) == (obsm, layers)
    np.testing.assert_array_equal(cells.X, x)
    cells.write_h5ad(tmp_path / "programs.h5ad")
    back = ad.read_h5ad(tmp_path / "programs.h5ad")
    assert list(back.uns["gene_programs"]["programs"]["program 1"]) == programs["program 1"]


def test_gene_programs_deterministic_subset_and_min_size(model, cells):
    genes = GROUPS["A"] + GROUPS["B"] + ["C0", "C1"]
    sa.tl.gene_programs(cells, model, genes=genes, n_neighbors=5, key_added="sub")
    again = cells.copy()
    sa.tl.gene_programs(again, model, genes=genes, n_neighbors=5, key_added="sub")
    assert cells.uns["sub"]["programs"] == again.uns["sub"]["programs"]
    programs = cells.uns["sub"]["programs"]
    assert sorted(sorted(m) for m in programs.values()) == sorted([GROUPS["A"], GROUPS["B"]])
    column = cells.var["sub"]
    assert column[["C0", "C1"]].isna().all()  # a cluster of 2 < min_size
    assert column[GROUPS["C"][2:]].isna().all()  # not chosen
    assert cells.uns["sub"]["params"]["n_genes"] == 18
    # a boolean mask over adata.var works like names
    mask = cells.var_names.isin(genes)
    sa.tl.gene_programs(cells, model, genes=mask, n_neighbors=5, key_added="mask")
    assert cells.uns["mask"]["programs"] == programs


def test_gene_programs_by_id_column_and_copy(model, cells):
    ids = cells.var["gene_id"].to_numpy()
    renamed = FakeSCGPT(genes=list(ids[:24][::-1]))  # the model knows the cells' IDs only
    renamed._emb = model._emb  # same embeddings per gene, in the model's own order
    with pytest.warns(UserWarning, match="left out"):
        out = sa.tl.gene_programs(cells, renamed, gene_id_key="gene_id", copy=True)
    assert "gene_programs" not in cells.var and "gene_programs" not in cells.uns
    programs = out.uns["gene_programs"]["programs"]  # named by var_names, not IDs
    assert sorted(sorted(m) for m in programs.values()) == sorted(
        sorted(g) for g in GROUPS.values()
    )
    assert out.uns["gene_programs"]["params"]["gene_id_key"] == "gene_id"


def test_gene_programs_errors(model, cells):
    before = _snapshot(cells)
    with pytest.raises(TypeError, match="scGPT-like model with `get_gene_embeddings`"):
        sa.tl.gene_programs(cells, object())
    with pytest.raises(ValueError, match=r"not in adata.var_names: \['NOPE'\]"):
        sa.tl.gene_programs(cells, model, genes=["A0", "NOPE"])
    with pytest.raises(ValueError, match=r"n_neighbors=15 needs at least.*16 genes.*4 of the "
                       r"chosen genes.*n_neighbors=3 or less"):
        sa.tl.gene_programs(cells, model, genes=["A0", "A1", "A2", "A3"])
    with pytest.warns(UserWarning, match="left out"), pytest.raises(
            ValueError, match=r"n_neighbors=1000 .*Pass n_neighbors=23 or less"):
        sa.tl.gene_programs(cells, model, n_neighbors=1000)  # not the genes' fault
    with pytest.raises(ValueError, match="only 1 of the 3 genes.*need at least 3"):
        sa.tl.gene_programs(cells, model, genes=["A0", "X0", "X1"], min_size=3)
    symbols = make_cells()
    symbols.var_names = [f"SYM{i}" for i in range(symbols.n_vars)]
    with pytest.raises(ValueError, match="only 0 of the 26.*A0.*SYM.*gene_id_key="):
        sa.tl.gene_programs(symbols, model)
    with pytest.raises(KeyError, match="gene_id_key 'nope'"):
        sa.tl.gene_programs(cells, model, gene_id_key="nope")
    for bad in ({"n_neighbors": 1}, {"min_size": 0}, {"resolution": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            sa.tl.gene_programs(cells, model, **bad)
    obs, var, uns, *_ = before
    pd.testing.assert_frame_equal(cells.var, var)
    assert dict(cells.uns) == uns


def test_gene_programs_none_big_enough(model, cells, caplog):
    with caplog.at_level(logging.WARNING, logger="scattn"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sa.tl.gene_programs(cells, model, min_size=9)
    assert "no cluster has 9 or more genes" in caplog.text
    assert cells.uns["gene_programs"]["programs"] == {}
    assert cells.var["gene_programs"].isna().all()


def test_gene_network_planted_edge(model, cells, tmp_path):
    before = _snapshot(cells)
    with pytest.warns(UserWarning, match="left out"):
        sa.tl.gene_network(cells, model, top_k=3, batch_size=7)
    assert model.calls[-1]["adata"] is cells and model.calls[-1]["batch_size"] == 7
    result = cells.uns["gene_network"]
    edges = result["edges"]
    assert list(edges.columns) == ["source", "target", "weight"]
    assert (edges["source"] != edges["target"]).all()
    assert edges.groupby("source").size().max() == 3 and len(edges) == 24 * 3
    # sources in adata's gene order, then by decreasing weight
    order = {g: i for i, g in enumerate(cells.var_names)}
    assert list(edges["source"].map(order)) == sorted(edges["source"].map(order))
    for _, group in edges.groupby("source"):
        assert group["weight"].is_monotonic_decreasing
    first = edges[edges["source"] == "A0"].iloc[0]
    assert (first["target"], first["weight"]) == ("C5", pytest.approx(0.9))
    assert not (
        (edges["source"] == "C5") & (edges["target"] == "A0") & (edges["weight"] > 0.5)
    ).any()  # directed: no reverse strong edge
    assert not ((edges["source"] == "B1") & (edges["target"] == "B2")).any()  # NaN ignored
    att = model.get_gene_attention()
    for _, row in edges.iterrows():
        assert row["weight"] == pytest.approx(att.loc[row["source"], row["target"]])
    assert result["params"] == {
        "model_class": "FakeSCGPT",
        "top_k": 3,
        "min_weight": 0.0,
        "gene_id_key": None,
        "n_genes": 24,
        "n_edges": 72,
        "n_cells": 20,
    }
    obs, var, uns, obsm, layers, _ = before
    pd.testing.assert_frame_equal(cells.var, var)
    assert set(cells.uns) == set(uns) | {"gene_network"}
    cells.write_h5ad(tmp_path / "network.h5ad")
    back = ad.read_h5ad(tmp_path / "network.h5ad").uns["gene_network"]["edges"]
    assert list(back["target"])[:1] == list(edges["target"])[:1]


def test_gene_network_min_weight_genes_and_copy(model, cells):
    out = sa.tl.gene_network(
        cells, model, genes=GROUPS["A"] + ["C5"], min_weight=0.5, key_added="strong", copy=True
    )
    assert "strong" not in cells.uns
    edges = out.uns["strong"]["edges"]
    assert edges[["source", "target"]].values.tolist() == [["A0", "C5"]]
    assert out.uns["strong"]["params"]["n_genes"] == 9


def test_gene_network_by_id_column(model, cells):
    ids = pd.Series(cells.var["gene_id"].to_numpy(), index=cells.var_names)
    renamed = FakeSCGPT(genes=[ids[g] for g in MODEL_GENES])
    renamed._att = model._att
    with pytest.warns(UserWarning, match="left out"):
        sa.tl.gene_network(cells, renamed, gene_id_key="gene_id", top_k=1)
    edges = cells.uns["gene_network"]["edges"]
    assert edges.loc[edges["source"] == "A0", "target"].tolist() == ["C5"]  # var_names


def test_gene_network_asks_the_model_for_its_genes(cells):
    class AsksGenes:  # the one signature: get_gene_attention(adata, indices, *, genes, batch_size)
        var_names_ = pd.Index(MODEL_GENES)

        def get_gene_attention(self, adata=None, indices=None, *, genes=None, batch_size=None):
            self.asked = list(genes)
            w = np.full((len(genes), len(genes)), 0.1)
            w[0, -1] = 0.8
            return pd.DataFrame(w, index=genes, columns=genes)

    model = AsksGenes()
    sa.tl.gene_network(cells, model, genes=["A0", "A1", "B0"], top_k=1)
    assert model.asked == ["B0", "A1", "A0"]  # in adata's order
    edges = cells.uns["gene_network"]["edges"]
    assert edges.iloc[0][["source", "target", "weight"]].tolist() == ["B0", "A0", 0.8]


def test_gene_network_errors(model, cells):
    before = dict(cells.uns)
    with pytest.raises(TypeError, match="scGPT-like model with `get_gene_attention`"):
        sa.tl.gene_network(cells, object())
    with pytest.raises(ValueError, match="top_k must be"):
        sa.tl.gene_network(cells, model, top_k=0)
    with pytest.raises(ValueError, match="min_weight must be"):
        sa.tl.gene_network(cells, model, min_weight=float("nan"))
    with pytest.raises(ValueError, match=r"not in adata.var_names: \['NOPE'\]"):
        sa.tl.gene_network(cells, model, genes=["NOPE"])
    with pytest.raises(ValueError, match="only 1 of the 2 genes.*need at least 2"):
        sa.tl.gene_network(cells, model, genes=["A0", "X0"])
    with pytest.raises(ValueError, match="no cells"):
        sa.tl.gene_network(cells[:0].copy(), model)
    assert dict(cells.uns) == before
