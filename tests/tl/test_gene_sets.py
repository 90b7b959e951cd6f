"""sa.tl.gene_sets_from_attention with every model that has gene-gene attention."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import scattn as sa
from tests.conftest import make_counts, tiny_model


@pytest.fixture(scope="module", params=["CGRAN", "SCGPT"])
def predicted(request):
    sa.settings.seed = 0
    try:
        adata = make_counts(90, seed=1)
        model = tiny_model(request.param, adata)
        model.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False)
        test = make_counts(60, seed=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.predict(test)
        yield model, test
    finally:
        sa.settings.seed = None


def test_gene_sets_from_attention_works_for_every_model_with_gene_attention(predicted):
    model, adata = predicted
    sa.tl.gene_sets_from_attention(adata, model, n_genes=3, n_sets=2)
    key = f"{type(model).__name__.lower()}_gene_sets"
    sets = adata.uns[key]
    assert len(sets["gene_sets"]) == 2 and len(sets["genes"]) >= 2
    assert np.isfinite(sets["attention"].to_numpy()).all()


def test_get_gene_attention_has_one_signature(predicted):
    model, adata = predicted
    genes = list(model.var_names_[:4])
    frame = model.get_gene_attention(adata, genes=genes)
    assert list(frame.index) == genes and list(frame.columns) == genes
    sub = model.get_gene_attention(adata, [0, 1, 2], genes=genes)
    assert sub.shape == (4, 4)
    keywords = model.get_gene_attention(adata=adata, indices=[0, 1, 2], genes=genes, batch_size=2)
    np.testing.assert_allclose(keywords.to_numpy(), sub.to_numpy(), rtol=1e-5, equal_nan=True)
    one = model.get_gene_attention(adata, genes=genes[0])  # a single gene name is one gene
    assert one.shape == (1, 1) and list(one.index) == genes[:1]


def test_cgrans_old_argument_order_warns_and_agrees():
    sa.settings.seed = 0
    try:
        adata = make_counts(60, seed=1)
        model = tiny_model("CGRAN", adata)
        model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
        genes = list(model.var_names_[:5])
        new = model.get_gene_attention(adata, genes=genes)
        with pytest.warns(FutureWarning, match="deprecated"):
            old = model.get_gene_attention(genes, adata)
        np.testing.assert_allclose(old.to_numpy(), new.to_numpy())
    finally:
        sa.settings.seed = None
