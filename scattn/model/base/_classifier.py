"""Shared behaviour of scattn classifiers: training defaults, predict, and writing results."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.dataloaders import DataSplitter
from scvi.model.base import UnsupervisedTrainingMixin
from scvi.train import TrainingPlan, TrainRunner

from scattn._settings import settings
from scattn._version import __version__
from scattn.data import check_input, check_labels

from ._results import PredictionResult

logger = logging.getLogger(__name__)

UNKNOWN = "Unknown"


def validate_setup(adata: AnnData, labels_key: str, layer: str | None, expression: str,
                   unlabeled_category: str, *, classes: list[str] | None = None) -> None:
    """Every check `setup_anndata` makes before it registers anything."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    if adata.is_view:
        raise ValueError("adata is a view; call `adata = adata.copy()` first.")
    if labels_key not in adata.obs:
        cols = ", ".join(map(repr, adata.obs.columns[:10])) or "none"
        raise KeyError(f"labels_key {labels_key!r} is not a column of adata.obs (columns: {cols}).")
    check_labels(adata.obs[labels_key], unlabeled_category, labels_key=labels_key, classes=classes)
    check_input(adata, layer, expression)


class ClassifierMixin:
    """Training, prediction and result writing for models with a labels field.

    A model using it sets ``_default_lr``, ``_default_train_batch_size`` (or `None`) and
    ``_attention_description`` (what its attribution means, recorded in ``params``), and has a
    module whose ``inference`` returns ``logits``, ``z`` and, on request, ``attention``
    (cells x model genes).
    """

    _data_splitter_cls = DataSplitter
    _training_plan_cls = TrainingPlan
    _train_runner_cls = TrainRunner
    _default_lr = 1e-3
    _default_train_batch_size: int | None = None
    _attention_description = ""

    # -- labels ----------------------------------------------------------------------------
    def _registered_classes(self) -> list[str]:
        """The known classes of the registered labels, in the classifier's output order."""
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY).categorical_mapping
        return [str(c) for c in mapping[:-1]]

    # -- training --------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int = 100,
        *,
        lr: float | None = None,
        batch_size: int | None = None,
        train_size: float = 0.9,
        validation_size: float | None = None,
        early_stopping: bool = True,
        early_stopping_patience: int = 10,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train with scvi-tools' Lightning machinery.

        Parameters
        ----------
        max_epochs
            Maximum passes through the training cells.
        lr
            Adam learning rate (the model's paper default if `None`).
        batch_size
            Minibatch size; `None` uses the model's default (CGRAN: 32, so that small
            datasets get enough updates at the paper's learning rate), else
            :attr:`scattn.settings.batch_size`.
        train_size
            Fraction of cells for training; the rest validates (early stopping, history).
        validation_size
            Fraction for validation; `None` means ``1 - train_size``.
        early_stopping
            Stop when the validation loss has not improved for `early_stopping_patience`
            epochs. Ignored without a validation set.
        early_stopping_patience
            Epochs without improvement before stopping.
        accelerator, devices
            Passed to Lightning (``"cpu"``, ``"gpu"``, ``"auto"``...).
        plan_kwargs
            Extra arguments of :class:`scvi.train.TrainingPlan` (e.g. ``weight_decay``).
        datasplitter_kwargs
            Extra arguments of :class:`scvi.dataloaders.DataSplitter`.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``enable_progress_bar``).

        Notes
        -----
        Training history (``train_loss``, ``validation_loss``, ``accuracy_train``,
        ``accuracy_validation``) is in ``model.history``.
        """
        has_validation = self._prepare_training(
            max_epochs, train_size, validation_size, early_stopping, early_stopping_patience, trainer_kwargs
        )
        plan = {"lr": self._default_lr if lr is None else lr, "eps": 1e-8, "weight_decay": 0.0}
        plan.update(plan_kwargs or {})
        # inference leaves the module in eval mode and Lightning keeps modes as it finds them:
        # without this, dropout would stay off when training follows a prediction
        self.module.train()
        return UnsupervisedTrainingMixin.train(
            self,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size or self._default_train_batch_size or settings.batch_size,
            early_stopping=early_stopping and has_validation,
            plan_kwargs=plan,
            datasplitter_kwargs=datasplitter_kwargs,
            **trainer_kwargs,
        )

    @staticmethod
    def _prepare_training(max_epochs: int, train_size: float, validation_size: float | None,
                          early_stopping: bool, early_stopping_patience: int, trainer_kwargs: dict) -> bool:
        """Checks and settings every training run shares; return whether there is a validation set.

        Fills `trainer_kwargs` (progress bar, early stopping on the validation loss) and seeds
        scvi-tools from :attr:`scattn.settings.seed`.
        """
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        if not 0 < train_size <= 1:
            raise ValueError(f"train_size must be in (0, 1], got {train_size}.")
        has_validation = ((1 - train_size) if validation_size is None else validation_size) > 0
        trainer_kwargs.setdefault("enable_progress_bar", settings.progress_bar)
        if early_stopping and has_validation:
            trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
            trainer_kwargs.setdefault("early_stopping_patience", early_stopping_patience)
        if settings.seed is not None:
            import scvi

            scvi.settings.seed = settings.seed
        return has_validation

    # -- inference -------------------------------------------------------------------------
    def get_latent_representation(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> np.ndarray:
        """The cell embedding (cells x latent dims); see the model's docstring for what it is."""
        self._check_if_trained(warn=True)
        with self._aligned(adata) as internal:
            return self._run_inference(internal, indices=indices, batch_size=batch_size, keys=("z",))["z"]

    def predict_proba(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Class probabilities, cells x classes."""
        self._check_if_trained(warn=True)
        with self._aligned(adata) as internal:
            out = self._run_inference(internal, indices=indices, batch_size=batch_size, keys=("logits",))
            names = internal.obs_names if indices is None else internal.obs_names[np.asarray(indices)]
        probs = torch.softmax(torch.from_numpy(out["logits"]), -1).numpy()
        return pd.DataFrame(probs, index=names, columns=self.classes_)

    def _predict(
        self,
        adata: AnnData | None,
        *,
        key_added: str,
        unknown_threshold: float | None,
        attention_top_k: int,
        n_markers: int,
        batch_size: int | None,
        min_gene_overlap: float,
    ) -> PredictionResult:
        from scattn.tl._markers import attention_markers

        if unknown_threshold is not None and not 0 < unknown_threshold < 1:
            raise ValueError(f"unknown_threshold must be in (0, 1), got {unknown_threshold}.")
        if attention_top_k < 1:
            raise ValueError(f"attention_top_k must be >= 1, got {attention_top_k}.")
        self._check_if_trained(warn=True)
        target = self.adata if adata is None else adata
        summary = self._attention_summary()
        with self._aligned(adata, min_gene_overlap=min_gene_overlap) as internal:
            out = self._run_inference(internal, batch_size=batch_size, attention_top_k=attention_top_k,
                                      accumulate=summary)
        probs = torch.softmax(torch.from_numpy(out["logits"]), -1).numpy()
        classes = self.classes_
        best = probs.argmax(1)
        confidence = probs.max(1)
        labels = np.asarray(classes, dtype=object)[best]
        categories = list(classes)
        if unknown_threshold is not None:
            labels = np.where(confidence < unknown_threshold, UNKNOWN, labels)
            if UNKNOWN not in categories:
                categories.append(UNKNOWN)
        index = target.obs_names
        # unused categories dropped, as scanpy's own tools write them (its plots expect it)
        prediction = pd.Series(
            pd.Categorical(labels, categories=categories).remove_unused_categories(), index=index
        )
        attention = self._attention_in_genes_of(out["attention"], target.var_names)
        markers = attention_markers(
            attention, prediction, target.var_names, n_top=attention_top_k, n_genes=n_markers,
            groupby=f"{key_added}_prediction", layer=f"{key_added}_attention",
        )
        params = {
            "model": type(self).__name__,
            "scattn_version": __version__,
            "key_added": key_added,
            "unknown_threshold": unknown_threshold,
            "attention_top_k": attention_top_k,
            "attention": self._attention_description,
            "n_model_genes": len(self.var_names_),
            "classes": classes,
        }
        return PredictionResult(
            uns={} if summary is None else summary.results(self._readable_in(target.var_names)),
            prediction=prediction,
            confidence=pd.Series(confidence, index=index),
            probabilities=pd.DataFrame(probs, index=index, columns=classes),
            embedding=out["z"],
            attention=attention,
            var_names=target.var_names.copy(),
            markers=markers,
            params=params,
        )

    def _attention_summary(self):
        """A callable fed every inference minibatch by `_predict`, whose ``results(readable)``
        (a dict) goes beside ``params`` in ``adata.uns[key]``; `None`: nothing extra."""
        return None

    def _readable_in(self, var_names: pd.Index) -> np.ndarray:
        """Which model genes (``var_names_`` order) the model reads and `var_names` holds."""
        genes = pd.Index(self.var_names_)
        return genes.isin(self._read_genes) & genes.isin(pd.Index(var_names))

    def _attention_in_genes_of(self, attention: sparse.csr_matrix, var_names: pd.Index) -> sparse.csr_matrix:
        """Map a cells x model-genes matrix onto the columns `var_names` (absent genes dropped)."""
        pos = pd.Index(var_names).get_indexer(pd.Index(self.var_names_))
        keep = np.flatnonzero(self._readable_in(var_names))  # genes the model never reads get nothing
        selector = sparse.csr_matrix(
            (np.ones(len(keep), dtype=np.float32), (keep, pos[keep])),
            shape=(len(self.var_names_), len(var_names)),
        )
        out = sparse.csr_matrix(attention @ selector, dtype=np.float32)
        out.eliminate_zeros()
        return out

    @staticmethod
    def _write_predictions(adata: AnnData, result: PredictionResult, key: str) -> None:
        """Write a PredictionResult into `adata` under `key` (all-or-nothing)."""
        obs_updates = {
            f"{key}_prediction": pd.Categorical(result.prediction),
            f"{key}_confidence": result.confidence.to_numpy(dtype=np.float32),
        }
        proba = result.probabilities.copy()
        proba.index = adata.obs_names
        # everything is computed above; only assignments below, so a failure leaves no trace
        for k, v in obs_updates.items():
            adata.obs[k] = v
        adata.obsm[f"{key}_probabilities"] = proba
        adata.obsm[f"X_{key}"] = np.asarray(result.embedding, dtype=np.float32)
        adata.layers[f"{key}_attention"] = result.attention
        adata.uns[f"{key}_markers"] = result.markers
        adata.uns[key] = {"params": result.params, **result.uns}
