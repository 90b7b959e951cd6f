"""sa.pl.confusion_matrix on sa.tl.evaluate's results."""

from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import scattn as sa


def _evaluated(n_classes: int = 6, n_cells: int = 600, seed: int = 0) -> ad.AnnData:
    """Predictions right ~80% of the time, a few "Unknown", with realistic class names."""
    rng = np.random.default_rng(seed)
    names = ["CD4 T cell", "CD8 T cell", "NK cell", "B cell", "CD14 monocyte",
             "dendritic cell", "platelet", "plasmablast"][:n_classes]
    names += [f"type {i}" for i in range(len(names), n_classes)]
    truth = rng.choice(names, n_cells, p=np.linspace(2, 1, n_classes) / np.linspace(2, 1, n_classes).sum())
    pred = truth.copy()
    wrong = rng.random(n_cells) < 0.2
    pred[wrong] = rng.choice(names, wrong.sum())
    pred[rng.random(n_cells) < 0.05] = "Unknown"
    adata = ad.AnnData(obs=pd.DataFrame({"cell_type": pd.Categorical(truth), "sims_prediction": pred},
                                        index=[f"c{i}" for i in range(n_cells)]))
    sa.tl.evaluate(adata, "cell_type", "sims_prediction")
    return adata


@pytest.mark.parametrize("normalize", ["true", "pred", None])
def test_confusion_matrix_renders(normalize, tmp_path):
    adata = _evaluated()
    fig = sa.pl.confusion_matrix(adata, normalize=normalize, show=False, return_fig=True)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(
        adata.uns["evaluation"]["confusion_matrix"].index)
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "Unknown"
    assert "accuracy" in ax.get_title() and "macro F1" in ax.get_title()
    assert len(fig.axes) == 2  # the colour bar
    assert len(ax.texts) == 6 * 7  # annotated: 6 classes + "Unknown"
    fig.savefig(tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000
    if normalize == "true":
        fig.savefig("/tmp/confusion.png", dpi=120)
    plt.close("all")


def test_confusion_matrix_into_given_axes_and_annotation():
    adata = _evaluated(n_classes=20, n_cells=2000)
    fig, axes = plt.subplots(1, 2)
    assert sa.pl.confusion_matrix(adata, ax=axes[0]) is axes[0]
    assert len(axes[0].texts) == 0  # > 15 columns: no annotations by default
    sa.pl.confusion_matrix(adata, ax=axes[1], annotate=True, normalize=None)
    assert len(axes[1].texts) == 20 * 21
    plt.close("all")


def test_confusion_matrix_errors():
    adata = _evaluated()
    with pytest.raises(KeyError, match="run `sa.tl.evaluate"):
        sa.pl.confusion_matrix(adata, key="nope", show=False)
    with pytest.raises(ValueError, match="normalize must be"):
        sa.pl.confusion_matrix(adata, normalize="all", show=False)
    plt.close("all")
