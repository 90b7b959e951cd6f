"""Reference-to-query transfer: a model for a new dataset that starts from a trained one."""

from __future__ import annotations

import logging
from typing import Literal

from anndata import AnnData

from scattn._deprecate import warn_deprecated
from scattn.data import check_labels, label_strings, labelled_mask

from ._fitted import Source

logger = logging.getLogger(__name__)

FineTune = Literal["classifier", "all"]


def resolve_unfrozen(unfrozen: bool | None, fine_tune: str | None, default: bool) -> bool:
    """`unfrozen` (`None`: `default`), or the deprecated ``fine_tune`` it replaces (with a
    warning): ``"all"`` is ``unfrozen=True``, ``"classifier"`` ``unfrozen=False``."""
    if fine_tune is not None:
        if fine_tune not in ("classifier", "all"):
            raise ValueError(f"fine_tune must be 'classifier' or 'all', got {fine_tune!r}.")
        warn_deprecated(
            "load_query_data(fine_tune=...) is deprecated and will be removed in the next release; "
            f"use unfrozen={fine_tune == 'all'} (train every weight) instead."
        )
        if unfrozen is not None and unfrozen != (fine_tune == "all"):
            raise ValueError(f"fine_tune={fine_tune!r} contradicts unfrozen={unfrozen}; pass unfrozen only.")
        return fine_tune == "all"
    return default if unfrozen is None else bool(unfrozen)


class QueryMixin:
    """``load_query_data`` in the scvi-tools manner, for models with a labels field.

    Independent of the other mixins: it needs only what every scattn model has
    (``_register``, ``_check_source``, ``_from_source`` in
    :class:`~scattn.model.base.ScattnModel`). A model may compute the query's fitted buffers
    (e.g. embeddings) in ``_transfer_buffers``, and sets ``_default_unfrozen``.
    """

    #: what ``unfrozen=None`` means: train every weight (`True`) or the classifier head only
    _default_unfrozen = True
    #: ``unfrozen`` of a query model (`None` otherwise); the freezing is not saved: a query
    #: model reloaded with ``load`` trains every weight
    unfrozen_: bool | None = None

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model,
        *,
        unfrozen: bool | None = None,
        extend_classes: bool = False,
        min_gene_overlap: float = 0.5,
        fine_tune: FineTune | None = None,
    ):
        """A model for a query dataset that starts from a trained reference model.

        The query is registered like the reference (same layer, kind of data, labels column
        and other keys; the reference's classes); the reference's genes are found in the
        query by name (genes the query lacks read as zero in this model, also on data it
        predicts later) and every weight is copied (SIMS recomputes its class weights from the
        query's labels). ``model.train(...)`` then fine-tunes on the query's labelled cells:
        every weight, or only the classifier head (the CFAN/CGRAN paper's settings B and A).

        Parameters
        ----------
        adata
            The query AnnData, with the reference's labels column (unlabelled cells NaN or the
            reference's `unlabeled_category`). Registered in place, as scvi-tools does.
        reference_model
            A trained model of this class.
        unfrozen
            Train every weight (`True`) or only the classifier head (`False`), as scvi-tools'
            ``load_query_data(unfrozen=)``. `None`: every weight.
        extend_classes
            Add the query's labels that the reference lacks as new classes (new classifier
            rows). With `False`, such labels are an error.
        min_gene_overlap
            Smallest share of the reference's genes the query must have (for a model with a
            gene vocabulary: of the query's genes in the vocabulary).
        fine_tune
            Deprecated: ``"all"`` is ``unfrozen=True``, ``"classifier"`` ``unfrozen=False``.

        Returns
        -------
        The query model (not yet trained; predicting with it before training warns).
        """
        return cls._make_query_model(
            adata, reference_model, unfrozen=resolve_unfrozen(unfrozen, fine_tune, cls._default_unfrozen),
            extend_classes=extend_classes, min_gene_overlap=min_gene_overlap,
        )

    @classmethod
    def _make_query_model(
        cls,
        adata: AnnData,
        reference_model,
        *,
        unfrozen: bool,
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
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
        if adata.is_view:
            raise ValueError("adata is a view; call `adata = adata.copy()` first.")
        if adata is reference_model.adata:
            raise ValueError(
                "The query is the reference model's own AnnData; registering it again would "
                "change the reference's registration. Pass a copy (`adata.copy()`)."
            )
        setup = dict(reference_model._setup_args)
        labels_key, unlabeled = setup.get("labels_key"), setup.get("unlabeled_category", "Unknown")
        if labels_key is None or not reference_model.classes_:
            raise ValueError(
                f"The reference {cls.__name__} has no classifier (set up without labels_key); a "
                f"query model fine-tunes one. Start a classifier with `{cls.__name__}.from_pretrained`."
            )
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

        source = Source.from_model(reference_model)
        cls._check_source(source, adata, setup_args=setup, min_gene_overlap=min_gene_overlap,
                          names=("reference model", "query"))
        setup["classes"] = classes
        cls._register(adata, **setup)
        model = cls._from_source(source, adata, **transfer_kwargs)
        if not unfrozen:
            head = set(model.module.head_parameter_names())
            for name, p in model.module.named_parameters():
                p.requires_grad_(name in head)
        model.is_trained_ = False
        model.unfrozen_ = unfrozen
        model._model_summary_string += (
            f"; query of a reference {cls.__name__} ({len(ref_classes)} classes, "
            f"{len(classes) - len(ref_classes)} added), unfrozen={unfrozen}"
        )
        return model
