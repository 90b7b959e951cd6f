"""Plots of the Geneformer analyses: attention shift, head norms, perturbation shifts."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import scattn as sa
from tests.tl.test_geneformer_tools import geneformer_pair


@pytest.fixture(scope="module")
def analysed():
    """Labelled cells with an attention shift (per rank and binned) and a perturbation."""
    base, ft, cells = geneformer_pair()
    cells = cells.copy()
    sa.tl.attention_shift(cells, base, ft)
    sa.tl.attention_shift(cells, base, ft, rank_bins=8, key_added="binned")
    sa.tl.in_silico_perturbation(cells, ft, genes=["MA0", "MA1"], groupby="cell_type")
    return cells


@pytest.mark.parametrize("plot, kwargs", [
    (sa.pl.attention_shift, {}),
    (sa.pl.attention_shift, {"key": "binned", "vmax": 5.0}),
    (sa.pl.attention_norms, {}),
    (sa.pl.perturbation_shift, {"target": "A"}),
    (sa.pl.perturbation_shift, {"kind": "box"}),
])
def test_plots_render(analysed, plot, kwargs, tmp_path):
    fig = plot(analysed, show=False, return_fig=True, **kwargs)
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert isinstance(plot(analysed, show=False, **kwargs), Axes)
    plt.close("all")


def test_plots_into_given_axes(analysed):
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    assert sa.pl.attention_shift(analysed, key="binned", ax=axes[0]) is axes[0]
    assert sa.pl.attention_norms(analysed, ax=axes[1]) is axes[1]
    assert sa.pl.perturbation_shift(analysed, target=["A", "B"], ax=axes[2]) is axes[2]
    fig.canvas.draw()
    plt.close("all")


def test_heatmap_and_bars_content(analysed):
    ax = sa.pl.attention_shift(analysed, key="binned", show=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L1 H1", "L1 H2", "L2 H1", "L2 H2"]
    assert len(ax.get_xticklabels()) == 8 and ax.get_xlabel() == "rank bin"
    image = ax.get_images()[0]
    assert image.norm.vmin == -image.norm.vmax  # centred at 0
    ax = sa.pl.attention_norms(analysed, show=False)
    assert len(ax.patches) == 8  # two bars per head
    ax = sa.pl.perturbation_shift(analysed, target="B", groupby="cell_type", show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B"]
    assert "B centroid" in ax.get_ylabel() and "MA0" in ax.get_title()
    plt.close("all")


def test_plot_errors(analysed):
    with pytest.raises(KeyError, match=r"sa.tl.attention_shift\(adata, pretrained, finetuned"):
        sa.pl.attention_shift(analysed, key="nope", show=False)
    with pytest.raises(KeyError, match="sa.tl.attention_shift"):
        sa.pl.attention_norms(analysed, key="nope", show=False)
    with pytest.raises(ValueError, match="vmax must be a positive"):
        sa.pl.attention_shift(analysed, vmax=0, show=False)
    with pytest.raises(KeyError, match=r"sa.tl.in_silico_perturbation\(adata, model"):
        sa.pl.perturbation_shift(analysed, key="nope", show=False)
    with pytest.raises(ValueError, match="target must be among the classes.*A, B"):
        sa.pl.perturbation_shift(analysed, target="C", show=False)
    with pytest.raises(KeyError, match="'batch' is not a column"):
        sa.pl.perturbation_shift(analysed, groupby="batch", show=False)
    with pytest.raises(ValueError, match="kind must be"):
        sa.pl.perturbation_shift(analysed, kind="bar", show=False)
    plt.close("all")
