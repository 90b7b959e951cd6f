"""CGRAN: Cell-Gene Representation Attention Network as an scvi-tools model."""

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

from scattn.data import (
    LabelsField,
    factorize,
    genes_to_positions,
    log_normalize,
    make_gene_groups,
    select_variable_genes,
)
from scattn.module import CGRANModule

from .base import AlignedDataMixin, ClassifierMixin, PredictionResult, validate_setup

logger = logging.getLogger(__name__)

# the saved module state while `CGRAN.load` rebuilds a model: `__init__` takes the fitted
# genes, embeddings and groups from it instead of refitting them on the AnnData passed in
_LOAD_STATE: ContextVar[dict | None] = ContextVar("_cgran_load_state", default=None)


class CGRAN(ClassifierMixin, AlignedDataMixin, BaseModelClass):
    """Cell-Gene Representation Attention Network (Wang, Fan & Ma).

    Cells and genes are embedded by a truncated SVD of the log-normalised expression
    (``A = X S^1/2``, ``B = Y S^1/2``, m dims). For each cell the token sequence is the cell
    token ``s_0 = A_i`` followed by gene tokens ``s_j = B_j + s_0``. Two multi-head *local*
    attention blocks (each: attention, a fully connected residual, L2 normalisation) renew
    the tokens: the cell token attends to all genes and all genes to it, a gene attends to
    other genes only inside its group. The renewed cell token is classified by a linear layer.

    Defaults follow the paper (section 4.1): 1000 most variable genes, m = 128, 10 heads,
    head dims 8 then 4, dropout 0.1, Adam with learning rate 1e-4, groups of 100 genes.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_top_genes
        Number of most variable genes to use (ignored when `genes` is given).
    genes
        Explicit list of genes to use instead of the most variable ones.
    n_embedding
        Dimension m of the cell and gene embeddings.
    embedding_method
        ``"svd"`` (paper's recommendation) or ``"gd"`` (gradient-descent factorisation).
    grouping
        Gene groups for local attention: ``"uniform"`` (consecutive blocks of `group_size`
        genes), ``"kmeans"`` (k-means on the gene embeddings) or ``"full"`` (no grouping).
    group_size
        Genes per uniform group; also sets the default number of k-means groups.
    n_groups
        Number of k-means groups (default ``ceil(n_genes / group_size)``).
    n_heads
        Attention heads per block.
    head_dims
        Dimension of each head in each block; one entry per block.
    dropout
        Dropout rate on every layer.
    attention_init
        Initialisation of the first block's queries and keys (the paper does not say).
        ``"svd"``: on the SVD axes, so that at the start each head attends to the genes the
        cell expresses along its share of the SVD components, and training refines it; this
        makes the attention-derived markers far more specific. ``"random"``: PyTorch's default.

    Notes
    -----
    * **Embedding** (``get_latent_representation``, ``obsm["X_cgran"]``): the cell token after
      the last block (``n_heads * head_dims[-1]`` = 40 dims by default), the representation the
      classifier reads (paper, Figure 5b).
    * **Attribution** (``get_attention``, ``layers["cgran_attention"]``): the cell token's
      attention to each gene token in the first block, summed over heads.
    * Cells not seen in training are folded into the SVD basis (``A = x Y S^-1/2``); for the
      training cells this equals the factorisation's own cell embedding.

    Examples
    --------
    >>> import scattn as sa
    >>> sa.model.CGRAN.setup_anndata(adata, labels_key="cell_type", layer="counts")
    >>> model = sa.model.CGRAN(adata)
    >>> model.train()
    >>> model.predict()  # adata.obs["cgran_prediction"], adata.uns["cgran_markers"], ...
    """

    _module_cls = CGRANModule
    _default_lr = 1e-4
    _default_train_batch_size = 32
    _attention_description = "cell token -> gene token attention, first block, summed over heads"

    def __init__(
        self,
        adata: AnnData,
        *,
        n_top_genes: int = 1000,
        genes: Sequence[str] | None = None,
        n_embedding: int = 128,
        embedding_method: Literal["svd", "gd"] = "svd",
        grouping: Literal["uniform", "kmeans", "full"] = "uniform",
        group_size: int = 100,
        n_groups: int | None = None,
        n_heads: int = 10,
        head_dims: Sequence[int] = (8, 4),
        dropout: float = 0.1,
        attention_init: Literal["svd", "random"] = "svd",
    ) -> None:
        super().__init__(adata)
        if n_top_genes < 1:
            raise ValueError(f"n_top_genes must be >= 1, got {n_top_genes}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if n_heads < 1 or len(head_dims) < 1 or min(head_dims) < 1:
            raise ValueError("n_heads and every head dim must be >= 1, with at least one block.")
        import scvi

        expression = self._setup_args["expression"]
        #: the known classes, in the classifier's output order
        self.classes_: list[str] = self._registered_classes()
        saved = _LOAD_STATE.get()
        if saved is not None:  # loading: the fitted genes, embeddings and groups come from disk
            gene_index = saved["gene_index"].cpu().numpy()
            gene_embedding, projection = saved["gene_embedding"], saved["projection"]
            groups = saved["groups.group_index"]
        else:
            gene_index, gene_embedding, projection, groups = self._fit_embeddings(
                expression, n_top_genes, genes, n_embedding, embedding_method, grouping,
                group_size, n_groups, seed=scvi.settings.seed or 0,
            )
        #: the genes the model reads, in its order (a subset of the registered genes)
        self.var_names_ = pd.Index(self.adata.var_names[gene_index])
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_labels=len(self.classes_),
            gene_index=torch.as_tensor(gene_index),
            gene_embedding=torch.as_tensor(gene_embedding),
            projection=torch.as_tensor(projection),
            group_index=torch.as_tensor(groups),
            normalize_counts=expression == "counts",
            n_heads=n_heads,
            head_dims=tuple(head_dims),
            dropout=dropout,
            attention_init=attention_init,
        )
        self._model_summary_string = (
            f"CGRAN: {len(gene_index)} genes, {len(self.classes_)} classes, m={gene_embedding.shape[1]} "
            f"({embedding_method}), {groups.shape[0]} {grouping} gene groups, heads={n_heads}, "
            f"head_dims={tuple(head_dims)}, dropout={dropout}"
        )
        self.init_params_ = self._get_init_params(locals())

    def _fit_embeddings(self, expression, n_top_genes, genes, n_embedding, method, grouping,
                        group_size, n_groups, *, seed: int):
        """Choose genes, factorise and group them on the registered data (section 3.2.1)."""
        matrix = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        lognorm = log_normalize(matrix, expression)
        if genes is not None:
            gene_index = genes_to_positions(self.adata.var_names, genes)
        else:
            gene_index = select_variable_genes(lognorm, n_top_genes)
        emb = factorize(lognorm[:, gene_index], n_embedding, method=method, seed=seed)
        groups = make_gene_groups(
            len(gene_index), grouping, group_size=group_size, n_groups=n_groups,
            features=emb.gene_embedding, seed=seed,
        )
        return gene_index, emb.gene_embedding, emb.projection, groups

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
        **kwargs,
    ) -> None:
        """Register `adata` for CGRAN.

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

        Notes
        -----
        Everything is checked before anything is written. As in scvi-tools, registration adds
        ``adata.obs["_scvi_labels"]`` and ``adata.uns["_scvi_uuid"]``,
        ``adata.uns["_scvi_manager_uuid"]``; nothing else in `adata` changes.
        """
        if "source_registry" not in kwargs:
            validate_setup(adata, labels_key, layer, expression, unlabeled_category)
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=expression == "counts"),
            LabelsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # -- results -------------------------------------------------------------------------
    def predict(
        self,
        adata: AnnData | None = None,
        *,
        key_added: str = "cgran",
        inplace: bool = True,
        unknown_threshold: float | None = None,
        attention_top_k: int = 50,
        n_markers: int = 100,
        batch_size: int | None = None,
        min_gene_overlap: float = 0.5,
    ) -> PredictionResult | None:
        """Predict cell types and write predictions, embedding, attention and markers.

        Parameters
        ----------
        adata
            AnnData to predict, with the kind of data the model was set up with; genes are
            matched by name (missing genes zero-filled with a warning). `None`: the training
            AnnData (its unlabelled cells included).
        key_added
            Prefix of every key written.
        inplace
            Write into `adata`; with `False` nothing is written and a
            :class:`~scattn.model.base.PredictionResult` is returned.
        unknown_threshold
            Cells whose highest probability is below it are labelled ``"Unknown"``.
        attention_top_k
            Attention weights kept per cell (and the paper's top-50 "picked" rule for markers).
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
            The renewed cell token (cells x 40 by default).
        ``adata.layers[f"{key}_attention"]``
            Sparse cells x genes: each cell's top-`attention_top_k` first-block attention
            weights from the cell token to gene tokens, summed over heads (genes the model
            does not read are zero).
        ``adata.uns[f"{key}_markers"]``
            Markers per predicted class from the attention, ``rank_genes_groups`` layout
            (see :func:`scattn.tl.marker_genes_from_attention`).
        ``adata.uns[key]["params"]``
            Model class, scattn version, keys, threshold, classes.

        With ``inplace=False``, a :class:`~scattn.model.base.PredictionResult` holding the same.
        """
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
        """Cell-token to gene-token attention of the first block, summed over heads.

        Parameters
        ----------
        adata
            AnnData (aligned by gene name); `None` for the training data.
        indices
            Cells to use.
        top_k
            Keep only each cell's `top_k` largest weights (others 0). `None`: all.
        batch_size
            Minibatch size.

        Returns
        -------
        DataFrame, cells x the model's genes (``model.var_names_``). Each head's weights sum to
        1 over the cell token and the genes, so a row sums to less than ``n_heads`` (the
        remainder is the cell token's attention to itself).
        """
        self._check_if_trained(warn=True)
        with self._aligned(adata) as internal:
            out = self._run_inference(
                internal, indices=indices, batch_size=batch_size, attention_top_k=top_k or 0, keys=()
            )
            names = internal.obs_names if indices is None else internal.obs_names[np.asarray(indices)]
        return pd.DataFrame(out["attention"].toarray(), index=names, columns=self.var_names_)

    @torch.inference_mode()
    def get_gene_attention(
        self,
        genes: Sequence[str],
        adata: AnnData | None = None,
        indices=None,
        *,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Gene-to-gene attention among `genes` in the first block, averaged over cells.

        For each cell, the chosen gene tokens attend to one another with the first block's
        queries and keys (summed over heads, softmax over the chosen genes; no group mask, so
        genes from different groups are compared). Used for gene sets (paper, Figure 5a).

        Returns
        -------
        DataFrame genes x genes; row j is the attention gene j pays to each gene.
        """
        genes = list(genes)
        pos = pd.Index(self.var_names_).get_indexer(genes)
        if (pos < 0).any():
            missing = [g for g, p in zip(genes, pos, strict=True) if p < 0]
            raise ValueError(f"Genes not used by the model: {missing[:5]}.")
        self.module.eval()
        idx = torch.as_tensor(pos, device=self.module.device)
        total, n = None, 0
        with self._aligned(adata) as internal:
            loader = self._make_data_loader(adata=internal, indices=indices, batch_size=batch_size)
            for tensors in loader:
                x = tensors[REGISTRY_KEYS.X_KEY].to(self.module.device)
                w = self.module.gene_gene_attention(x, idx).sum(0)
                total = w if total is None else total + w
                n += x.shape[0]
        return pd.DataFrame((total / n).cpu().numpy(), index=genes, columns=genes)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs):
        """Load a saved CGRAN; see :meth:`scvi.model.base.BaseModelClass.load`.

        `adata` must have the genes the model was set up with, in the same order (the
        training AnnData, or one with the same ``var_names``); to predict on other data, call
        ``model.predict(other)`` on the loaded model, which aligns genes by name. Without
        `adata`, the model must have been saved with ``save_anndata=True``. Nothing is refitted:
        genes, embeddings and gene groups come from the saved model.
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
        token = _LOAD_STATE.set(saved["model_state_dict"])
        try:
            return super().load(dir_path, adata=adata, **kwargs)
        finally:
            _LOAD_STATE.reset(token)
