"""CGRAN: Cell-Gene Representation Attention Network as an scvi-tools model."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from scattn._deprecate import warn_deprecated
from scattn._docs import scattn_dsp
from scattn._settings import settings
from scattn.data import BackedLogNorm, factorize, get_matrix, log_normalize, make_gene_groups
from scattn.module import CGRANModule
from scattn.train import StepBudget

from .base import FittedState, GenePanelClassifier, Source
from .base._query import FineTune, resolve_unfrozen

logger = logging.getLogger(__name__)

def _genes_first_deprecated(method):
    """Accept the order `get_gene_attention` had before every model shared one,
    ``(genes, adata=None, indices=None)``, with a warning."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if args and args[0] is not None and not isinstance(args[0], AnnData):
            warn_deprecated(
                "CGRAN.get_gene_attention(genes, adata, ...) is deprecated and will be removed in "
                "the next release; call get_gene_attention(adata, indices, genes=genes), as every "
                "model."
            )
            kwargs["genes"] = args[0]
            kwargs.update(zip(("adata", "indices"), args[1:], strict=False))
            args = ()
        return method(self, *args, **kwargs)

    return wrapper


@scattn_dsp.dedent
class CGRAN(GenePanelClassifier):
    """Cell-Gene Representation Attention Network (Wang, Fan & Ma).

    Cells and genes are embedded by a truncated SVD of the log-normalised expression
    (``A = X S^1/2``, ``B = Y S^1/2``, m dims). For each cell the token sequence is the cell
    token ``s_0 = A_i`` followed by gene tokens ``s_j = B_j + s_0``. Two multi-head *local*
    attention blocks (each: attention, a fully connected residual, L2 normalisation) renew
    the tokens: the cell token attends to all genes and all genes to it, a gene attends to
    other genes only inside its group. The renewed cell token is classified by a linear layer.

    Architecture defaults follow the paper (section 4.1): 1000 most variable genes, m = 128,
    10 heads, head dims 8 then 4, dropout 0.1, groups of 100 genes. Training uses Adam with
    learning rate 1e-3 (the paper's is 1e-4), stops after 5 epochs without a better validation
    loss and keeps the weights of the best validation epoch (see Notes).

    Parameters
    ----------
    %(model_adata)s
    n_top_genes
        Number of most variable genes to use (ignored when `genes` is given).
    %(genes)s
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
    %(fitted)s

    Notes
    -----
    * **Embedding** (``get_latent_representation``, ``obsm["X_cgran"]``): the cell token after
      the last block (``n_heads * head_dims[-1]`` = 40 dims by default), the representation the
      classifier reads (paper, Figure 5b).
    * **Attribution** (``get_attention``, ``layers["cgran_attention"]``): the cell token's
      attention to each gene token in the first block, summed over heads.
    * Cells not seen in training are folded into the SVD basis (``A = x Y S^-1/2``); for the
      training cells this equals the factorisation's own cell embedding.
    * **Training defaults**: learning rate 1e-3, early-stopping patience 5 and the best
      validation epoch's weights restored replace the paper's learning rate 1e-4 with patience
      10 and the last epoch's weights. On pbmc68k_reduced, paul15 (1,000 cells) and 120
      CellBench cells, three seeds each, macro F1 on held-out cells stayed within the spread
      between seeds (0.633 vs 0.629, 0.696 vs 0.697, 1.0 vs 1.0) at a quarter to a fifth of
      the epochs (``benchmarks/results/cgran_speed.md``). At 1e-3 the validation loss is lowest
      after about five epochs and then rises; keeping the last epoch's weights instead cost
      about one point of macro F1. ``train(lr=1e-4, early_stopping_patience=10,
      restore_best_weights=False)`` trains as the paper does.
    * **Small data**: the patience is 5 epochs or as many as make 100 optimiser steps,
      whichever is more (on 100 cells an epoch is 3 minibatches, and 5 epochs stopped training
      after 15 steps), and the best epoch is the one with the highest validation accuracy,
      ties to the lower loss (the loss alone picked the untrained first epoch on 100 panc8
      cells, macro F1 0.147). See the "Small data" section of the CGRAN page.

    Examples
    --------
    >>> import scattn as sa
    >>> sa.model.CGRAN.setup_anndata(adata, labels_key="cell_type", layer="counts")
    >>> model = sa.model.CGRAN(adata)
    >>> model.train()
    >>> model.predict()  # adata.obs["cgran_prediction"], adata.uns["cgran_markers"], ...
    """

    _module_cls = CGRANModule
    _key = "cgran"
    # batch 32: small datasets get enough updates at the paper's learning rate
    _train_defaults = GenePanelClassifier._train_defaults.replace(
        batch_size=32, early_stopping_patience=StepBudget(5, 100), restore_best_weights=True)
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
        fitted: FittedState | None = None,
    ) -> None:
        super().__init__(adata)
        if n_top_genes < 1:
            raise ValueError(f"n_top_genes must be >= 1, got {n_top_genes}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if n_heads < 1 or len(head_dims) < 1 or min(head_dims) < 1:
            raise ValueError("n_heads and every head dim must be >= 1, with at least one block.")
        if fitted is None:
            fitted = self._fit_embeddings(n_top_genes, genes, n_embedding, embedding_method, grouping,
                                          group_size, n_groups, seed=settings.seed or 0)
        self._init_panel(fitted)
        self.module = self._module_cls(
            **self._module_gene_args(fitted),
            **fitted.buffers,
            n_heads=n_heads,
            head_dims=tuple(head_dims),
            dropout=dropout,
            attention_init=attention_init,
        )
        self._model_summary_string = (
            f"CGRAN: {len(self.var_names_)} genes, {len(self.classes_)} classes, "
            f"m={self.module.gene_embedding.shape[1]} ({embedding_method}), "
            f"{self.module.groups.group_index.shape[0]} {grouping} gene groups, heads={n_heads}, "
            f"head_dims={tuple(head_dims)}, dropout={dropout}"
        )
        self._record_init_params(locals())

    def _inference_batch_size(self) -> int:
        """On a CPU, at most :attr:`scattn.settings.batch_size` cells, fewer where a minibatch's
        first-block gene tokens ``(cells, genes, n_heads * head_dims[0])`` would pass 16 MiB: a
        buffer that large is fresh memory on every minibatch (a page fault per 4 KiB written),
        which cost a quarter of the prediction time at 128 cells and 1,000 genes. A single block
        forms no gene tokens, and an accelerator keeps its memory."""
        size = super()._inference_batch_size()
        if self.module.device.type != "cpu" or len(self.module.blocks) < 2:
            return size
        width = self.module.blocks[0].n_output * self.module.gene_embedding.shape[0] * 4
        return max(1, min(size, (16 << 20) // width))

    def _fit_embeddings(self, n_top_genes, genes, n_embedding, method, grouping, group_size,
                        n_groups, *, seed: int) -> FittedState:
        """Choose genes, factorise and group them on the registered data (section 3.2.1)."""
        lognorm = self._registered_lognorm()
        fitted = self._panel_state(n_top_genes, genes, lognorm=lognorm)
        emb = factorize(lognorm[:, fitted.gene_index], n_embedding, method=method, seed=seed)
        groups = make_gene_groups(
            len(fitted.gene_index), grouping, group_size=group_size, n_groups=n_groups,
            features=emb.gene_embedding, seed=seed,
        )
        fitted.buffers = {
            "gene_embedding": torch.as_tensor(emb.gene_embedding),
            "projection": torch.as_tensor(emb.projection),
            "group_index": torch.as_tensor(groups),
        }
        return fitted

    @_genes_first_deprecated
    @torch.inference_mode()
    @scattn_dsp.dedent
    def get_gene_attention(
        self,
        adata: AnnData | None = None,
        indices=None,
        *,
        genes: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Gene-to-gene attention among `genes` in the first block, averaged over cells.

        For each cell, the chosen gene tokens attend to one another with the first block's
        queries and keys (summed over heads, softmax over the chosen genes; no group mask, so
        genes from different groups are compared). Used for gene sets (paper, Figure 5a).

        Parameters
        ----------
        %(adata)s
        %(indices)s
        genes
            Model genes to compare, at most 5,000 (`None`: every model gene, if at most 5,000).
        %(batch_size)s

        Returns
        -------
        DataFrame genes x genes; row j is the attention gene j pays to each gene.
        """
        genes = list(self.var_names_) if genes is None else ([genes] if isinstance(genes, str) else genes)
        if len(genes) > 5000:
            raise ValueError(f"{len(genes)} genes make a {len(genes)}^2 matrix; pass `genes=` "
                             "(at most 5,000, e.g. the highly variable ones).")
        genes = list(genes)
        pos = pd.Index(self.var_names_).get_indexer(genes)
        if (pos < 0).any():
            missing = [g for g, p in zip(genes, pos, strict=True) if p < 0]
            raise ValueError(f"Genes not used by the model: {missing[:5]}.")
        idx = torch.as_tensor(pos, device=self.module.device)

        def run(tensors):
            x = tensors[REGISTRY_KEYS.X_KEY].to(self.module.device)
            return {"sum": self.module.gene_gene_attention(x, idx).sum(0), "cells": x.shape[0]}

        totals = self._reduce(adata, run, indices=indices, batch_size=batch_size, desc="gene-gene attention")
        return pd.DataFrame((totals["sum"] / totals["cells"]).float().numpy(), index=genes, columns=genes)

    # -- transfer ---------------------------------------------------------------------------
    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: CGRAN,
        *,
        unfrozen: bool | None = None,
        extend_classes: bool = False,
        min_gene_overlap: float = 0.5,
        fine_tune: FineTune | None = None,
        embedding: Literal["reference", "query"] = "reference",
    ) -> CGRAN:
        """A CGRAN for a query dataset that starts from a trained reference model.

        The query is registered like the reference (same layer, kind of data and labels
        column; the reference's classes). The reference's genes are found in the query by
        name (genes the query lacks read as zero in this model, also on data it predicts
        later), every attention and classifier weight is copied, and ``model.train(...)``
        then fine-tunes on the query's labelled cells. The paper's transfer settings
        (section 4.4):

        ====================  ==============  ==============
        paper setting         `embedding`     `unfrozen`
        ====================  ==============  ==============
        A                     ``"query"``     `False`
        B                     ``"query"``     `True`
        C                     ``"reference"`` `True`
        ====================  ==============  ==============

        Parameters
        ----------
        adata
            The query AnnData, with the reference's labels column (unlabelled cells NaN or the
            reference's `unlabeled_category`). Registered in place, as scvi-tools does.
        reference_model
            A trained CGRAN.
        unfrozen
            Train every weight (`True`) or only the classifier head and its temperature
            (`False`), as scvi-tools' ``load_query_data(unfrozen=)``. `None`: every weight.
        extend_classes
            Add the query's labels that the reference lacks as new classes (new classifier
            rows). With `False`, such labels are an error: set them to the unlabelled category
            to have them predicted (and flagged by :func:`scattn.tl.novelty`).
        min_gene_overlap
            Smallest fraction of the reference's genes the query must have.
        fine_tune
            Deprecated: ``"all"`` is ``unfrozen=True``, ``"classifier"`` ``unfrozen=False``.
        embedding
            ``"reference"``: keep the reference's gene embeddings ``B`` and fit each query
            cell's embedding to its expression by least squares, ``min_A ||x - A B^T||^2``
            over the genes the query has (the optimum the paper reaches by gradient descent,
            in closed form, so new cells get theirs too). ``"query"``: a new truncated SVD of
            the query over the reference's genes (cells and genes).

        Returns
        -------
        The query model (not yet trained; predicting with it before training warns).
        """
        if embedding not in ("reference", "query"):
            raise ValueError(f"embedding must be 'reference' or 'query', got {embedding!r}.")
        return cls._make_query_model(
            adata, reference_model, unfrozen=resolve_unfrozen(unfrozen, fine_tune, cls._default_unfrozen),
            extend_classes=extend_classes, min_gene_overlap=min_gene_overlap, embedding=embedding,
        )

    @classmethod
    def _transfer_buffers(cls, source: Source, adata: AnnData, gene_index: np.ndarray, *,
                          embedding: str = "reference") -> dict:
        """The query's gene/cell embeddings (see :meth:`load_query_data`); groups are kept."""
        present = gene_index < adata.n_vars
        b = source.fitted.buffers["gene_embedding"].numpy().astype(np.float64)
        if embedding == "reference":
            b_present = b * present[:, None]
            # least-squares fold-in over the present genes: A = x B~ (B~^T B~)^-1
            projection = b_present @ np.linalg.pinv(b_present.T @ b_present)
            gene_embedding = b
        else:
            setup = source.setup_args
            lognorm = log_normalize(get_matrix(adata, setup["layer"]), setup["expression"])
            if isinstance(lognorm, BackedLogNorm):  # a backed query: read it once, in blocks
                lognorm = lognorm.to_memory()
            lognorm = sparse.csr_matrix(lognorm)
            padded = sparse.hstack([lognorm, sparse.csr_matrix((adata.n_obs, 1))], format="csr")
            emb = factorize(padded[:, gene_index], b.shape[1], method=source.init_params["embedding_method"],
                            seed=settings.seed or 0)
            gene_embedding, projection = emb.gene_embedding, emb.projection
            if gene_embedding.shape[1] < b.shape[1]:  # fewer query cells/genes than dims: pad
                pad = ((0, 0), (0, b.shape[1] - gene_embedding.shape[1]))
                gene_embedding, projection = np.pad(gene_embedding, pad), np.pad(projection, pad)
        return {
            "gene_embedding": torch.as_tensor(np.asarray(gene_embedding), dtype=torch.float32),
            "projection": torch.as_tensor(np.asarray(projection), dtype=torch.float32),
            "group_index": source.fitted.buffers["group_index"].clone(),
        }
