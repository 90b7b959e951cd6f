"""Every public tool (``sa.tl``) and plot (``sa.pl``) imported and run once, on tiny real models.

CI runs this in a virtual environment made by the README's command alone
(``pip install -e ".[test]"``), so a package that a public function needs but the project does
not declare (igraph for Leiden, safetensors for Hugging Face weights...) fails here first. A
function added to ``sa.tl.__all__`` or ``sa.pl.__all__`` without a line below fails too.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

import scattn as sa
from tests.conftest import TINY_ARCH, make_counts, tiny_model


def _trained(name: str, n: int = 90, *, pretrain: bool = False):
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    data = make_counts(n, seed=5)
    data.obs["cell_type"] = data.obs["cell_type"].astype(str)
    model = tiny_model(name, data)
    if pretrain:
        model.pretrain(max_epochs=1)
    model.train(max_epochs=1)
    return model, data


@pytest.fixture(scope="module")
def models():
    """Tiny trained models and an AnnData holding their predictions (tools write into it)."""
    cgran, data = _trained("CGRAN")
    cfan, _ = _trained("CFAN")
    sims, _ = _trained("SIMS")
    scgpt, _ = _trained("SCGPT")
    cells = make_counts(60, seed=6)
    for model in (cgran, sims):
        model.predict(cells)
    # a pretrained Geneformer and one fine-tuned from it
    sa.settings.seed = 0
    unlabelled = make_counts(60, seed=7)
    labelled = unlabelled.copy()
    base = tiny_model("Geneformer", unlabelled, labels=False)
    base.pretrain(max_epochs=1)
    sa.model.Geneformer.setup_anndata(labelled, labels_key="cell_type", layer="counts")
    tuned = sa.model.Geneformer.from_pretrained(base, labelled)
    tuned.train(max_epochs=1)
    return {"cgran": cgran, "cfan": cfan, "sims": sims, "scgpt": scgpt, "base": base,
            "tuned": tuned, "cells": cells, "labelled": labelled}


def _tools(m) -> dict:
    cells, labelled = m["cells"], m["labelled"]
    att = cells.layers["cgran_attention"]
    return {
        "attention_markers": lambda: sa.tl.attention_markers(att, cells.obs["cgran_prediction"],
                                                             cells.var_names, n_top=3),
        "marker_genes_from_attention": lambda: sa.tl.marker_genes_from_attention(
            cells, layer="cgran_attention", key_added="again_markers"),
        "gene_sets_from_attention": lambda: sa.tl.gene_sets_from_attention(cells, m["cgran"]),
        "unknown_threshold": lambda: sa.tl.unknown_threshold(cells, key="cgran", p_ref=0.1),
        "novelty": lambda: sa.tl.novelty(cells, cells, key="cgran", p_ref=0.1),
        "evaluate": lambda: sa.tl.evaluate(cells, "cell_type", "cgran_prediction"),
        "attention_shift": lambda: sa.tl.attention_shift(labelled, m["base"], m["tuned"], n_ranks=8),
        "in_silico_perturbation": lambda: sa.tl.in_silico_perturbation(
            labelled, m["tuned"], genes=["MK0_0", "MK0_1"], groupby="cell_type"),
        "gene_programs": lambda: sa.tl.gene_programs(cells, m["scgpt"], n_neighbors=5),
        "gene_network": lambda: sa.tl.gene_network(cells, m["scgpt"], top_k=3),
    }


def _plots(m) -> dict:
    cells, labelled = m["cells"], m["labelled"]
    return {
        "attention_heatmap": lambda ax: sa.pl.attention_heatmap(cells, groupby="cgran_prediction",
                                                                layer="cgran_attention", ax=ax),
        "gene_attention_heatmap": lambda ax: sa.pl.gene_attention_heatmap(cells, key="cgran_gene_sets",
                                                                          ax=ax),
        "marker_dotplot": lambda ax: sa.pl.marker_dotplot(cells, key="cgran_markers", ax=ax),
        "confusion_matrix": lambda ax: sa.pl.confusion_matrix(cells, ax=ax),
        "training_history": lambda ax: sa.pl.training_history(m["cgran"], ax=ax),
        "feature_attention": lambda ax: sa.pl.feature_attention(None, m["cfan"], n_cells=2, ax=ax),
        "feature_importances": lambda ax: sa.pl.feature_importances(cells, key="sims", ax=ax),
        "class_importances": lambda ax: sa.pl.class_importances(cells, key="sims", n_genes=5, ax=ax),
        "attention_norms": lambda ax: sa.pl.attention_norms(labelled, ax=ax),
        "attention_shift": lambda ax: sa.pl.attention_shift(labelled, ax=ax),
        "perturbation_shift": lambda ax: sa.pl.perturbation_shift(labelled, ax=ax),
        "gene_programs": lambda ax: sa.pl.gene_programs(cells, m["scgpt"], ax=ax),
    }


def test_every_public_tool_and_plot_runs(models):
    tools, plots = _tools(models), _plots(models)
    assert set(tools) == set(sa.tl.__all__), "a public tool without a run here"
    assert set(plots) == set(sa.pl.__all__), "a public plot without a run here"
    for name in sa.tl.__all__:  # in __all__'s order: tools first, the plots read what they wrote
        tools[name]()
    assert "cgran_gene_sets" in models["cells"].uns and "gene_programs" in models["cells"].uns
    for name in sa.pl.__all__:
        fig, ax = plt.subplots()
        try:
            plots[name](ax)
            assert fig.axes, name
        finally:
            plt.close(fig)


def test_tiny_architectures_cover_every_model():
    assert set(TINY_ARCH) == {n for n in sa.model.__all__ if isinstance(getattr(sa.model, n), type)}


def test_plots_and_tools_take_adata_first_then_keywords():
    """scanpy's shape: ``f(adata, [model], *, ...)``; plots read ``key``, tools write ``key_added``.
    ``training_history`` draws a model's own history (no AnnData) and ``attention_markers`` /
    ``unknown_threshold`` work on arrays or a reference model."""
    import inspect

    exempt = {"training_history", "attention_markers", "unknown_threshold"}
    for mod in (sa.pl, sa.tl):
        for name in mod.__all__:
            if name in exempt:
                continue
            params = list(inspect.signature(getattr(mod, name)).parameters.values())
            assert params[0].name == "adata", f"sa.{mod.__name__.split('.')[-1]}.{name} does not take adata first"
            positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
            assert len(positional) <= 3, f"{name}: {positional} positional"
            if mod is sa.tl:
                assert "key_added" in {p.name for p in params}, f"sa.tl.{name} writes without key_added"
            else:
                assert "key_added" not in {p.name for p in params}, f"sa.pl.{name} names what it reads key_added"
