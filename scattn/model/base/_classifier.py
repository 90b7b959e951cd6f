"""The classifier mixin: training for labels, predict, and writing the results."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scattn._docs import scattn_dsp
from scattn._quiet import user_stacklevel
from scattn._version import __version__
from scattn._write import write_results
from scattn.data import balanced_class_weights
from scattn.module import MODULE_KEYS
from scattn.train import SETTINGS_BATCH_SIZE, ClassificationPlan, StepBudget, TrainDefaults

from ._results import PredictionResult

logger = logging.getLogger(__name__)

UNKNOWN = "Unknown"


class ClassifierMixin:
    """Training for labels, prediction and result writing.

    A model using it may change ``_train_defaults`` (a :class:`~scattn.train.TrainDefaults`:
    100 epochs, Adam at 1e-3, patience 10...), and has a :class:`~scattn.module.PanelModule` whose ``inference`` returns
    ``logits`` and ``z`` once it has a head. A model built without labels (e.g. to pretrain) has no head;
    :meth:`PretrainingMixin.from_pretrained <scattn.model.base.PretrainingMixin.from_pretrained>`
    starts a labelled model, head included, from it. With :class:`AttentionMixin`,
    ``predict`` also writes the attribution layer and markers.
    """

    _training_plan_cls = ClassificationPlan
    # patience: 10 epochs, or as many as make 100 optimiser steps where epochs are shorter (on
    # 100 cells an epoch is 2-3 minibatches; the rule every model's patience follows)
    _train_defaults = TrainDefaults(max_epochs=100, lr=1e-3, weight_decay=0.0,
                                    batch_size=SETTINGS_BATCH_SIZE,
                                    early_stopping_patience=StepBudget(10, 100))

    def _require_classifier(self) -> None:
        """A clear error for a model without labels or head."""
        if not getattr(self.module, "has_head", True):
            raise ValueError(
                f"This {type(self).__name__} has no classifier: it was set up without labels_key. "
                f"Set up labelled data and start a classifier from it with "
                f"`sa.model.{type(self).__name__}.from_pretrained(model, labelled_adata)`."
            )

    @contextmanager
    def _training_cells(self) -> Iterator[AnnData | None]:
        """The cells ``train()`` fits, registered with this model: `None`, the model's own
        AnnData (a query model adapting to unlabelled cells trains on more, see
        :class:`~scattn.model.base.QueryMixin`)."""
        yield None

    def _is_adapting(self) -> bool:
        """Whether ``train()`` fits more than the model's own cells (see :meth:`_training_cells`)."""
        return False

    def _require_labelled_cells(self) -> None:
        """A clear error when no registered cell has a label (e.g. loaded without labels)."""
        if self._is_adapting():
            return  # an adapting query model trains on the reference's and pseudo-labelled cells
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
        if not (codes < len(self.classes_)).any():
            key = self._setup_args.get("labels_key")
            raise ValueError(
                f"No cell of the model's AnnData has a label in adata.obs[{key!r}] (the column is "
                "missing or every cell is unlabelled); training needs labelled cells."
            )

    # -- training --------------------------------------------------------------------------
    @scattn_dsp.dedent
    def train(
        self,
        max_epochs: int | None = None,
        *,
        lr: float | None = None,
        weight_decay: float | None = None,
        batch_size: int | None = None,
        train_size: float | None = None,
        validation_size: float | None = None,
        early_stopping: bool | None = None,
        early_stopping_patience: int | None = None,
        restore_best_weights: bool | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        precision: str | int | None = None,
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train the classifier (cross-entropy of the labelled cells, Adam).

        Parameters
        ----------
        %(train)s

        Notes
        -----
        %(train_defaults)s

        Training history (``train_loss``, ``validation_loss``, ``accuracy_train``,
        ``accuracy_validation``) is in ``model.history`` (under DDP: in rank 0).
        """
        self._require_classifier()
        self._check_own_data()
        self._require_labelled_cells()
        call = locals()
        with self._training_cells() as data:
            args = self._args_of_call(self._train_defaults, call,
                                      n_cells=(self.adata if data is None else data).n_obs)
            self._run_training(self._classification_plan(args, plan_kwargs, data), args, adata=data,
                               accelerator=accelerator, devices=devices,
                               datasplitter_kwargs=datasplitter_kwargs, **trainer_kwargs)

    def _classification_plan(self, args, plan_kwargs: dict | None, adata: AnnData | None = None):
        """The training plan of :meth:`train` (Adam on the class-balanced cross-entropy; a
        model may change the optimiser through `plan_kwargs` or override this)."""
        plan = {"lr": args.lr, "eps": 1e-8, "weight_decay": args.weight_decay,
                "class_weights": self._balanced_class_weights(adata)}
        plan.update(plan_kwargs or {})
        return self._training_plan_cls(self.module, **plan)

    def _balanced_class_weights(self, adata: AnnData | None = None) -> np.ndarray:
        """:func:`~scattn.data.balanced_class_weights` of the labelled cells of `adata`
        (registered with this model; `None`: its own), the default ``class_weights`` of
        training: a class of 5 cells weighs in the loss as much as one of 500."""
        manager = self.adata_manager if adata is None else self.get_anndata_manager(adata)
        codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
        return balanced_class_weights(codes, len(self.classes_))

    # -- inference -------------------------------------------------------------------------
    @scattn_dsp.dedent
    def predict_proba(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Class probabilities, cells x classes.

        Parameters
        ----------
        %(adata)s
        %(indices)s
        %(batch_size)s
        """
        self._require_classifier()
        self._check_usable(head=True)
        out = self._infer(adata, indices=indices, batch_size=batch_size, keys=(MODULE_KEYS.LOGITS,),
                          desc=f"{type(self).__name__}.predict_proba")
        names = self._obs_names_of(adata, indices)
        probs = torch.softmax(torch.from_numpy(out[MODULE_KEYS.LOGITS]), -1).numpy()
        return pd.DataFrame(probs, index=names, columns=self.classes_)

    def predict(
        self,
        adata: AnnData | None = None,
        *,
        key_added: str | None = None,
        inplace: bool = True,
        unknown_threshold: float | None = None,
        attention_top_k: int = 50,
        n_markers: int = 100,
        batch_size: int | None = None,
        min_gene_overlap: float = 0.5,
    ) -> PredictionResult | None:
        """Predict cell types and write predictions, embedding, attribution and markers.

        Parameters
        ----------
        adata
            AnnData to predict, with the kind of data the model was set up with; genes are
            matched by name (missing genes zero-filled with a warning). `None`: the training
            AnnData (its unlabelled cells included).
        key_added
            Prefix of every key written; `None`: the model's name in lower case
            (``"cgran"``, ``"cfan"``, ``"sims"``).
        inplace
            Write into `adata`; with `False` nothing is written and a
            :class:`~scattn.model.base.PredictionResult` is returned.
        unknown_threshold
            Cells whose highest probability is below it are labelled ``"Unknown"``; in
            (0, 1). :func:`scattn.tl.unknown_threshold` picks one from reference cells.
        attention_top_k
            Attribution weights kept per cell (and the CGRAN paper's top-k "picked" rule
            for markers).
        n_markers
            Genes ranked per class in the markers.
        batch_size
            Minibatch size for inference.
        min_gene_overlap
            Smallest fraction of the model's genes that `adata` must have.

        Returns
        -------
        With ``inplace=True`` `None`, and writes (``key = key_added``):

        ``adata.obs[f"{key}_prediction"]``
            Predicted class (categorical; ``"Unknown"`` below `unknown_threshold`).
        ``adata.obs[f"{key}_confidence"]``
            Highest class probability.
        ``adata.obsm[f"{key}_probabilities"]``
            DataFrame, cells x classes.
        ``adata.obsm[f"X_{key}"]``
            The cell embedding (see the model's Notes for what it is).
        ``adata.layers[f"{key}_attention"]``
            Sparse cells x genes: each cell's `attention_top_k` largest positive attribution
            weights (see the model's Notes; genes the model does not read are zero).
        ``adata.uns[f"{key}_markers"]``
            Markers per predicted class from the attribution, ``rank_genes_groups`` layout
            (see :func:`scattn.tl.marker_genes_from_attention`).
        ``adata.uns[key]["params"]``
            Model class, scattn version, keys, threshold, classes.
        ``adata.uns[key][...]``
            Model-specific results (SIMS: ``"feature_importances"``, ``"class_importances"``;
            see the model's Notes).

        With ``inplace=False``, a :class:`~scattn.model.base.PredictionResult` holding the same.
        """
        key_added = self._key if key_added is None else key_added
        result = self._predict(
            adata,
            key_added=key_added,
            unknown_threshold=unknown_threshold,
            attention_top_k=attention_top_k,
            n_markers=n_markers,
            batch_size=batch_size,
            min_gene_overlap=min_gene_overlap,
        )
        if not inplace:
            return result
        self._write_predictions(self.adata if adata is None else adata, result, key_added)
        return None

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
        if unknown_threshold is not None and not 0 < unknown_threshold < 1:
            raise ValueError(f"unknown_threshold must be in (0, 1), got {unknown_threshold}.")
        if attention_top_k < 1:
            raise ValueError(f"attention_top_k must be >= 1, got {attention_top_k}.")
        self._require_classifier()
        self._check_usable(head=True)
        target = self.adata if adata is None else adata
        attribution = self._writes_attribution
        summary = self._attention_summary() if attribution else None
        out = self._infer(adata, min_gene_overlap=min_gene_overlap, with_empty=True,
                          desc=f"{type(self).__name__}.predict", batch_size=batch_size,
                          attention_top_k=attention_top_k if attribution else None, accumulate=summary)
        empty = out["empty"]
        probs = torch.softmax(torch.from_numpy(out[MODULE_KEYS.LOGITS]), -1).numpy()
        classes = self.classes_
        best = probs.argmax(1)
        confidence = probs.max(1)
        labels = np.asarray(classes, dtype=object)[best]
        categories = list(classes)
        if unknown_threshold is not None:
            labels = np.where(confidence < unknown_threshold, UNKNOWN, labels)
        if empty.any():
            warnings.warn(
                f"{int(empty.sum())} cells have no counts on any of the model's "
                f"{len(self._read_genes)} genes; they are labelled {UNKNOWN!r} with confidence, "
                "probabilities and embedding NaN.", UserWarning, stacklevel=user_stacklevel(),
            )
            out[MODULE_KEYS.Z] = np.where(empty[:, None], np.nan, out[MODULE_KEYS.Z])
            labels = np.where(empty, UNKNOWN, labels)
            confidence = np.where(empty, np.nan, confidence)
            probs = np.where(empty[:, None], np.nan, probs)
        if (labels == UNKNOWN).any() and UNKNOWN not in categories:
            categories.append(UNKNOWN)
        index = target.obs_names
        # unused categories dropped, as scanpy's own tools write them (its plots expect it)
        prediction = pd.Series(
            pd.Categorical(labels, categories=categories).remove_unused_categories(), index=index
        )
        params = {
            "model": type(self).__name__,
            "scattn_version": __version__,
            "key_added": key_added,
            "unknown_threshold": unknown_threshold,
            "attention_top_k": attention_top_k,
            "n_model_genes": len(self.var_names_),
            "classes": classes,
        }
        attention = markers = None
        if attribution:
            params["attention"] = self._attention_description
            attention = self._attention_in_genes_of(out.pop(MODULE_KEYS.ATTENTION), target.var_names)
            markers = self._attention_markers(attention, prediction, target.var_names, key=key_added,
                                              top_k=attention_top_k, n_genes=n_markers)
        return PredictionResult(
            uns={} if summary is None else summary.results(self._readable_in(target.var_names)),
            prediction=prediction,
            confidence=pd.Series(confidence, index=index),
            probabilities=pd.DataFrame(probs, index=index, columns=classes),
            embedding=out[MODULE_KEYS.Z],
            attention=attention,
            var_names=target.var_names.copy(),
            markers=markers,
            params=params,
        )

    def _write_predictions(self, adata: AnnData, result: PredictionResult, key: str) -> None:
        """Write a PredictionResult into `adata` under `key` (all-or-nothing)."""
        proba = result.probabilities.copy()
        proba.index = adata.obs_names
        items = [
            ("obs", f"{key}_prediction", pd.Categorical(result.prediction)),
            ("obs", f"{key}_confidence", result.confidence.to_numpy(dtype=np.float32)),
            ("obsm", f"{key}_probabilities", proba),
            ("obsm", f"X_{key}", np.asarray(result.embedding, dtype=np.float32)),
        ]
        if result.attention is not None:
            items += [("layers", f"{key}_attention", result.attention),
                      ("uns", f"{key}_markers", result.markers)]
        items.append(("uns", key, {"params": result.params, **result.uns}))
        write_results(adata, items, by=f"{type(self).__name__}.predict")
