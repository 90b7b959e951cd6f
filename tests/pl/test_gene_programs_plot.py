"""sa.pl.gene_programs: the similarity heat map of the gene programs of a fake scGPT."""

from __future__ import annotations

import warnings

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import scattn as sa
from tests.tl.test_gene_programs import GROUPS, FakeSCGPT, make_cells


@pytest.fixture(scope="module")
def programmed():
    """(model, cells with the three planted programs)."""
    model, cells = FakeSCGPT(), make_cells()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the two genes the model lacks
        sa.tl.gene_programs(cells, model)
    return model, cells


def _ticks(labels) -> list[str]:
    return [t.get_text() for t in labels]


def test_plot_all_programs(programmed, tmp_path):
    model, cells = programmed
    before = (cells.var.copy(), dict(cells.uns))
    fig = sa.pl.gene_programs(cells, model, return_fig=True)
    assert isinstance(fig, Figure)
    fig.savefig("/tmp/scattn_gene_programs.png", dpi=100)
    fig.savefig(tmp_path / "programs.png")
    assert (tmp_path / "programs.png").stat().st_size > 1000
    ax = fig.axes[0]
    genes = _ticks(ax.get_yticklabels())
    assert len(genes) == 24 and _ticks(ax.get_xticklabels()) == genes
    programs = cells.uns["gene_programs"]["programs"]
    assert genes[:8] and set(genes[:8]) == set(programs["program 1"])  # grouped by program
    top = ax.child_axes[0]
    assert _ticks(top.get_xticklabels()) == ["program 1", "program 2", "program 3"]
    assert len(ax.patches) == 3  # one outline per program
    image = ax.get_images()[0]
    assert image.norm.vmin == -image.norm.vmax
    assert cells.var.equals(before[0]) and dict(cells.uns) == before[1]
    plt.close("all")


def test_plot_programs_of_genes_into_axes(programmed):
    model, cells = programmed
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = sa.pl.gene_programs(cells, model, genes=["A3", "C1"], ax=axes[0])
    assert ax is axes[0]
    shown = set(_ticks(ax.get_yticklabels()))
    assert shown == set(GROUPS["A"]) | set(GROUPS["C"])
    bold = {t.get_text() for t in ax.get_yticklabels() if t.get_fontweight() == "bold"}
    assert bold == {"A3", "C1"}
    fig.canvas.draw()
    plt.close("all")


def test_plot_max_genes_keeps_asked_genes(programmed):
    model, cells = programmed
    program = cells.var.loc["B4", "gene_programs"]
    ax = sa.pl.gene_programs(
        cells, model, programs=["program 1", program], genes=["B4"], max_genes=6, show=False
    )
    assert isinstance(ax, Axes)
    genes = _ticks(ax.get_yticklabels())
    assert len(genes) == 6 and "B4" in genes
    assert "6 of 16 genes shown" in ax.get_title()
    plt.close("all")


def test_plot_errors(programmed):
    model, cells = programmed
    with pytest.raises(ValueError, match=r"needs the model.*sa.pl.gene_programs\(adata, model\)"):
        sa.pl.gene_programs(cells, show=False)
    with pytest.raises(TypeError, match="get_gene_embeddings"):
        sa.pl.gene_programs(cells, object(), show=False)
    with pytest.raises(KeyError, match=r"sa.tl.gene_programs\(adata, model, key_added='nope'\)"):
        sa.pl.gene_programs(cells, model, key="nope", show=False)
    with pytest.raises(ValueError, match="programs must be among.*program 1"):
        sa.pl.gene_programs(cells, model, programs="program 9", show=False)
    with pytest.raises(ValueError, match=r"Genes in no program.*\['X0'\]"):
        sa.pl.gene_programs(cells, model, genes=["X0"], show=False)
    with pytest.raises(ValueError, match="max_genes must be"):
        sa.pl.gene_programs(cells, model, max_genes=1, show=False)
    other = FakeSCGPT(genes=[f"Z{i}" for i in range(24)])
    with pytest.raises(ValueError, match="no embedding for genes of the programs"):
        sa.pl.gene_programs(cells, other, show=False)
    plt.close("all")


def test_plot_many_genes_is_legible(tmp_path):
    """120 genes in 6 programs: font shrinks, max_genes trims to the most typical."""
    rng = np.random.default_rng(2)
    genes = [f"GENE{i:03d}" for i in range(120)]
    model = FakeSCGPT(genes=genes)
    model._emb = np.repeat(rng.normal(size=(6, 16)) * 3, 20, axis=0) + rng.normal(size=(120, 16))
    cells = ad.AnnData(np.zeros((3, 120), dtype=np.float32), var=pd.DataFrame(index=genes))
    sa.tl.gene_programs(cells, model)
    fig = sa.pl.gene_programs(cells, model, max_genes=100, return_fig=True)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == 100
    assert 4 <= ax.get_yticklabels()[0].get_fontsize() < 8
    fig.savefig("/tmp/scattn_gene_programs_many.png", dpi=100)
    plt.close("all")
