"""sa.tl.attention_shift and sa.tl.in_silico_perturbation on a tiny pretrained and
fine-tuned Geneformer."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import scattn as sa

ARCH = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_ff": 32, "max_length": 32}


def make_data(n_cells: int = 80, n_genes: int = 60, seed: int = 0) -> ad.AnnData:
    """Poisson counts of two groups: A over-expresses genes MA0..MA4, B genes MB0..MB4; the
    last gene, ``SILENT``, is expressed by no cell."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(["A", "B"], n_cells // 2)
    lam = np.ones((n_cells, n_genes))
    lam[groups == "A", :5] += 6.0
    lam[groups == "B", 5:10] += 6.0
    x = rng.poisson(lam).astype(np.float32)
    x[:, -1] = 0
    names = [f"MA{i}" for i in range(5)] + [f"MB{i}" for i in range(5)]
    names += [f"G{j}" for j in range(10, n_genes - 1)] + ["SILENT"]
    return ad.AnnData(
        X=sparse.csr_matrix(x),
        obs=pd.DataFrame({"cell_type": pd.Categorical(groups)},
                         index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=names),
    )


def geneformer_pair():
    """(pretrained, fine-tuned, labelled AnnData): 1 epoch of pretraining, 1 of fine-tuning."""
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    unlabelled = make_data()
    labelled = unlabelled.copy()  # before setup: each AnnData is registered on its own
    sa.model.Geneformer.setup_anndata(unlabelled)
    base = sa.model.Geneformer(unlabelled, **ARCH)
    base.pretrain(max_epochs=1)
    sa.model.Geneformer.setup_anndata(labelled, labels_key="cell_type")
    finetuned = sa.model.Geneformer.from_pretrained(base, labelled)
    finetuned.train(max_epochs=1)
    return base, finetuned, labelled


@pytest.fixture(scope="module")
def pair():
    return geneformer_pair()


@pytest.fixture
def cells(pair):
    """A fresh copy of the labelled cells (tests write into it)."""
    return pair[2].copy()


def test_attention_shift_writes_tables(pair, cells, tmp_path):
    base, ft, _ = pair
    assert sa.tl.attention_shift(cells, base, ft) is None
    result = cells.uns["attention_shift"]
    assert set(result) == {"params", "pretrained", "finetuned", "percent_change", "norms", "count"}
    heads = ["layer 1 head 1", "layer 1 head 2", "layer 2 head 1", "layer 2 head 2"]
    n_used = ARCH["max_length"] - 1  # every cell has > 31 genes; <cls> takes one token
    for field in ("pretrained", "finetuned", "percent_change"):
        table = result[field]
        assert list(table.index) == heads
        assert list(table.columns) == [str(r) for r in range(1, n_used + 1)]
    pt, ft_ = result["pretrained"].to_numpy(), result["finetuned"].to_numpy()
    assert np.isfinite(pt).all() and (pt > 0).all()
    np.testing.assert_allclose(result["percent_change"].to_numpy(), 100 * (ft_ - pt) / pt)
    norms = result["norms"]
    assert list(norms.index) == heads
    assert {"layer", "head", "pretrained", "finetuned", "percent_change"} <= set(norms.columns)
    assert list(norms["layer"]) == [1, 1, 2, 2] and list(norms["head"]) == [1, 2, 1, 2]
    assert (norms[["pretrained", "finetuned"]].to_numpy() > 0).all()
    assert result["count"].shape == (n_used, 2) and (result["count"].to_numpy() == cells.n_obs).all()
    params = result["params"]
    assert params["n_ranks"] == 256 and params["n_ranks_used"] == n_used
    assert (params["n_layers"], params["n_heads"], params["n_cells"]) == (2, 2, cells.n_obs)
    assert params["pretrained_class"] == params["finetuned_class"] == "Geneformer"
    assert "model" not in params  # a tool result, not a model's prediction record
    cells.write_h5ad(tmp_path / "shift.h5ad")
    back = ad.read_h5ad(tmp_path / "shift.h5ad").uns["attention_shift"]
    pd.testing.assert_frame_equal(back["percent_change"], result["percent_change"])


