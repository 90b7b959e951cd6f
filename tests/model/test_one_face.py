"""One face for six models: the same concept has the same name, position and default."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

import scattn as sa
from scattn.train import SHARED_ARGUMENTS, TrainDefaults
from tests.conftest import TINY_ARCH, make_counts, tiny_model

MODELS = ["CFAN", "CGRAN", "SIMS", "Geneformer", "SCGPT", "SCVIT"]
#: scVI's positional arguments of ``train``, which SCVIT keeps (drop-in)
SCVI_POSITIONAL = ["max_epochs", "accelerator", "devices", "train_size", "validation_size",
                   "shuffle_set_split", "load_sparse_tensor", "batch_size", "early_stopping",
                   "datasplitter_kwargs", "plan_kwargs"]


def _params(fn) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("call", ["train", "pretrain"])
def test_train_and_pretrain_share_one_signature_family(name, call):
    cls = getattr(sa.model, name)
    if not hasattr(cls, call):
        pytest.skip(f"{name} has no {call}()")
    params = _params(getattr(cls, call))
    missing = [a for a in SHARED_ARGUMENTS if a not in params]
    assert not missing, f"{name}.{call} lacks {missing}"
    assert any(p.kind is p.VAR_KEYWORD for p in params.values()), "no **trainer_kwargs"
    for arg in SHARED_ARGUMENTS:
        if arg in ("accelerator", "devices"):
            assert params[arg].default == "auto"
        elif arg != "max_epochs" or call == "train":
            assert params[arg].default is None, f"{name}.{call}({arg}=) must default to None (the class default)"
    defaults = cls._train_defaults if call == "train" else cls._pretrain_defaults
    assert isinstance(defaults, TrainDefaults)
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD and n != "self"]
    if name == "SCVIT" and call == "train":
        assert positional == SCVI_POSITIONAL  # scVI's order: a drop-in
        assert inspect.signature(cls.train).return_annotation in (None, "None")
    else:
        assert positional == (["max_epochs"] if call == "train" else ["adata"])
    if name != "SCVIT":
        assert inspect.signature(getattr(cls, call)).return_annotation in (None, "None")


@pytest.mark.parametrize("name", MODELS)
def test_setup_anndata_shows_only_what_the_model_accepts(name):
    cls = getattr(sa.model, name)
    params = set(_params(cls.setup_anndata))
    assert ("batch_key" in params) == cls._batch_key
    assert ("categorical_covariate_keys" in params) == cls._covariates
    assert ("gene_id_key" in params) == cls._gene_ids
    assert ("condition_key" in params) == cls._condition_key
    assert not any(p.kind is p.VAR_KEYWORD for p in _params(cls.setup_anndata).values())
    doc = cls.setup_anndata.__doc__
    for p in params - {"cls"}:
        assert f"\n{p}\n" in "\n" + inspect.cleandoc(doc) + "\n" or f"{p}\n" in doc, f"{name}: {p} undocumented"


def test_a_key_the_model_cannot_use_is_refused_by_python():
    adata = make_counts(40)
    with pytest.raises(TypeError, match="batch_key"):
        sa.model.CFAN.setup_anndata(adata, labels_key="cell_type", batch_key="batch")


@pytest.mark.parametrize("name", MODELS)
def test_one_seed_source_makes_training_repeatable(name):
    def run():
        sa.settings.seed = 3
        adata = make_counts(60, seed=1)
        adata.layers["counts"] = adata.X.copy()
        model = tiny_model(name, adata)
        model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
        return {k: v.detach().clone() for k, v in model.module.state_dict().items()}

    try:
        first, second = run(), run()
    finally:
        sa.settings.seed = None
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{name}: {key} differs between two seeded runs"


def test_defaults_resolve_none_to_the_class_default():
    adata = make_counts(60, seed=1)
    adata.layers["counts"] = adata.X.copy()
    model = tiny_model("CGRAN", adata)
    args = model._training_args(model._train_defaults, n_cells=60, trainer_kwargs={})
    # patience: 5 epochs or 100 optimiser steps, 54 training cells making 2 minibatches of 32
    assert (args.lr, args.batch_size, args.early_stopping_patience, args.restore_best_weights) == (1e-3, 32, 50, True)
    args = model._training_args(model._train_defaults, n_cells=60, trainer_kwargs={}, lr=0.5,
                                restore_best_weights=False)
    assert (args.lr, args.restore_best_weights) == (0.5, False)
    with pytest.raises(ValueError, match="train_size"):
        model._training_args(model._train_defaults, n_cells=60, trainer_kwargs={}, train_size=1.5)


def test_precision_reaches_lightning():
    adata = make_counts(60, seed=1)
    adata.layers["counts"] = adata.X.copy()
    model = tiny_model("CFAN", adata)
    model.train(max_epochs=1, precision="bf16-mixed", accelerator="cpu", enable_progress_bar=False)
    assert str(model.trainer.precision) == "bf16-mixed"


def _reference_and_query(name: str):
    """A tiny `name` trained one epoch on 60 cells, and a 40-cell query of the same genes."""
    ref = make_counts(60, seed=1)
    ref.layers["counts"] = ref.X.copy()
    model = tiny_model(name, ref)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    query = make_counts(40, seed=2)
    query.layers["counts"] = query.X.copy()
    return model, query


@pytest.mark.parametrize("name", ["CFAN", "CGRAN", "SIMS", "Geneformer", "SCGPT"])
def test_load_query_data_for_every_classifier(name):
    sa.settings.seed = 0
    try:
        model, query = _reference_and_query(name)
        cls = type(model)
        params = _params(cls.load_query_data)
        assert list(params)[:2] == ["adata", "reference_model"]
        assert params["unfrozen"].default is None and params["unfrozen"].kind is inspect.Parameter.KEYWORD_ONLY
        qm = cls.load_query_data(query, model, unfrozen=False)
        trainable = {n for n, p in qm.module.named_parameters() if p.requires_grad}
        assert trainable == set(qm.module.head_parameter_names())
        qm.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
        assert qm.predict(query, inplace=False).prediction.shape == (40,)
        full = cls.load_query_data(query.copy(), model)
        assert all(p.requires_grad for p in full.module.parameters())
    finally:
        sa.settings.seed = None


@pytest.mark.parametrize("name", ["CFAN", "CGRAN", "SIMS", "Geneformer", "SCGPT"])
def test_unlabelled_query_is_adapted_to(name):
    """An unlabelled query (no labels column): pseudo-labels from the reference model, then
    train() fits the reference's cells and the pseudo-labelled ones; nothing else in the
    user's AnnData changes, and the reference model is untouched."""
    sa.settings.seed = 0
    try:
        model, query = _reference_and_query(name)
        ref = model.adata
        before = {k: v.clone() for k, v in model.module.state_dict().items()}
        del query.obs["cell_type"]
        x = query.X.copy()
        cls = type(model)
        qm = cls.load_query_data(query, model)
        assert qm._is_adapting() and not model._is_adapting()
        labels_key = model._setup_args["labels_key"]
        assert (query.obs[labels_key] == "Unknown").all()  # the one column added, documented
        pseudo = qm.pseudo_labels_
        assert list(pseudo.index) == list(query.obs_names)
        n_pseudo = int(pseudo.notna().sum())
        assert 0 < n_pseudo < query.n_obs and set(pseudo.dropna()) <= set(model.classes_)
        qm.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
        trained_on = len(qm.train_indices) + len(qm.validation_indices)
        assert trained_on == ref.n_obs + n_pseudo
        assert qm.predict(inplace=False).prediction.shape == (40,)
        assert (query.X != x).nnz == 0
        assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
    finally:
        sa.settings.seed = None


