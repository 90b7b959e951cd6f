"""The model core carries new kinds of model without special cases.

Two toy models built here, not shipped: an unsupervised autoencoder with a batch covariate
(trained for the generative objective), and a pretrain-then-fine-tune model (masked
pretraining without labels, saved, then a labelled classifier started from it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import LossOutput, auto_move_data
from torch import nn

import scattn as sa
from scattn.model.base import ClassifierMixin, LatentMixin, PretrainingMixin, ScattnModel
from scattn.module import MODULE_KEYS, OBJECTIVES, PanelModule
from scattn.train import GenerativePlan, TrainDefaults
from tests.conftest import make_counts


# -- an unsupervised autoencoder with a batch covariate ------------------------------------------
class ToyAEModule(PanelModule):
    inference_inputs = {REGISTRY_KEYS.X_KEY: "x", REGISTRY_KEYS.BATCH_KEY: "batch_index"}
    objectives = (OBJECTIVES.GENERATIVE,)

    def __init__(self, n_input, n_labels, gene_index, *, n_batch: int, n_latent: int = 4,
                 normalize_counts: bool = True):
        super().__init__(n_input, gene_index, normalize_counts=normalize_counts)
        g = self.genes.n_genes
        self.n_batch = n_batch
        self.encoder = nn.Linear(g + n_batch, n_latent)
        self.decoder = nn.Linear(n_latent + n_batch, g)
        self.batches_seen: set[int] = set()

    @auto_move_data
    def inference(self, x, batch_index):
        self.batches_seen.update(int(b) for b in batch_index.view(-1))
        panel = self.genes.read(x)
        onehot = nn.functional.one_hot(batch_index.view(-1).long(), self.n_batch).float()
        z = self.encoder(torch.cat([panel.lognorm, onehot], -1))
        return {MODULE_KEYS.Z: z, "panel": panel, "onehot": onehot}

    def generative_loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        panel = inference_outputs["panel"]
        z, onehot = inference_outputs[MODULE_KEYS.Z], inference_outputs["onehot"]
        recon = self.decoder(torch.cat([z, onehot], -1))
        err = ((recon - panel.lognorm) ** 2) * panel.observed  # zero-filled genes never scored
        return LossOutput(loss=err.sum(-1).mean(), n_obs_minibatch=z.shape[0])


class ToyAE(LatentMixin, ScattnModel):
    _module_cls = ToyAEModule
    _labels = "none"
    _batch_key = True
    _key = "toyae"

    @classmethod
    def setup_anndata(cls, adata, *, layer=None, batch_key=None, labels_key=None):
        cls._register(adata, labels_key, layer=layer, batch_key=batch_key)

    def __init__(self, adata, *, n_latent: int = 4, fitted=None):
        super().__init__(adata)
        if fitted is None:
            fitted = self._panel_state(None, None)
        self._init_panel(fitted)
        self.module = ToyAEModule(**self._module_gene_args(fitted), n_batch=self.n_batch,
                                  n_latent=n_latent)
        self._record_init_params(locals())

    _train_defaults = TrainDefaults(max_epochs=2, lr=1e-2, weight_decay=0.0, batch_size=32,
                                    early_stopping_patience=5)

    def train(self, max_epochs: int | None = None, *, batch_size: int | None = None):
        args = self._training_args(self._train_defaults, n_cells=self.adata.n_obs, trainer_kwargs={},
                                   max_epochs=max_epochs, batch_size=batch_size)
        self._run_training(GenerativePlan(self.module, lr=args.lr), args, accelerator="cpu",
                           enable_progress_bar=False)


def _batched(n=90, seed=0):
    data = make_counts(n, seed=seed)
    data.obs["batch"] = np.where(np.arange(n) % 2, "b1", "b0")
    del data.obs["cell_type"]
    return data


def test_unsupervised_model_with_batch(tmp_path):
    sa.settings.seed = 0
    data = _batched()
    with pytest.raises(ValueError, match="takes no labels"):
        ToyAE.setup_anndata(data, labels_key="batch", batch_key="batch")
    with pytest.raises(TypeError, match="batch_key"):
        sa.model.CFAN.setup_anndata(data, labels_key="batch", batch_key="batch")
    ToyAE.setup_anndata(data, batch_key="batch", layer="counts")
    model = ToyAE(data)
    assert model.n_batch == 2 and model.classes_ == []
    before = model.module.decoder.weight.detach().clone()
    model.train(max_epochs=2)
    assert model.is_trained_ and len(model.history["train_loss"]) == 2
    assert model.module.batches_seen == {0, 1}  # the batch tensor reached the module
    assert not torch.equal(before, model.module.decoder.weight)
    z = model.get_latent_representation()
    assert z.shape == (data.n_obs, 4) and np.isfinite(z).all()
    # new data: genes by name, batch column carried over
    other = _batched(40, seed=3)[:, ::-1].copy()
    np.testing.assert_allclose(model.get_latent_representation(other),
                               model.get_latent_representation(_batched(40, seed=3)), atol=1e-5)
    model.save(tmp_path / "ae")
    loaded = ToyAE.load(tmp_path / "ae", adata=data)
    np.testing.assert_allclose(loaded.get_latent_representation(), z, atol=1e-6)


# -- a pretrain-then-fine-tune model ---------------------------------------------------------------
class ToyBertModule(PanelModule):
    objectives = (OBJECTIVES.CLASSIFICATION, OBJECTIVES.MASKED)

    def __init__(self, n_input, n_labels, gene_index, *, n_hidden: int = 8, normalize_counts=True):
        super().__init__(n_input, gene_index, normalize_counts=normalize_counts)
        self.n_hidden = n_hidden
        self.encoder = nn.Sequential(nn.Linear(self.genes.n_genes, n_hidden), nn.ReLU())
        self.decoder = nn.Linear(n_hidden, self.genes.n_genes)
        if n_labels is not None:
            self.add_head(n_labels)

    def _make_head(self, n_labels):
        return nn.Linear(self.n_hidden, n_labels)

    @auto_move_data
    def inference(self, x, mask_ratio: float | None = None):
        panel = self.genes.read(x)
        f = panel.lognorm
        if mask_ratio is not None:
            hidden = torch.bernoulli(torch.full_like(f, mask_ratio)) * panel.observed
            return {MODULE_KEYS.RECONSTRUCTION: self.decoder(self.encoder(f * (1 - hidden))),
                    MODULE_KEYS.TARGET: f, MODULE_KEYS.HIDDEN: hidden}
        z = self.encoder(f)
        out = {MODULE_KEYS.Z: z}
        if self.has_head:
            out[MODULE_KEYS.LOGITS] = self.classifier(z)
        return out

    def masked_loss(self, tensors, inference_outputs, generative_outputs):
        err = (inference_outputs[MODULE_KEYS.RECONSTRUCTION] - inference_outputs[MODULE_KEYS.TARGET]) ** 2
        hidden = inference_outputs[MODULE_KEYS.HIDDEN]
        return LossOutput(loss=(err * hidden).sum() / hidden.sum().clamp_min(1),
                          n_obs_minibatch=err.shape[0])


class ToyBert(PretrainingMixin, ClassifierMixin, LatentMixin, ScattnModel):
    _module_cls = ToyBertModule
    _key = "toybert"
    _train_defaults = ClassifierMixin._train_defaults.replace(lr=1e-2)
    _pretrain_defaults = TrainDefaults(max_epochs=2, lr=1e-2, weight_decay=0.0, batch_size=32,
                                       early_stopping=False, early_stopping_patience=5)

    def __init__(self, adata, *, n_hidden: int = 8, fitted=None):
        super().__init__(adata)
        if fitted is None:
            fitted = self._panel_state(None, None)
        self._init_panel(fitted)
        self.module = ToyBertModule(**self._module_gene_args(fitted), n_hidden=n_hidden)
        self._record_init_params(locals())

    def pretrain(self, adata=None, **kwargs):
        super().pretrain(adata, plan_kwargs={"mask_ratio": 0.3}, accelerator="cpu",
                         enable_progress_bar=False, **kwargs)


def _labelled():
    data = make_counts(90, seed=1)
    data.obs["label"] = data.obs["cell_type"].astype(str)
    return data


@pytest.mark.parametrize("via", ["dir", "model"])
def test_pretrain_then_fine_tune(tmp_path, via):
    sa.settings.seed = 0
    unlabelled = make_counts(120, seed=2)
    del unlabelled.obs["cell_type"]
    ToyBert.setup_anndata(unlabelled, layer="counts")
    base = ToyBert(unlabelled)
    assert not base.module.has_head and base.classes_ == []
    with pytest.raises(ValueError, match="no classifier"):
        base.train(max_epochs=1)
    enc_before = base.module.encoder[0].weight.detach().clone()
    base.pretrain(max_epochs=2)
    assert base.is_pretrained_ and not base.is_trained_
    assert len(base.pretrain_history_["train_loss"]) == 2
    assert not torch.equal(enc_before, base.module.encoder[0].weight)
    base.save(tmp_path / "pre")

    labelled = _labelled()[:, 5:].copy()  # lacks 5 of the pretrained genes
    ToyBert.setup_anndata(labelled, labels_key="label", layer="counts")
    with pytest.warns(UserWarning, match="5 of the source model's 80 genes are missing"):
        clf = ToyBert.from_pretrained(tmp_path / "pre" if via == "dir" else base, labelled)
    assert clf.is_pretrained_ and not clf.is_trained_
    assert list(clf.var_names_) == list(base.var_names_)  # the pretrained vocabulary is kept
    torch.testing.assert_close(clf.module.encoder[0].weight, base.module.encoder[0].weight)
    assert clf.module.has_head and clf.classes_ == ["type0", "type1", "type2"]
    assert not bool(clf.module.genes.observed[:5].any())  # the genes it lacks are not observed
    clf.train(max_epochs=2, batch_size=32)
    clf.predict()
    assert {"toybert_prediction", "toybert_confidence"} <= set(labelled.obs)
    assert "X_toybert" in labelled.obsm and "toybert_attention" not in labelled.layers


def test_from_pretrained_errors(tmp_path):
    unlabelled = make_counts(60, seed=2)
    ToyBert.setup_anndata(unlabelled, layer="counts")
    base = ToyBert(unlabelled)
    labelled = _labelled()
    ToyBert.setup_anndata(labelled, labels_key="label", layer="counts")
    with pytest.raises(ValueError, match="neither pretrained nor trained"):
        ToyBert.from_pretrained(base, labelled)
    base.pretrain(max_epochs=1)
    fresh = _labelled()
    with pytest.raises(ValueError, match="Register adata first"):
        ToyBert.from_pretrained(base, fresh)
    renamed = _labelled()
    renamed.var_names = [f"X{i}" for i in range(renamed.n_vars)]
    ToyBert.setup_anndata(renamed, labels_key="label", layer="counts")
    with pytest.raises(ValueError, match="shares no gene"):
        ToyBert.from_pretrained(base, renamed)
    with pytest.raises(TypeError, match="ToyBert or a directory"):
        ToyBert.from_pretrained(3, labelled)
