"""docs/adding_a_model.md's complete model, run from the page's own code: it trains, predicts,
saves, loads and maps a query like the six models."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import scattn as sa
from tests.conftest import make_counts

PAGE = Path(__file__).resolve().parents[1] / "docs" / "adding_a_model.md"


def _page_model() -> dict:
    text = PAGE.read_text()
    section = text[text.index("## A complete model"):text.index("## Registering it")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section holds one complete python block"
    namespace: dict = {"__name__": "scattn_docs_toy"}
    exec(compile(blocks[0], str(PAGE), "exec"), namespace)
    return namespace


def test_the_pages_model_trains_predicts_saves_loads_and_maps_a_query(tmp_path):
    foo = _page_model()["Foo"]
    sa.settings.seed = 0
    try:
        adata = make_counts(90, seed=1)
        foo.setup_anndata(adata, labels_key="cell_type", layer="counts")
        model = foo(adata, n_hidden=8)
        model.train(max_epochs=3, accelerator="cpu", enable_progress_bar=False)
        assert model.is_trained_ and len(model.history["train_loss"]) >= 1
        test = make_counts(40, seed=2)
        model.predict(test)
        for key in ("foo_prediction", "foo_confidence"):
            assert key in test.obs
        assert "X_foo" in test.obsm and "foo_attention" in test.layers and "foo_markers" in test.uns
        assert foo._attention_description in str(test.uns["foo"]["params"])
        model.save(tmp_path / "foo")
        loaded = foo.load(tmp_path / "foo", adata=adata)
        np.testing.assert_allclose(loaded.predict_proba(test).to_numpy(), model.predict_proba(test).to_numpy(),
                                   atol=1e-6)
        query = make_counts(40, seed=3)
        mapped = foo.load_query_data(query, model, unfrozen=False)
        mapped.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
        assert mapped.predict(query, inplace=False).prediction.shape == (40,)
        import scanpy as sc

        assert len(sc.get.rank_genes_groups_df(test, group=None, key="foo_markers")) > 0
    finally:
        sa.settings.seed = None


def test_the_page_lists_every_class_attribute_the_models_set():
    text = PAGE.read_text()
    attrs = set()
    for cls in sa.model._overview.MODELS.values():
        for klass in cls.__mro__:
            if klass.__module__.startswith("scattn."):
                attrs |= {a for a in vars(klass) if re.fullmatch(r"_[a-z][a-z_]*", a)
                          and not callable(vars(klass)[a]) and not isinstance(vars(klass)[a], property | classmethod | staticmethod)}
    attrs -= {"_abc_impl", "_per_instance_manager_store", "_setup_adata_manager_store"}  # scvi-tools' own
    missing = sorted(a for a in attrs if f"`{a}`" not in text)
    assert not missing, f"docs/adding_a_model.md does not name {missing}"


@pytest.mark.parametrize("hook", ["_register", "_anndata_fields", "_gene_names_of", "_check_source",
                                  "_transfer_buffers", "_readable_source_genes", "_reshaped_weight",
                                  "_make_splitter", "_check_distributed", "_classification_plan",
                                  "_attention_summary", "_training_args", "_run_training"])
def test_the_hooks_the_page_names_exist(hook):
    from scattn.model.base import ClassifierMixin, ScattnModel

    assert hasattr(ScattnModel, hook) or hasattr(ClassifierMixin, hook) or hasattr(sa.model.SIMS, hook)
    assert f"`{hook}`" in PAGE.read_text()
