"""Reference-to-query transfer: a model for a new dataset that starts from a trained one."""

from __future__ import annotations

import logging
from typing import Literal

import pandas as pd
from anndata import AnnData

from scattn.data import check_labels
from scattn.data._validate import label_strings, labelled_mask

from ._fitted import Source, check_shared_genes

logger = logging.getLogger(__name__)

FineTune = Literal["classifier", "all"]


class QueryMixin:
    """``load_query_data`` in the scvi-tools manner, for models with a labels field.

    Independent of the other mixins: it needs only what every scattn model has
    (``setup_anndata``, ``_from_source`` in :class:`~scattn.model.base.ScattnModel`). A model
    may compute the query's fitted buffers (e.g. embeddings) in ``_transfer_buffers``.
    """

    #: ``fine_tune`` of a query model (``None`` otherwise); the freezing is not saved: a
    #: query model reloaded with ``load`` trains every weight
    fine_tune_: str | None = None

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
        **transfer_kwargs,
    ):
        """Register `adata` like the reference, build the query model, copy weights, freeze."""
        if not isinstance(reference_model, cls):
            raise TypeError(
                f"reference_model must be a trained {cls.__name__}, got {type(reference_model).__name__}."
            )
        reference_model._check_if_trained(warn=False, message="The reference model is not trained.")
        if fine_tune not in ("classifier", "all"):
            raise ValueError(f"fine_tune must be 'classifier' or 'all', got {fine_tune!r}.")
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
        ref_classes = list(reference_model.classes_)
        labels = adata.obs[labels_key]
        labelled = labelled_mask(labels, unlabeled)
        if not labelled.any():
            raise ValueError(
                f"No query cell has a label in adata.obs[{labels_key!r}]; fine-tuning needs some. "
                "To only predict, call `reference_model.predict(query_adata)`."
            )
        new = sorted(set(label_strings(labels[labelled])) - set(ref_classes))
        if new and not extend_classes:
            check_labels(labels, unlabeled, labels_key=labels_key, classes=ref_classes)  # raises
        classes = ref_classes + new

        check_shared_genes(pd.Index(reference_model.var_names_), adata.var_names,
                           min_overlap=min_gene_overlap, source="reference model", target="query")
        cls.setup_anndata(
            adata, labels_key, layer=layer, expression=expression, unlabeled_category=unlabeled,
            classes=classes,
        )
        model = cls._from_source(Source.from_model(reference_model), adata, **transfer_kwargs)
        if fine_tune == "classifier":
            head = set(model.module.head_parameter_names())
            for name, p in model.module.named_parameters():
                p.requires_grad_(name in head)
        model.is_trained_ = False
        model.fine_tune_ = fine_tune
        model._model_summary_string += (
            f"; query of a reference {cls.__name__} ({len(ref_classes)} classes, "
            f"{len(classes) - len(ref_classes)} added), fine_tune={fine_tune!r}"
        )
        return model
