"""Plots find the key a model wrote: CFAN and SIMS results plot with no key given."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

import scattn as sa
from tests.conftest import make_counts


def _ticks(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def test_marker_plots_with_no_key(predicted_other, tmp_path):
    key, _, adata = predicted_other
    fig = sa.pl.marker_dotplot(adata, n_genes=3, show=False, return_fig=True)
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "dot.png")
    fig = sa.pl.attention_heatmap(adata, n_genes=3, show=False, return_fig=True)
    main = fig.axes[0]
    assert main.get_ylabel() == f"{key}_prediction"
    top = adata.uns[f"{key}_markers"]["names"]
    assert _ticks(main)[0] == top[top.dtype.names[0]][0]
    fig.savefig(tmp_path / "heat.png")
    # rows by the true types, the rest still the model's
    ax = sa.pl.attention_heatmap(adata, groupby="cell_type", n_genes=3, show=False)
    assert ax.get_ylabel() == "cell_type"
    plt.close("all")


def test_sims_importances_with_a_cfan_beside(both_predicted):
    """SIMS' importance plots take the SIMS result when a CFAN's is in the same AnnData."""
    adata = both_predicted
    assert isinstance(sa.pl.feature_importances(adata, n_genes=5, show=False, return_fig=True), Figure)
    assert isinstance(sa.pl.class_importances(adata, n_genes=5, show=False, return_fig=True), Figure)
    plt.close("all")


def test_plots_ambiguous_until_named(both_predicted):
    adata = both_predicted
    listing = r"'cfan' \(CFAN\), 'sims' \(SIMS\)"
    with pytest.raises(ValueError, match=listing + ".*key='cfan_markers' or key='sims_markers'"):
        sa.pl.marker_dotplot(adata, show=False)
    with pytest.raises(ValueError, match=listing + ".*layer='cfan_attention' or layer='sims_attention'"):
        sa.pl.attention_heatmap(adata, show=False)
    # one argument names the model; the others follow it
    ax = sa.pl.attention_heatmap(adata, layer="sims_attention", n_genes=2, show=False)
    assert ax.get_ylabel() == "sims_prediction"
    ax = sa.pl.attention_heatmap(adata, key="cfan_markers", n_genes=2, show=False)
    assert ax.get_ylabel() == "cfan_prediction"
    with pytest.warns(FutureWarning, match=r"sa.pl.attention_heatmap\(markers_key=...\) is deprecated"):
        ax = sa.pl.attention_heatmap(adata, markers_key="cfan_markers", n_genes=2, show=False)
    assert ax.get_ylabel() == "cfan_prediction"
    ax = sa.pl.attention_heatmap(adata, groupby="sims_prediction", n_genes=2, show=False)
    assert ax.get_ylabel() == "sims_prediction"
    assert _ticks(ax)[0] == adata.uns["sims_markers"]["names"][0][0]  # SIMS' own markers
    with pytest.raises(ValueError, match=listing):  # any other column names no model
        sa.pl.attention_heatmap(adata, groupby="cell_type", show=False)
    assert sa.pl.marker_dotplot(adata, key="cfan_markers", n_genes=2, show=False) is not None
    plt.close("all")


def test_plots_with_no_model_results():
    adata = make_counts()
    with pytest.raises(ValueError, match=r"No scattn model results.*model.predict\(adata\)"):
        sa.pl.marker_dotplot(adata, show=False)
    with pytest.raises(ValueError, match=r"No scattn model results.*`layer=`"):
        sa.pl.attention_heatmap(adata, show=False)
    with pytest.raises(ValueError, match=r"model.predict\(adata\)` then `sa.tl.gene_sets_from_attention"):
        sa.pl.gene_attention_heatmap(adata, show=False)
    with pytest.raises(ValueError, match="No scattn model results"):
        sa.pl.feature_importances(adata, show=False)


def test_gene_sets_heatmap_needs_gene_sets(trained_cfan):
    model, adata = trained_cfan
    adata = adata.copy()
    model.predict(adata)
    with pytest.raises(ValueError, match=r"'cfan' \(CFAN\) lacks uns\['cfan_gene_sets'\].*"
                                         r"sa.tl.gene_sets_from_attention"):
        sa.pl.gene_attention_heatmap(adata, show=False)
    with pytest.raises(ValueError, match=r"lacks uns\['cfan'\]\['feature_importances'\].*SIMS"):
        sa.pl.feature_importances(adata, show=False)
