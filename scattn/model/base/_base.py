"""The base of every scattn model: set-up fields, genes, fitted state, training runs, save/load."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData, read_h5ad
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalJointObsField, CategoricalObsField
from scvi.model.base import BaseModelClass

from scattn._compat import parse_device_args
from scattn._docs import scattn_dsp
from scattn.data import (
    ExpressionField,
    LabelsField,
    check_input,
    check_labels,
    check_not_empty,
    genes_to_positions,
    labelled_mask,
    log_normalize,
    select_variable_genes,
)
from scattn.train import TrainingRunnerMixin

from ._data import AlignedDataMixin, covariate_keys
from ._fitted import FITTED_ATTR, FittedState, Source, check_shared_genes, read_checkpoint

logger = logging.getLogger(__name__)

Expression = Literal["counts", "log1p"]


def validate_setup(adata: AnnData, labels_key: str | None, layer: str | None, expression: str,
                   unlabeled_category: str, *, classes: list[str] | None = None,
                   obs_keys: Sequence[str] = ()) -> None:
    """Every check `setup_anndata` makes before it registers anything."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    if adata.is_view:
        raise ValueError("adata is a view; call `adata = adata.copy()` first.")
    check_not_empty(adata)  # before the labels, whose checks would misread an empty AnnData
    cols = ", ".join(map(repr, adata.obs.columns[:10])) or "none"
    for key in obs_keys:
        if key not in adata.obs:
            raise KeyError(f"{key!r} is not a column of adata.obs (columns: {cols}).")
        if adata.obs[key].isna().any():
            raise ValueError(f"adata.obs[{key!r}] has missing values; every cell needs one.")
    if labels_key is not None:
        if labels_key not in adata.obs:
            raise KeyError(f"labels_key {labels_key!r} is not a column of adata.obs (columns: {cols}).")
        check_labels(adata.obs[labels_key], unlabeled_category, labels_key=labels_key, classes=classes)
    check_input(adata, layer, expression)