def test_attention_shift_bins_and_copy(pair, cells):
    base, ft, _ = pair
    out = sa.tl.attention_shift(cells, base, ft, n_ranks=20, rank_bins=4, key_added="binned",
                                copy=True)
    assert "binned" not in cells.uns
    result = out.uns["binned"]
    assert list(result["percent_change"].columns) == ["1-5", "6-10", "11-15", "16-20"]
    assert result["params"]["n_bins"] == 4 and result["count"].shape == (20, 2)
    # every rank has all cells here, so a bin is the plain mean of its ranks
    full = out.uns["binned"]["pretrained"]
    sa.tl.attention_shift(out, base, ft, n_ranks=20, key_added="ranks")
    per_rank = out.uns["ranks"]["pretrained"].to_numpy()
    np.testing.assert_allclose(full.to_numpy(), per_rank.reshape(4, 4, 5).mean(-1), rtol=1e-6)


def test_attention_shift_errors(pair, cells):
    base, ft, _ = pair
    other = sa.model.Geneformer(base.adata, **{**ARCH, "n_layers": 3})
    with pytest.raises(ValueError, match="finetuned.*neither trained nor pretrained"):
        sa.tl.attention_shift(cells, base, other)
    with pytest.raises(ValueError, match="pretrained.*was never pretrained"):
        sa.tl.attention_shift(cells, other, ft)
    with pytest.raises(ValueError, match="same model"):
        sa.tl.attention_shift(cells, ft, ft)
    with pytest.raises(TypeError, match="Geneformer-like"):
        sa.tl.attention_shift(cells, object(), ft)
    for bad in ({"n_ranks": 0}, {"rank_bins": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            sa.tl.attention_shift(cells, base, ft, **bad)
    assert "attention_shift" not in cells.uns


def test_attention_shift_checks_lineage(pair, cells, tmp_path):
    """The fine-tuned model must come from the pretrained one's very weights, also saved and
    loaded; another pretrained model, or one trained on since, is refused."""
    base, ft, labelled = pair
    base.save(tmp_path / "base")
    loaded = sa.model.Geneformer.load(tmp_path / "base", adata=base.adata)
    ft.save(tmp_path / "ft")
    ft_loaded = sa.model.Geneformer.load(tmp_path / "ft", adata=labelled)
    sa.tl.attention_shift(cells.copy(), loaded, ft_loaded)  # the same lineage across save/load
    fresh = sa.model.Geneformer.from_pretrained(base, labelled)
    with pytest.raises(ValueError, match="not been trained since"):
        sa.tl.attention_shift(cells, base, fresh)
    # the lineage ignores what depends on the data: the same weights on other cells, a new head
    other_cells = sa.model.Geneformer.from_pretrained(tmp_path / "base", labelled)
    assert other_cells.pretrained_from_ == fresh.pretrained_from_ == ft.pretrained_from_
    # pretrain() then train() on one model: its pretrained state is its lineage
    assert base.pretrained_from_ == ft.pretrained_from_
    scratch = sa.model.Geneformer(labelled, **ARCH)
    scratch.train(max_epochs=1)
    with pytest.warns(UserWarning, match="records no pretrained weights"):
        sa.tl.attention_shift(cells.copy(), base, scratch)  # trained from scratch: not checkable
    other = sa.model.Geneformer(base.adata, **ARCH)
    other.pretrain(max_epochs=2)  # the same seed and epochs would give the very same weights
    with pytest.raises(ValueError, match="not fine-tuned from this `pretrained`"):
        sa.tl.attention_shift(cells, other, ft)
    assert "attention_shift" not in cells.uns


def test_perturbation_refuses_untrained_model(pair, cells):
    with pytest.raises(ValueError, match="neither trained nor pretrained"):
        sa.tl.in_silico_perturbation(cells, sa.model.Geneformer(pair[0].adata, **ARCH), genes=["MA0"])
    assert "perturbation" not in cells.uns


def test_perturbation_writes_results(pair, cells, tmp_path):
    _, ft, _ = pair
    sa.tl.in_silico_perturbation(cells, ft, genes=["MA0", "MA1", "MA2"], groupby="cell_type")
    shift = cells.obs["perturbation_shift"]
    assert shift.shape == (cells.n_obs,) and (shift >= 0).all() and shift.max() > 0
    toward = cells.obsm["perturbation_toward"]
    assert isinstance(toward, pd.DataFrame) and list(toward.columns) == ["A", "B"]
    assert list(toward.index) == list(cells.obs_names)
    summary = cells.uns["perturbation"]["summary"]
    assert list(summary.index) == ["A", "B"] and list(summary.columns) == ["A", "B"]
    a_cells = (cells.obs["cell_type"] == "A").to_numpy()
    assert np.isclose(summary.loc["A", "B"], toward.loc[a_cells, "B"].mean())
    params = cells.uns["perturbation"]["params"]
    assert params["genes"] == ["MA0", "MA1", "MA2"] and params["mode"] == "delete"
    assert params["groupby"] == "cell_type" and params["model_class"] == "Geneformer"
    assert params["classes"] == ["A", "B"]
    cells.write_h5ad(tmp_path / "perturbed.h5ad")
    assert ad.read_h5ad(tmp_path / "perturbed.h5ad").obsm["perturbation_toward"].shape == (80, 2)


def test_deleting_an_unexpressed_gene_moves_nothing(pair, cells):
    _, ft, _ = pair
    sa.tl.in_silico_perturbation(cells, ft, genes="SILENT", groupby="cell_type", key_added="none")
    np.testing.assert_allclose(cells.obs["none_shift"], 0, atol=1e-6)
    np.testing.assert_allclose(cells.obsm["none_toward"].to_numpy(), 0, atol=1e-6)


def test_perturbation_default_groupby_and_copy(pair, cells):
    _, ft, _ = pair
    with pytest.raises(ValueError, match=r"pass `groupby=`.*model.predict\(adata\)"):
        sa.tl.in_silico_perturbation(cells, ft, genes="MB0")
    ft.predict(cells)
    before = set(cells.obs) | set(cells.obsm) | set(cells.uns)
    out = sa.tl.in_silico_perturbation(cells, ft, genes="MB0", mode="overexpress", copy=True)
    assert set(cells.obs) | set(cells.obsm) | set(cells.uns) == before
    assert out.uns["perturbation"]["params"]["groupby"] == "geneformer_prediction"
    assert out.uns["perturbation"]["params"]["mode"] == "overexpress"
    predicted = list(out.obs["geneformer_prediction"].cat.categories)
    assert list(out.obsm["perturbation_toward"].columns) == predicted


def test_perturbation_errors(pair, cells):
    _, ft, _ = pair
    with pytest.raises(ValueError, match="not in the model's vocabulary: NOPE"):
        sa.tl.in_silico_perturbation(cells, ft, genes=["MA0", "NOPE"], groupby="cell_type")
    with pytest.raises(KeyError, match="'batch' is not a column of adata.obs"):
        sa.tl.in_silico_perturbation(cells, ft, genes="MA0", groupby="batch")
    with pytest.raises(ValueError, match="mode must be"):
        sa.tl.in_silico_perturbation(cells, ft, genes="MA0", groupby="cell_type", mode="knockout")
    with pytest.raises(ValueError, match="at least one gene"):
        sa.tl.in_silico_perturbation(cells, ft, genes=[], groupby="cell_type")
    with pytest.raises(TypeError, match="Geneformer-like"):
        sa.tl.in_silico_perturbation(cells, object(), genes="MA0", groupby="cell_type")
    assert "perturbation" not in cells.uns and "perturbation_shift" not in cells.obs


def test_perturbation_leaves_cells_without_tokens_out_of_centroids(pair, cells):
    """A cell with no count on any vocabulary gene has a NaN embedding (with the model's
    warning): its own shift is NaN, its class's centroid and summary come from the others."""
    _, ft, _ = pair
    x = cells.X.toarray()
    x[0] = 0  # cell 0 counts only a gene outside the vocabulary
    cells = ad.AnnData(np.hstack([x, np.eye(cells.n_obs, 1, dtype=np.float32)]), obs=cells.obs.copy(),
                       var=pd.DataFrame(index=[*cells.var_names, "OUTSIDE"]))
    with pytest.warns(UserWarning, match="1 cells have no counts"):
        sa.tl.in_silico_perturbation(cells, ft, genes=["MA0"], groupby="cell_type")
    assert np.isnan(cells.obs["perturbation_shift"].iloc[0])
    assert np.isfinite(cells.obs["perturbation_shift"].iloc[1:]).all()
    assert np.isfinite(cells.uns["perturbation"]["summary"].to_numpy()).all()
