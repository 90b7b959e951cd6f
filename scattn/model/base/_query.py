"""Reference-to-query transfer: a model for a new dataset that starts from a trained one."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from scattn._deprecate import warn_deprecated
from scattn.data import check_labels, label_strings, labelled_mask

from ._fitted import Source

logger = logging.getLogger(__name__)

#: share of each predicted class's query cells (the most confident) taken as pseudo-labels
PSEUDO_LABEL_QUANTILE = 0.5


def pseudo_labels(probabilities: pd.DataFrame, quantile: float = PSEUDO_LABEL_QUANTILE) -> pd.Series:
    """The reference model's calls on a query that a query model adapts to: per predicted
    class, the cells whose confidence is at least that class's `quantile` of confidence
    (NaN elsewhere, and for cells with no probabilities)."""
    probs = probabilities.to_numpy()
    ok = np.isfinite(probs).all(1)
    best = np.where(ok, np.nan_to_num(probs).argmax(1), -1)
    conf = np.where(ok, np.nan_to_num(probs).max(1), np.nan)
    keep = np.zeros(len(best), dtype=bool)
    for c in np.unique(best[ok]):
        cells = ok & (best == c)
        keep |= cells & (conf >= np.quantile(conf[cells], quantile))
    labels = np.asarray(probabilities.columns, dtype=object)[np.where(keep, best, 0)]
    return pd.Series(np.where(keep, labels, None), index=probabilities.index, dtype=object)

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
    #: a query model of an unlabelled query: the reference model's confident calls on its
    #: cells (NaN where it made none), what ``train()`` fits besides the reference's cells;
    #: `None` otherwise
    pseudo_labels_: pd.Series | None = None
    #: an adapting query model's reference cells: the reference model's AnnData, trained on
    #: with the pseudo-labelled query cells (not saved: a reloaded query model trains on its
    #: own labelled cells)
    _adaptation: AnnData | None = None

    def _is_adapting(self) -> bool:
        """Whether ``train()`` adapts to an unlabelled query (see :meth:`load_query_data`)."""
        return self._adaptation is not None

    @contextmanager
    def _training_cells(self) -> Iterator[AnnData | None]:
        """`None` (the model's own cells), or for an adapting query model a private AnnData
        of the reference's cells and the pseudo-labelled query cells, aligned to the query's
        genes and registered for the duration of the block."""
        if self._adaptation is None:
            yield None
            return
        import anndata as ad

        from scattn._quiet import quiet

        labels_key = self._setup_args["labels_key"]
        pseudo = self.pseudo_labels_.to_numpy()
        kept = pd.notna(pseudo)
        with warnings.catch_warnings(), quiet():
            warnings.simplefilter("ignore", UserWarning)  # the two studies' genes differ by design
            reference = self._align(self._adaptation, min_gene_overlap=0.0)
            query = self._aligned_rows(self._alignment_plan(self.adata, min_gene_overlap=0.0),
                                       np.flatnonzero(kept))
        reference.obs[labels_key] = self._adaptation.obs[labels_key].astype(object).to_numpy()
        query.obs[labels_key] = pseudo[kept].astype(str)
        reference.obs_names = "reference_" + reference.obs_names.astype(str)
        query.obs_names = "query_" + query.obs_names.astype(str)
        parts = []
        for part in (reference, query):  # the covariates and labels, as plain values for concat
            part.obs = part.obs.astype(object)
            parts.append(part)
        combined = ad.concat(parts, join="outer", merge="first")
        combined.var = reference.var
        combined.obs[labels_key] = pd.Categorical(combined.obs[labels_key].astype(object))
        with self._registered(combined) as internal:
            yield internal

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

        **An unlabelled query** (no cell labelled, or no labels column: it is then added, every
        cell `unlabeled_category`) is adapted to, as scArches/scANVI map a query: the
        reference model calls the query's cells, the most confident half of each called
        class become pseudo-labels (``model.pseudo_labels_``), and ``model.train()`` trains the
        copied weights on the reference model's cells (its AnnData) together with those
        query cells, with the class-balanced loss. Measured on the panc8 cross-technology
        pairs (``benchmarks/studies/transfer_factors.py``, CFAN, 3 seeds), this adds 5-10
        points of macro F1 over predicting with the reference model; see the "Annotate a new
        study" page. Cells of types the reference lacks are still best flagged with an
        ``unknown_threshold`` set on held-out reference cells
        (:func:`scattn.tl.unknown_threshold`).

        Parameters
        ----------
        adata
            The query AnnData, with the reference's labels column (unlabelled cells NaN or the
            reference's `unlabeled_category`), or without it (an unlabelled query). Registered
            in place, as scvi-tools does.
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
        The query model (not yet trained; predicting with it before training warns). For an
        unlabelled query without the labels column, ``adata.obs[labels_key]`` is added (every
        cell `unlabeled_category`).
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
        ref_classes = list(reference_model.classes_)
        source = Source.from_model(reference_model)
        # before anything is added to the query or predicted on it
        cls._check_source(source, adata, setup_args=setup, min_gene_overlap=min_gene_overlap,
                          names=("reference model", "query"))
        if labels_key not in adata.obs:
            # an unlabelled query (the only column added to the user's AnnData, documented)
            adata.obs[labels_key] = pd.Categorical([unlabeled] * adata.n_obs)
        labels = adata.obs[labels_key]
        labelled = labelled_mask(labels, unlabeled)
        calls = None
        if not labelled.any():
            calls = pseudo_labels(reference_model.predict_proba(adata))
            logger.info("Adapting to an unlabelled query: %d of %d cells pseudo-labelled by the "
                        "reference model.", int(calls.notna().sum()), adata.n_obs)
        new = sorted(set(label_strings(labels[labelled])) - set(ref_classes))
        if new and not extend_classes:
            check_labels(labels, unlabeled, labels_key=labels_key, classes=ref_classes)  # raises
        classes = ref_classes + new

        setup["classes"] = classes
        cls._register(adata, **setup)
        model = cls._from_source(source, adata, **transfer_kwargs)
        if not unfrozen:
            head = set(model.module.head_parameter_names())
            for name, p in model.module.named_parameters():
                p.requires_grad_(name in head)
        model.is_trained_ = False
        model.unfrozen_ = unfrozen
        if calls is not None:
            model._adaptation = reference_model.adata
            model.pseudo_labels_ = pd.Series(pd.Categorical(calls.to_numpy(), categories=ref_classes),
                                             index=adata.obs_names)
        model._model_summary_string += (
            f"; query of a reference {cls.__name__} ({len(ref_classes)} classes, "
            f"{len(classes) - len(ref_classes)} added), unfrozen={unfrozen}"
            + ("" if calls is None else
               f", adapting to an unlabelled query ({int(calls.notna().sum())} cells pseudo-labelled)")
        )
        return model