def test_class_weights_are_balanced_and_can_be_turned_off():
    from scattn.data import balanced_class_weights

    np.testing.assert_allclose(balanced_class_weights(np.array([0, 0, 0, 1, 3]), 3), [4 / 6, 4 / 2, 1.0])
    adata = make_counts(60, seed=1)
    adata.layers["counts"] = adata.X.copy()
    model = tiny_model("CFAN", adata)
    codes = np.asarray(model.adata_manager.get_from_registry("labels")).ravel()
    counts = np.bincount(codes, minlength=len(model.classes_))
    np.testing.assert_allclose(model._balanced_class_weights(), len(codes) / (len(counts) * counts))
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    weighted = model.trainer.lightning_module.loss_kwargs["class_weights"]
    np.testing.assert_allclose(weighted.numpy(), model._balanced_class_weights(), rtol=1e-6)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False, plan_kwargs={"class_weights": None})
    assert "class_weights" not in model.trainer.lightning_module.loss_kwargs


def test_fine_tune_is_deprecated_for_unfrozen():
    sa.settings.seed = 0
    try:
        ref = make_counts(60, seed=1)
        ref.layers["counts"] = ref.X.copy()
        model = tiny_model("CFAN", ref)
        model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
        query = make_counts(40, seed=2)
        query.layers["counts"] = query.X.copy()
        with pytest.warns(FutureWarning, match="unfrozen=False"):
            qm = sa.model.CFAN.load_query_data(query, model, fine_tune="classifier")
        assert qm.unfrozen_ is False
        with pytest.raises(ValueError, match="contradicts"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                sa.model.CFAN.load_query_data(query.copy(), model, fine_tune="all", unfrozen=False)
    finally:
        sa.settings.seed = None


def test_scvit_train_keeps_scvis_positions_and_says_so_for_old_calls():
    adata = make_counts(60, seed=1)
    adata.layers["counts"] = adata.X.copy()
    model = tiny_model("SCVIT", adata)
    with pytest.raises(TypeError, match="scVI's positional arguments"):
        model.train(1, 1e-3)
    assert model.train(1, "cpu", enable_progress_bar=False) is None
    assert model.is_trained_


def test_a_bare_scattn_module_saves_and_loads(tmp_path):
    from scvi.module.base import LossOutput

    from scattn.model.base import ScattnModel
    from scattn.module import OBJECTIVES, ScattnModule
    from scattn.train import GenerativePlan

    class Bare(ScattnModule):
        objectives = (OBJECTIVES.GENERATIVE,)

        def __init__(self, n_input: int):
            super().__init__()
            self.linear = torch.nn.Linear(n_input, 2)

        def inference(self, x):
            return {"z": self.linear(torch.log1p(x))}

        def loss(self, tensors, inference_outputs, generative_outputs, objective=None):
            z = inference_outputs["z"]
            return LossOutput(loss=(z ** 2).mean(), n_obs_minibatch=z.shape[0])

    class BareModel(ScattnModel):
        _module_cls = Bare
        _labels = "none"

        _train_defaults = TrainDefaults(max_epochs=1, lr=1e-2, weight_decay=0.0, batch_size=16)

        def __init__(self, adata, *, fitted=None):
            super().__init__(adata)
            self._init_panel(self._panel_state(None, None) if fitted is None else fitted)
            self.module = Bare(self.summary_stats.n_vars)
            self._record_init_params(locals())

        def train(self, max_epochs=None, **trainer_kwargs):
            args = self._training_args(self._train_defaults, n_cells=self.adata.n_obs,
                                       trainer_kwargs=trainer_kwargs, max_epochs=max_epochs)
            self._run_training(GenerativePlan(self.module, lr=args.lr), args, **trainer_kwargs)

    adata = make_counts(30)
    BareModel.setup_anndata(adata)
    model = BareModel(adata)
    model.train(accelerator="cpu", enable_progress_bar=False)
    model.save(tmp_path / "bare")
    loaded = BareModel.load(tmp_path / "bare", adata=adata)
    for key, value in model.module.state_dict().items():
        assert torch.equal(value, loaded.module.state_dict()[key])
    assert np.array_equal(loaded.var_names_, model.var_names_)


def test_tiny_arch_covers_every_model():
    assert set(TINY_ARCH) == set(MODELS)
