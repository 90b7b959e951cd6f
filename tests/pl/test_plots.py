import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import scattn as sa


@pytest.fixture(scope="module")
def predicted(trained):
    model, adata = trained
    adata = adata.copy()
    model.predict(adata)
    sa.tl.gene_sets_from_attention(adata, model, n_genes=3)
    return model, adata


@pytest.mark.parametrize("plot, kwargs", [
    (sa.pl.marker_dotplot, {"n_genes": 3}),
    (sa.pl.gene_attention_heatmap, {}),
    (sa.pl.attention_heatmap, {"n_genes": 3}),
])
def test_plots_render(predicted, plot, kwargs, tmp_path):
    _, adata = predicted
    fig = plot(adata, show=False, return_fig=True, **kwargs)
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    ax = plot(adata, show=False, **kwargs)
    assert isinstance(ax, Axes)
    plt.close("all")


def test_plots_into_given_axes(predicted):
    model, adata = predicted
    fig, axes = plt.subplots(1, 2)
    assert sa.pl.attention_heatmap(adata, ax=axes[0], n_genes=2) is axes[0]
    assert sa.pl.training_history(model, ax=axes[1]) is axes[1]
    plt.close("all")


def test_training_history(predicted):
    model, _ = predicted
    fig = sa.pl.training_history(model, show=False, return_fig=True)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="metrics must be"):
        sa.pl.training_history(model, metrics=("f1",), show=False)
    plt.close("all")


def test_plot_errors(predicted):
    _, adata = predicted
    with pytest.raises(KeyError, match="No markers"):
        sa.pl.marker_dotplot(adata, key="nope", show=False)
    with pytest.raises(KeyError, match="No gene sets"):
        sa.pl.gene_attention_heatmap(adata, key="nope", show=False)


def test_feature_attention_plot(trained_cfan, tmp_path):
    model, _ = trained_cfan
    for what in ("attention", "features"):
        fig = sa.pl.feature_attention(None, model, n_cells=2, what=what, show=False, return_fig=True)
        assert isinstance(fig, Figure)
        rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        assert rows == ["type0", "type1", "type2"]  # no "Unknown" row
        fig.savefig(tmp_path / "f.png")
    _, ax = plt.subplots()
    assert sa.pl.feature_attention(model.adata, model, groupby="cell_type", ax=ax) is ax
    with pytest.raises(TypeError, match="use a CFAN"):
        sa.pl.feature_attention(None, object())
    plt.close("all")


@pytest.mark.parametrize("plot", [sa.pl.feature_importances, sa.pl.class_importances])
def test_sims_importance_plots(trained_sims, plot, tmp_path):
    model, adata = trained_sims
    adata = adata.copy()
    model.predict(adata)
    fig = plot(adata, n_genes=10, show=False, return_fig=True)
    fig.savefig(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    fig, ax = plt.subplots()
    assert plot(adata, ax=ax) is ax
    with pytest.raises(KeyError, match="SIMS"):
        plot(adata, key="cgran")
    with pytest.raises(ValueError, match="n_genes"):
        plot(adata, n_genes=0)
    plt.close("all")


def test_feature_attention_old_order_warns(trained_cfan):
    model, _ = trained_cfan
    with pytest.warns(FutureWarning, match="adata first"):
        fig = sa.pl.feature_attention(model, n_cells=1, show=False, return_fig=True)
    assert isinstance(fig, Figure)
    # the old order with the AnnData, positional or by name
    for call in (lambda: sa.pl.feature_attention(model, model.adata, groupby="cell_type", show=False),
                 lambda: sa.pl.feature_attention(model, adata=model.adata, groupby="cell_type", show=False)):
        with pytest.warns(FutureWarning, match=r"feature_attention\(model, adata\) is deprecated"):
            assert call() is not None
    with pytest.raises(TypeError, match="needs the trained CFAN"):  # the new order without a model
        sa.pl.feature_attention(model.adata)
    plt.close("all")
