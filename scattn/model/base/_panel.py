"""The base of scattn's classifiers over a gene panel: set-up, predict, attribution, load."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass

from scattn.data import LabelsField, genes_to_positions

from ._classifier import ClassifierMixin, validate_setup
from ._data import AlignedDataMixin
from ._query import QueryMixin
from ._results import PredictionResult

logger = logging.getLogger(__name__)

# fitted module state (genes, embeddings, groups) while a model is rebuilt by `load` or made
# by `load_query_data`: `__init__` takes it instead of fitting on the AnnData passed in
_FITTED_STATE: ContextVar[dict | None] = ContextVar("_scattn_fitted_state", default=None)


class GenePanelClassifier(QueryMixin, ClassifierMixin, AlignedDataMixin, BaseModelClass):
    """A cell type classifier reading a panel of genes from counts or log-normalised data.

    Subclasses set ``_module_cls``, ``_key`` (default ``key_added``), ``_default_lr`` and
    ``_attention_description``, build ``self.module`` in ``__init__`` (taking fitted buffers
    from :meth:`_fitted_state` when it is not `None`) and set ``classes_`` and ``var_names_``
    through :meth:`_init_panel`.
    """

    _key = "model"

    # -- set-up ---------------------------------------------------------------------------
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str,
        *,
        layer: str | None = None,
        expression: Literal["counts", "log1p"] = "counts",
        unlabeled_category: str = "Unknown",
        classes: Sequence[str] | None = None,
        batch_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register `adata` with the model.

        Parameters
        ----------
        adata
            Cells x genes AnnData.
        labels_key
            Column of ``adata.obs`` with cell types. Cells whose label is
            `unlabeled_category` or NaN are kept out of the loss and predicted.
        layer
            Layer with the expression; `None` uses ``adata.X``.
        expression
            ``"counts"``: raw counts; the model normalises to 10,000 per cell and takes log1p.
            ``"log1p"``: data already log-normalised (e.g. ``adata.raw``), used as given.
        unlabeled_category
            Label value meaning "unlabelled".
        classes
            The known classes, in the classifier's output order; every label must be one of
            them. `None`: the sorted labels found. Fixing them shares one label encoding
            across datasets (``load_query_data`` uses it).
        batch_key
            Accepted for the scvi-tools signature; must be `None`. These models have no batch
            covariate (per-sample questions go through ``sa.tl.novelty(groupby=...)``).

        Notes
        -----
        Everything is checked before anything is written. As in scvi-tools, registration adds
        ``adata.obs["_scvi_labels"]`` and ``adata.uns["_scvi_uuid"]``,
        ``adata.uns["_scvi_manager_uuid"]``; nothing else in `adata` changes.
        """
        if batch_key is not None:
            raise ValueError(
                f"{cls.__name__} has no batch covariate; call setup_anndata without batch_key "
                "(test samples for novel types with `sa.tl.novelty(..., groupby=batch_key)`)."
            )
        if set(kwargs) - {"source_registry", "extend_categories", "allow_missing_labels"}:
            # (no local variable here: scvi records every local as a setup argument)
            raise TypeError(f"setup_anndata got unexpected arguments: {', '.join(sorted(kwargs))}.")
        classes = None if classes is None else [str(c) for c in classes]
        if "source_registry" not in kwargs:
            validate_setup(adata, labels_key, layer, expression, unlabeled_category, classes=classes)
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=expression == "counts"),
            LabelsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category, classes=classes),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # -- construction helpers -----------------------------------------------------------------
    @staticmethod
    def _fitted_state() -> dict | None:
        """The module state to build from (while loading or making a query model), else `None`."""
        return _FITTED_STATE.get()

    def _init_panel(self, gene_index: np.ndarray, genes: Sequence[str] | None) -> None:
        """Set ``classes_`` and ``var_names_`` (the genes at `gene_index`, or `genes` by name)."""
        #: the known classes, in the classifier's output order
        self.classes_: list[str] = self._registered_classes()
        #: the genes the model reads, in its order
        self.var_names_ = (
            pd.Index([str(g) for g in genes]) if genes is not None
            else pd.Index(self.adata.var_names[np.asarray(gene_index)])
        )

    def _panel_gene_index(self, n_top_genes: int | None, genes: Sequence[str] | None) -> np.ndarray:
        """Positions of the model's genes for a model reading expression directly.

        The saved positions while loading or making a query model; else `genes` by name, the
        `n_top_genes` most variable genes, or (both `None`) every registered gene.
        """
        if n_top_genes is not None and n_top_genes < 1:
            raise ValueError(f"n_top_genes must be >= 1 or None, got {n_top_genes}.")
        saved = self._fitted_state()
        if saved is not None:
            return saved["genes.gene_index"].cpu().numpy()
        if n_top_genes is None and genes is None:
            return np.arange(self.adata.n_vars)
        lognorm = None
        if genes is None:
            from scattn.data import log_normalize

            matrix = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            lognorm = log_normalize(matrix, self._setup_args["expression"])
        return self._choose_genes(lognorm, n_top_genes or 0, genes)

    def _choose_genes(self, lognorm, n_top_genes: int, genes: Sequence[str] | None) -> np.ndarray:
        """Positions of the model's genes: `genes` by name, else the most variable ones."""
        from scattn.data import select_variable_genes

        if genes is not None:
            return genes_to_positions(self.adata.var_names, genes)
        return select_variable_genes(lognorm, n_top_genes)

    # -- results -------------------------------------------------------------------------
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
            (``"cgran"``, ``"cfan"``).
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

    def get_attention(
        self,
        adata: AnnData | None = None,
        indices=None,
        *,
        top_k: int | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """The per-cell attribution over the model's genes (see the model's Notes).

        Parameters
        ----------
        adata
            AnnData (aligned by gene name); `None` for the training data.
        indices
            Cells to use.
        top_k
            Keep only each cell's `top_k` largest positive weights (others 0). `None`: all
            weights, as computed (CFAN's gradients keep their sign).
        batch_size
            Minibatch size.

        Returns
        -------
        DataFrame, cells x the model's genes (``model.var_names_``).
        """
        self._check_if_trained(warn=True)
        with self._aligned(adata) as internal:
            out = self._run_inference(
                internal, indices=indices, batch_size=batch_size, attention_top_k=top_k or 0, keys=()
            )
            names = internal.obs_names if indices is None else internal.obs_names[np.asarray(indices)]
        return pd.DataFrame(out["attention"].toarray(), index=names, columns=self.var_names_)

    # -- persistence ----------------------------------------------------------------------
    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs):
        """Load a saved model; see :meth:`scvi.model.base.BaseModelClass.load`.

        `adata` must have the genes the model was set up with, in the same order (the
        training AnnData, or one with the same ``var_names``); to predict on other data, call
        ``model.predict(other)`` on the loaded model, which aligns genes by name. Without
        `adata`, the model must have been saved with ``save_anndata=True``. Nothing is refitted:
        genes (and embeddings, groups) come from the saved model.
        """
        prefix = kwargs.get("prefix") or ""
        path = os.path.join(dir_path, f"{prefix}model.pt")
        if not os.path.exists(path):
            raise FileNotFoundError(f"No saved model at {path}.")
        saved = torch.load(path, map_location="cpu", weights_only=False)
        name = saved.get("attr_dict", {}).get("registry_", {}).get("model_name")
        if name is not None and name != cls.__name__:
            raise ValueError(
                f"{dir_path!r} holds a saved {name} model, not a {cls.__name__}; load it with "
                f"`sa.model.{name}.load(...)`."
            )
        if adata is not None:
            source = pd.Index(saved["var_names"])
            if not source.equals(adata.var_names):
                shared = int(source.isin(adata.var_names).sum())
                raise ValueError(
                    f"adata's genes differ from the {len(source)} the model was set up with "
                    f"({shared} shared{', in another order' if shared == len(source) == adata.n_vars else ''}). "
                    "Load with the training AnnData (or save with `save_anndata=True` and load "
                    "without adata), then `model.predict(other_adata)`, which aligns genes by name."
                )
        elif not os.path.exists(os.path.join(dir_path, f"{prefix}adata.h5ad")):
            raise ValueError(
                f"{dir_path!r} holds no AnnData: pass `adata=` (the training data), or save the "
                "model with `model.save(dir, save_anndata=True)`."
            )
        if "genes.gene_index" not in saved["model_state_dict"]:
            raise ValueError(
                f"{dir_path!r} was saved by an older scattn whose state lacks 'genes.gene_index'; "
                "retrain the model with this version."
            )
        token = _FITTED_STATE.set(saved["model_state_dict"])
        try:
            return super().load(dir_path, adata=adata, **kwargs)
        finally:
            _FITTED_STATE.reset(token)
