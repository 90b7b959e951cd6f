"""Reference-to-query transfer: a model for a new dataset that starts from a trained one."""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scattn.data import check_input, check_labels
from scattn.data._validate import label_strings

logger = logging.getLogger(__name__)

FineTune = Literal["classifier", "all"]


class QueryMixin:
    """``load_query_data`` in the scvi-tools manner, for :class:`GenePanelClassifier` models.

    A subclass names its classifier-head parameters in ``_head_prefixes`` and may add fitted
    buffers for the query (e.g. embeddings) in :meth:`_query_state`.
    """

    _head_prefixes: tuple[str, ...] = ("classifier.",)
    #: ``fine_tune`` of a query model (``None`` otherwise); the freezing is not saved: a
    #: query model reloaded with ``load`` trains every weight
    fine_tune_: str | None = None

    @classmethod
    def _query_state(cls, reference, adata: AnnData, gene_index: np.ndarray, **kwargs) -> dict:
        """Fitted module buffers of the query model besides the gene positions."""
        return {}

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model,
        *,
        fine_tune: FineTune = "all",
        extend_classes: bool = False,
        min_gene_overlap: float = 0.5,
    ):
        """A model for a query dataset that starts from a trained reference model.

        The query is registered like the reference (same layer, kind of data and labels
        column; the reference's classes); the reference's genes are found in the query by
        name (genes the query lacks read as zero in this model, also on data it predicts
        later) and every weight is copied (SIMS recomputes its class weights from the
        query's labels). ``model.train(...)`` then fine-tunes on the query's labelled cells:
        only the classifier (the CFAN/CGRAN paper's setting A) or the whole network
        (setting B).

        Parameters
        ----------
        adata
            The query AnnData, with the reference's labels column (unlabelled cells NaN or the
            reference's `unlabeled_category`). Registered in place, as scvi-tools does.
        reference_model
            A trained model of this class.
        fine_tune
            ``"classifier"``: train only the final layer; ``"all"``: every weight.
        extend_classes
            Add the query's labels that the reference lacks as new classes (new classifier
            rows). With `False`, such labels are an error.
        min_gene_overlap
            Smallest fraction of the reference's genes the query must have.

        Returns
        -------
        The query model (not yet trained; predicting with it before training warns).
        """
        return cls._make_query_model(
            adata, reference_model, fine_tune=fine_tune, extend_classes=extend_classes,
            min_gene_overlap=min_gene_overlap,
        )

    @classmethod
    def _make_query_model(
        cls,
        adata: AnnData,
        reference_model,
        *,
        fine_tune: FineTune,
        extend_classes: bool,
        min_gene_overlap: float,
        **state_kwargs,
    ):
        """Register `adata` like the reference, build the query model, copy weights, freeze."""
        from ._panel import _FITTED_STATE

        if not isinstance(reference_model, cls):
            raise TypeError(
                f"reference_model must be a trained {cls.__name__}, got {type(reference_model).__name__}."
            )
        reference_model._check_if_trained(warn=False, message="The reference model is not trained.")
        if fine_tune not in ("classifier", "all"):
            raise ValueError(f"fine_tune must be 'classifier' or 'all', got {fine_tune!r}.")
        if not 0 < min_gene_overlap <= 1:
            raise ValueError(f"min_gene_overlap must be in (0, 1], got {min_gene_overlap}.")
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
        if adata.is_view:
            raise ValueError("adata is a view; call `adata = adata.copy()` first.")
        if adata is reference_model.adata:
            raise ValueError(
                "The query is the reference model's own AnnData; registering it again would "
                "change the reference's registration. Pass a copy (`adata.copy()`)."
            )
        setup = reference_model._setup_args
        labels_key, unlabeled = setup["labels_key"], setup["unlabeled_category"]
        layer, expression = setup["layer"], setup["expression"]
        if labels_key not in adata.obs:
            raise KeyError(
                f"The query has no adata.obs[{labels_key!r}], the reference's labels column. Add it "
                f"with the query's labels ({unlabeled!r} or NaN where unknown) to fine-tune; to only "
                "predict, call `reference_model.predict(query_adata)`."
            )
        check_input(adata, layer, expression)
        ref_classes = list(reference_model.classes_)
        labels = adata.obs[labels_key]
        labelled = labels.notna().to_numpy() & (labels.astype(object) != unlabeled).to_numpy()
        if not labelled.any():
            raise ValueError(
                f"No query cell has a label in adata.obs[{labels_key!r}]; fine-tuning needs some. "
                "To only predict, call `reference_model.predict(query_adata)`."
            )
        new = sorted(set(label_strings(labels[labelled])) - set(ref_classes))
        if new and not extend_classes:
            check_labels(labels, unlabeled, labels_key=labels_key, classes=ref_classes)  # raises
        classes = ref_classes + new

        ref_genes = pd.Index(reference_model.var_names_)
        pos = adata.var_names.get_indexer(ref_genes)
        n_shared = int((pos >= 0).sum())
        if n_shared == 0:
            raise ValueError(
                f"The query shares no gene with the reference model's {len(ref_genes)} genes (e.g. "
                f"{', '.join(map(str, ref_genes[:3]))}); check that both use the same gene "
                "identifiers (symbols vs Ensembl IDs)."
            )
        if n_shared < min_gene_overlap * len(ref_genes):
            raise ValueError(
                f"The query has {n_shared} of the reference model's {len(ref_genes)} genes, under "
                f"min_gene_overlap={min_gene_overlap}."
            )
        if n_shared < len(ref_genes):
            warnings.warn(
                f"{len(ref_genes) - n_shared} of the reference model's {len(ref_genes)} genes are "
                "missing from the query; they read as zero.",
                UserWarning,
                stacklevel=3,
            )
        gene_index = np.where(pos >= 0, pos, adata.n_vars)

        cls.setup_anndata(
            adata, labels_key, layer=layer, expression=expression, unlabeled_category=unlabeled,
            classes=classes,
        )
        params = {**reference_model.init_params_["non_kwargs"], **reference_model.init_params_["kwargs"]}
        params["genes"] = list(ref_genes)
        state = {"genes.gene_index": torch.as_tensor(gene_index)}
        state.update(cls._query_state(reference_model, adata, gene_index, **state_kwargs))
        token = _FITTED_STATE.set(state)
        try:
            model = cls(adata, **params)
        finally:
            _FITTED_STATE.reset(token)
        model._copy_reference_weights(reference_model, set(state), n_reference_classes=len(ref_classes))
        if fine_tune == "classifier":
            for name, p in model.module.named_parameters():
                p.requires_grad_(name.startswith(cls._head_prefixes))
        model.is_trained_ = False
        model.fine_tune_ = fine_tune
        model._model_summary_string += (
            f"; query of a reference {cls.__name__} ({len(ref_classes)} classes, "
            f"{len(classes) - len(ref_classes)} added), fine_tune={fine_tune!r}"
        )
        return model

    def _copy_reference_weights(self, reference, fitted: set[str], *, n_reference_classes: int) -> None:
        """Copy every reference weight except the query's fitted buffers; extend the head."""
        ref_state = reference.module.state_dict()
        state = self.module.state_dict()
        for key, value in state.items():
            if key in fitted or key not in ref_state:
                continue
            ref_value = ref_state[key]
            if key.startswith(self._head_prefixes) and ref_value.shape != value.shape:
                # classes added by the query: reference rows first, new rows keep their init
                value[:n_reference_classes] = ref_value.to(value.device)
                continue
            if ref_value.shape != value.shape:
                raise ValueError(f"Reference weight {key} has shape {tuple(ref_value.shape)}, "
                                 f"the query model {tuple(value.shape)}.")
            state[key] = ref_value.clone()
        self.module.load_state_dict(state)
