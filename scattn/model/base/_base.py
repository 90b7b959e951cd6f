"""The base of every scattn model: set-up fields, genes and fitted state; with starting from
another model (``_transfer``), save/load (``_persistence``) and training runs
(:mod:`scattn.train`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalJointObsField, CategoricalObsField
from scvi.model.base import BaseModelClass

from scattn._docs import scattn_dsp
from scattn.data import (
    ExpressionField,
    LabelsField,
    genes_to_positions,
    log_normalize,
    select_variable_genes,
)
from scattn.train import TrainingRunnerMixin

from ._data import AlignedDataMixin, covariate_keys
from ._fitted import FITTED_ATTR, FittedState
from ._persistence import PersistenceMixin
from ._setup import validate_setup
from ._transfer import SourceMixin

logger = logging.getLogger(__name__)

Expression = Literal["counts", "log1p"]


class ScattnModel(AlignedDataMixin, SourceMixin, PersistenceMixin, TrainingRunnerMixin, BaseModelClass):
    """Base of every scattn model: AnnData fields, the model's genes, fitted state, save/load.

    A model declares what it is by the mixins it adds (``LatentMixin``, ``AttentionMixin``,
    ``ClassifierMixin``, ``PretrainingMixin``, ``QueryMixin``) and by class attributes:

    * ``_module_cls``, ``_key`` (default ``key_added``: ``"cgran"``...);
    * ``_labels``: ``"required"`` (a classifier that cannot exist without labels),
      ``"optional"`` (labels may be registered, e.g. a model that can be pretrained first) or
      ``"none"``;
    * ``_batch_key``: whether ``setup_anndata`` takes a ``batch_key`` (registered as
      ``REGISTRY_KEYS.BATCH_KEY``); ``_covariates``: whether it takes
      ``categorical_covariate_keys`` (``REGISTRY_KEYS.CAT_COVS_KEY``).

    ``__init__(adata, ..., fitted=None)`` computes the model's :class:`FittedState` (genes,
    module buffers) on `adata` when `fitted` is `None`, else takes it as given (``load``,
    ``load_query_data``, ``from_pretrained``), calls :meth:`_init_panel` and builds
    ``self.module``; it ends with ``self._record_init_params(locals())``.
    """

    _key = "model"
    #: whether ``predict`` writes a per-cell gene attribution (set by ``AttentionMixin``)
    _writes_attribution = False
    _labels: Literal["required", "optional", "none"] = "optional"
    _batch_key = False
    _covariates = False
    #: whether `setup_anndata` takes a ``gene_id_key`` (models with a gene vocabulary)
    _gene_ids = False
    #: whether `setup_anndata` takes a ``condition_key`` (a cell-level condition, e.g.
    #: stimulation, registered as ``scattn.module.CONDITION_KEY``)
    _condition_key = False

    # -- set-up ---------------------------------------------------------------------------
    @classmethod
    @scattn_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str | None = None,
        *,
        layer: str | None = None,
        expression: Expression = "counts",
        unlabeled_category: str = "Unknown",
        classes: Sequence[str] | None = None,
    ) -> None:
        """Register `adata` with the model.

        Parameters
        ----------
        %(setup_core)s

        Notes
        -----
        %(setup_notes)s
        """
        cls._register(adata, labels_key, layer=layer, expression=expression,
                      unlabeled_category=unlabeled_category, classes=classes)

    @classmethod
    def _register(
        cls,
        adata: AnnData,
        labels_key: str | None = None,
        *,
        layer: str | None = None,
        expression: Expression = "counts",
        unlabeled_category: str = "Unknown",
        classes: Sequence[str] | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        gene_id_key: str | None = None,
        condition_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register `adata` with every field this model class may read (the one registration
        path: each model's public ``setup_anndata`` shows only what it accepts and calls this;
        ``load`` and ``load_query_data`` call it with a saved or reference registration). The
        arguments are those of the public methods; a key the class cannot use is refused."""
        if set(kwargs) - {"source_registry", "extend_categories", "allow_missing_labels"}:
            # (no local variable before this point: scvi records every local as a setup argument)
            raise TypeError(f"setup_anndata got unexpected arguments: {', '.join(sorted(kwargs))}.")
        classes = None if classes is None else [str(c) for c in classes]
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._check_setup_keys(labels_key, batch_key, categorical_covariate_keys)
        if condition_key is not None and not cls._condition_key:
            raise ValueError(f"{cls.__name__} has no condition tokens; call setup_anndata without "
                             "condition_key.")
        if gene_id_key is not None and not cls._gene_ids:
            raise ValueError(f"{cls.__name__} matches genes by adata.var_names; call setup_anndata "
                             "without gene_id_key.")
        if gene_id_key is not None and "source_registry" not in kwargs:
            from scattn.data import GeneVocabulary, gene_ids

            GeneVocabulary(gene_ids(adata, gene_id_key))  # a clear error for missing or repeated IDs
        if "source_registry" not in kwargs:
            validate_setup(adata, labels_key, layer, expression, unlabeled_category, classes=classes,
                           obs_keys=covariate_keys({"batch_key": batch_key, "categorical_covariate_keys":
                                                    categorical_covariate_keys,
                                                    "condition_key": condition_key}))
        fields = cls._anndata_fields(layer=layer, expression=expression, labels_key=labels_key,
                                     unlabeled_category=unlabeled_category, classes=classes,
                                     batch_key=batch_key,
                                     categorical_covariate_keys=categorical_covariate_keys,
                                     condition_key=condition_key)
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def _check_setup_keys(cls, labels_key, batch_key, categorical_covariate_keys) -> None:
        name = cls.__name__
        if labels_key is None and cls._labels == "required":
            raise ValueError(f"{name} is a classifier: pass labels_key, the obs column with cell types.")
        if labels_key is not None and cls._labels == "none":
            raise ValueError(f"{name} takes no labels; call setup_anndata without labels_key.")
        if batch_key is not None and not cls._batch_key:
            raise ValueError(
                f"{name} has no batch covariate; call setup_anndata without batch_key "
                "(test samples for novel types with `sa.tl.novelty(..., groupby=batch_key)`)."
            )
        if categorical_covariate_keys and not cls._covariates:
            raise ValueError(f"{name} uses no categorical covariates; call setup_anndata without "
                             "categorical_covariate_keys.")

    @classmethod
    def _anndata_fields(cls, *, layer, expression, labels_key, unlabeled_category, classes,
                        batch_key, categorical_covariate_keys, condition_key=None) -> list:
        """The scvi-tools fields this model registers (expression; labels, batch, covariates,
        condition where given)."""
        fields = [ExpressionField(REGISTRY_KEYS.X_KEY, layer, is_count_data=expression == "counts")]
        if labels_key is not None:
            fields.append(LabelsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category,
                                      classes=classes))
        if batch_key is not None:
            fields.append(CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key))
        if categorical_covariate_keys:
            fields.append(CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys))
        if condition_key is not None:
            from scattn.module import CONDITION_KEY

            fields.append(CategoricalObsField(CONDITION_KEY, condition_key))
        return fields

    # -- fields as the model sees them ---------------------------------------------------------
    @property
    def _has_labels(self) -> bool:
        return REGISTRY_KEYS.LABELS_KEY in self.adata_manager.data_registry

    def _registered_classes(self) -> list[str]:
        """The known classes of the registered labels, in the classifier's output order
        (none without labels)."""
        if not self._has_labels:
            return []
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY).categorical_mapping
        return [str(c) for c in mapping[:-1]]

    @property
    def n_batch(self) -> int:
        """Number of registered batches (0 without a batch key)."""
        if REGISTRY_KEYS.BATCH_KEY not in self.adata_manager.data_registry:
            return 0
        return len(self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)

    # -- genes and fitted state -----------------------------------------------------------------
    def _panel_state(self, n_top_genes: int | None, genes: Sequence[str] | None, *,
                     lognorm=None) -> FittedState:
        """The model's genes on its own data: `genes` by name, the `n_top_genes` most variable
        ones, or (both `None`) every registered gene. `lognorm`: the log-normalised registered
        matrix, if the caller has it already."""
        if n_top_genes is not None and n_top_genes < 1:
            raise ValueError(f"n_top_genes must be >= 1 or None, got {n_top_genes}.")
        if genes is not None:
            index = genes_to_positions(self.adata.var_names, genes)
        elif n_top_genes is None:
            index = np.arange(self.adata.n_vars)
        else:
            if lognorm is None:
                lognorm = self._registered_lognorm()
            index = select_variable_genes(lognorm, n_top_genes)
        return FittedState([str(g) for g in self.adata.var_names[index]], np.asarray(index))

    def _registered_lognorm(self):
        """The registered expression, log-normalised (block by block if backed)."""
        matrix = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        return log_normalize(matrix, self._setup_args["expression"])

    def _init_panel(self, fitted: FittedState) -> None:
        """Take the model's genes and classes from `fitted` and the registered labels."""
        #: the known classes, in the classifier's output order (empty without labels)
        self.classes_: list[str] = self._registered_classes()
        #: the genes the model reads, in its order
        self.var_names_ = pd.Index(fitted.var_names)
        self._gene_index = np.asarray(fitted.gene_index)

    def _module_gene_args(self, fitted: FittedState) -> dict:
        """What every panel module's constructor takes from the data: the registered gene
        count, the head size (`None` without labels), the model's gene positions and whether
        to normalise counts (set up with ``expression="counts"``; log-normalised input is read
        as given)."""
        return {
            "n_input": self.summary_stats.n_vars,
            "n_labels": len(self.classes_) if self.classes_ else None,
            "gene_index": torch.as_tensor(fitted.gene_index),
            "normalize_counts": self._setup_args["expression"] == "counts",
        }

    def _fitted_state(self) -> FittedState:
        """The fitted state of this model (genes, module buffers), as saved."""
        return FittedState(list(self.var_names_), self._gene_index, self.module.fitted_state())

    def _record_init_params(self, init_locals: dict) -> None:
        """``init_params_`` (saved with the model) without the fitted state."""
        self.init_params_ = self._get_init_params(init_locals)
        self.init_params_["non_kwargs"].pop("fitted", None)

    def _get_user_attributes(self):
        # what scvi-tools saves: every attribute ending in "_", plus the fitted state
        return [*super()._get_user_attributes(), (FITTED_ATTR, self._fitted_state().to_dict())]

    def _check_usable(self, *, head: bool = False) -> None:
        """Warn before inference with an untrained model. A pretrained (or published-checkpoint)
        model is ready for everything but its classifier head (`head`): its zero-shot
        embedding, attention and expression outputs are what a user loads a checkpoint for."""
        if getattr(self, "is_pretrained_", False) and not head:
            return
        self._check_if_trained(warn=True)