class ScattnModel(AlignedDataMixin, TrainingRunnerMixin, BaseModelClass):
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
    #: stimulation, registered as ``scattn.module._constants.CONDITION_KEY``)
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
            from scattn.module._constants import CONDITION_KEY

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

    # -- starting from another model ------------------------------------------------------------
    @classmethod
    def _gene_names_of(cls, adata: AnnData, setup_args: dict | None = None) -> pd.Index:
        """The names `adata`'s genes are matched by: ``var_names``, or for models with a gene
        vocabulary the ``gene_id_key`` column of `setup_args` (`None`: the set-up arguments
        `adata` was last registered with)."""
        key = None
        if cls._gene_ids:
            if setup_args is None:
                manager = cls._get_most_recent_anndata_manager(adata)
                setup_args = {} if manager is None else manager.registry["setup_args"]
            key = setup_args.get("gene_id_key")
        if key is None:
            return pd.Index(adata.var_names)
        from scattn.data import gene_ids

        return gene_ids(adata, key)

    @classmethod
    def _transfer_buffers(cls, source: Source, adata: AnnData, gene_index: np.ndarray, **kwargs) -> dict:
        """The module's fitted buffers for a model on `adata` that starts from `source`
        (`gene_index`: the source's genes in `adata`, its gene count marking absent ones).
        Default: the source's buffers."""
        return dict(source.fitted.buffers)

    @classmethod
    def _readable_source_genes(cls, source: Source) -> np.ndarray:
        """Which of `source`'s genes a model started from it may read where the new data has
        them (default: all); the others read as absent, whatever the data holds."""
        return np.ones(len(source.var_names), dtype=bool)

    @classmethod
    def _check_source(cls, source: Source, adata: AnnData, *, setup_args: dict, min_gene_overlap: float,
                      names: tuple[str, str] = ("source model", "adata")) -> None:
        """Whether a model on `adata` (set up, or to be set up, with `setup_args`) can start
        from `source`: the same kind of data, enough of the source's genes (`names`: what the
        messages call the source and `adata`)."""
        theirs = source.setup_args.get("expression", "counts")
        ours = setup_args.get("expression", "counts")
        if theirs != ours:
            raise ValueError(f"The source model reads expression={theirs!r}, adata was set up with "
                             f"expression={ours!r}; set it up the same way.")
        check_shared_genes(source.var_names, cls._gene_names_of(adata, setup_args),
                           min_overlap=min_gene_overlap, source=names[0], target=names[1])

    @classmethod
    def _from_source(cls, source: Source, adata: AnnData, **transfer_kwargs):
        """A model on registered `adata` with `source`'s architecture, genes (found by name;
        absent ones read as zero) and weights; a head for `adata`'s classes, rows of classes the
        source knows copied."""
        pos = cls._gene_names_of(adata).get_indexer(source.var_names)
        gene_index = np.where((pos >= 0) & cls._readable_source_genes(source), pos, adata.n_vars)
        buffers = cls._transfer_buffers(source, adata, gene_index, **transfer_kwargs)
        fitted = FittedState(list(source.var_names), gene_index, buffers)
        model = cls(adata, **source.init_params, fitted=fitted)
        model._copy_weights(source)
        return model

    def _copy_weights(self, source: Source) -> None:
        """Copy `source`'s weights except fitted buffers; head rows by class name."""
        module = self.module
        fitted = module.fitted_state_keys()
        head = set(module.head_parameter_names())
        state = module.state_dict()
        row = {c: i for i, c in enumerate(source.classes)}
        for key, value in state.items():
            if key in fitted or key not in source.state_dict:
                continue
            ref = source.state_dict[key].to(value.device)
            if key in head:
                if value.dim() and value.shape[0] == len(self.classes_) and ref.shape[0] == len(row):
                    for i, c in enumerate(self.classes_):
                        if c in row:
                            value[i] = ref[row[c]]
                elif ref.shape == value.shape:
                    state[key] = ref.clone()
                continue
            state[key] = ref.clone() if ref.shape == value.shape else self._reshaped_weight(key, ref, value)
        module.load_state_dict(state)

    def _reshaped_weight(self, key: str, ref: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """The source's weight `key` (`ref`) for this model's differently shaped `value`.

        Default: an error. A model whose weights may legitimately grow from its source (scViT's
        batch columns for a query's new batches) overrides it.
        """
        raise ValueError(f"Weight {key} of the source model has shape {tuple(ref.shape)}, "
                         f"this model {tuple(value.shape)}.")

    # -- persistence ----------------------------------------------------------------------
    @staticmethod
    def _validate_for_load(adata: AnnData, args: dict, classes: list[str]) -> None:
        """The checks of `setup_anndata` for an AnnData a saved model is loaded with.

        Its labels may be missing or all unlabelled (to predict), but a label the model does
        not know is an error, not silently "unlabelled".
        """
        labels_key = args.get("labels_key")
        unlabeled = args.get("unlabeled_category", "Unknown")
        validate_setup(adata, None, args.get("layer"), args.get("expression", "counts"), unlabeled,
                       obs_keys=covariate_keys(args))
        if labels_key is not None and labels_key in adata.obs:
            labels = adata.obs[labels_key]
            if labelled_mask(labels, unlabeled).any():
                check_labels(labels, unlabeled, labels_key=labels_key, classes=classes)

    def save(self, dir_path: str, prefix: str | None = None, overwrite: bool = False,
             save_anndata: bool = False, **kwargs) -> None:
        """Save the model (and with `save_anndata` its AnnData) into `dir_path`.

        Files are written into a temporary folder beside `dir_path` and moved in when complete,
        the model file last: a crash while saving leaves the previous save (or nothing) in
        place, never a half-written model that :meth:`load` would read.

        Parameters
        ----------
        dir_path
            Directory to write (created if missing).
        prefix
            Prefix of the file names.
        overwrite
            Replace a model saved there before. Without it, an existing `dir_path` is an error.
        save_anndata
            Also write the AnnData (``adata.h5ad``), so that ``load(dir_path)`` needs none.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save`.
        """
        import shutil
        import tempfile

        dir_path = os.fspath(dir_path)
        if os.path.exists(dir_path) and not os.path.isdir(dir_path):
            raise ValueError(f"{dir_path!r} is a file, not a directory; save into a directory.")
        if os.path.isdir(dir_path) and not overwrite:
            raise ValueError(f"{dir_path!r} already exists; pass `overwrite=True` to replace the "
                             "model saved there, or choose another directory.")
        parent = os.path.dirname(os.path.abspath(dir_path))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dir_path)}.saving-", dir=parent)
        try:
            super().save(tmp, prefix=prefix, overwrite=True, save_anndata=save_anndata, **kwargs)
            os.makedirs(dir_path, exist_ok=True)
            model_file = f"{prefix or ''}model.pt"
            # never an old model beside new data, nor an old AnnData beside a new model
            for name in (model_file, f"{prefix or ''}adata.h5ad"):
                if os.path.exists(os.path.join(dir_path, name)):
                    os.remove(os.path.join(dir_path, name))
            for name in sorted(os.listdir(tmp), key=lambda n: n == model_file):
                os.replace(os.path.join(tmp, name), os.path.join(dir_path, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, *, accelerator: str = "auto",
             device: int | str = "auto", prefix: str | None = None):
        """Load a model saved with ``model.save(dir_path)``.

        `adata` must have the genes the model was set up with, in the same order (the
        training AnnData, or one with the same ``var_names``); to predict on other data, call
        ``model.predict(other)`` on the loaded model, which aligns genes by name. Without
        `adata`, the model must have been saved with ``save_anndata=True``. Nothing is refitted:
        genes (and embeddings, groups, class weights) come from the saved model and reach it
        through its constructor (``fitted=``).

        Parameters
        ----------
        dir_path
            Directory written by ``model.save``.
        adata
            The AnnData to attach (see above); registered like the saved model's.
        accelerator, device
            Where to put the model (scvi-tools' arguments).
        prefix
            File name prefix used when saving.
        """
        prefix = prefix or ""
        saved = read_checkpoint(os.path.join(dir_path, f"{prefix}model.pt"), expected=cls.__name__)
        source = pd.Index(saved["var_names"])
        if adata is None:
            adata_path = os.path.join(dir_path, f"{prefix}adata.h5ad")
            if not os.path.exists(adata_path):
                raise ValueError(
                    f"{dir_path!r} holds no AnnData: pass `adata=` (the training data), or save "
                    "the model with `model.save(dir, save_anndata=True)`."
                )
            adata = read_h5ad(adata_path)
        if not source.equals(adata.var_names):
            shared = int(source.isin(adata.var_names).sum())
            order = ", in another order" if shared == len(source) == adata.n_vars else ""
            raise ValueError(
                f"adata's genes differ from the {len(source)} the model was set up with "
                f"({shared} shared{order}). Load with the training AnnData (or save with "
                "`save_anndata=True` and load without adata), then `model.predict(other_adata)`, "
                "which aligns genes by name."
            )
        attrs = dict(saved["attr_dict"])
        registry = attrs.pop("registry_")
        fitted = FittedState.from_dict(attrs.pop(FITTED_ATTR))
        init = attrs.pop("init_params_")
        cls._validate_for_load(adata, registry["setup_args"], attrs.get("classes_") or [])
        cls._register(adata, source_registry=registry, **registry["setup_args"])
        model = cls(adata, **init["non_kwargs"], **init["kwargs"], fitted=fitted)
        for attr, val in attrs.items():
            setattr(model, attr, val)
        state = dict(saved["model_state_dict"])
        model.module.on_load(model, pyro_param_store=state.pop("pyro_param_store", None))
        model.module.load_state_dict(state)
        _, _, torch_device = parse_device_args(accelerator=accelerator, devices=device,
                                               return_device="torch", validate_single_device=True)
        model.to_device(torch_device)
        model.module.eval()
        return model
