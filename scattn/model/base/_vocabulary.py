"""The vocabulary mixin: token models whose genes are a vocabulary matched by gene ID."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scattn._quiet import user_stacklevel
from scattn._settings import settings
from scattn.data import (
    SPECIAL_TOKENS,
    GeneVocabulary,
    LengthGroupedDataSplitter,
    expressed_counts,
    gene_selector,
)

from ._data import _positions
from ._fitted import FittedState, Source


class VocabularyMixin:
    """Gene-token models (Geneformer, scGPT): the registered genes (``var_names`` or the
    ``gene_id_key`` column) are the vocabulary after the module's special tokens.

    New data are matched by ID through the vocabulary (genes outside it dropped with one
    warning; too little overlap an error naming the likely cause); training groups cells of
    similar token counts into minibatches and refuses cells without tokens; inference runs
    cells sorted by token count. The model sets ``_gene_ids = True``.
    """

    _gene_ids = True
    #: tokens are per cell (ranks, bins): no library size over every registered gene
    _library_over_all_genes = False

    def _describe_pooling(self) -> None:
        """Name the attribution the module's ``pooling`` gives (``"mean"``: attention
        received averaged over every token instead of from ``<cls>``)."""
        if getattr(self.module, "pooling", "cls") == "mean":
            self._attention_description = ("attention the gene tokens receive, averaged over every "
                                           "token, last layer, mean over heads")

    @property
    def vocabulary(self) -> GeneVocabulary:
        """The model's gene vocabulary (special tokens, then its genes)."""
        return GeneVocabulary(self.var_names_, self.module.special_tokens)

    def _vocabulary_state(self) -> FittedState:
        """Every registered gene, in order."""
        ids = self._registered_var_names
        return FittedState([str(g) for g in ids], np.arange(len(ids)))

    @property
    def _registered_var_names(self) -> pd.Index:
        return self._gene_names_of(self.adata, self._setup_args)

    def _gene_selector(self, adata: AnnData, *, min_gene_overlap: float):
        try:
            ids = self._gene_names_of(adata, self._setup_args)
        except KeyError as err:
            raise KeyError(f"{err.args[0]} The model matches genes through that column; new data "
                           "need it too.") from None
        self._match_vocabulary(ids, min_gene_overlap=min_gene_overlap)
        return gene_selector(ids, self._registered_var_names, model_genes=self._read_genes,
                             min_overlap=0.0, warn_missing=False)

    def _match_vocabulary(self, ids: pd.Index, *, min_gene_overlap: float) -> None:
        """Warn about genes outside the vocabulary; an error when too few are in it."""
        if not 0 <= min_gene_overlap <= 1:
            raise ValueError(f"min_gene_overlap must be in [0, 1], got {min_gene_overlap}.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said below, once, with the model's genes
            self.vocabulary.match(ids, min_overlap=min_gene_overlap, what="adata")  # too few: an error
        readable = pd.Index(ids).isin(self._read_genes)
        if (~readable).any():
            warnings.warn(f"{int((~readable).sum())} of the {len(ids)} genes of adata are not in the "
                          "model's vocabulary (or not in the data it was set up with) and are dropped.",
                          UserWarning, stacklevel=user_stacklevel())

    @classmethod
    def _check_source(cls, source: Source, adata: AnnData, *, setup_args: dict, min_gene_overlap: float,
                      names: tuple[str, str] = ("source model", "adata")) -> None:
        """Tokens are per cell (ranks, per-cell bins), the same for counts and log1p values:
        any kind of data may start from the source; the overlap is judged on `adata`'s genes
        in the vocabulary."""
        vocab = GeneVocabulary(source.var_names, source.init_params.get("special_tokens", SPECIAL_TOKENS))
        vocab.match(cls._gene_names_of(adata, setup_args), min_overlap=min_gene_overlap, what=names[1])

    def _registered_columns(self) -> np.ndarray:
        """Registered columns holding the genes the model reads (an aligned AnnData has the
        registered columns too)."""
        pos = self.module.genes.gene_index.cpu().numpy()
        return np.sort(pos[pos < self.module.genes.n_input])

    def _token_counts(self, manager) -> np.ndarray:
        """Expressed model genes per registered cell of `manager`'s AnnData."""
        return expressed_counts(manager.get_from_registry(REGISTRY_KEYS.X_KEY), self._registered_columns())

    def _make_splitter(self, manager, **kwargs):
        lengths = self._token_counts(manager)
        empty = int((lengths == 0).sum())
        if empty:
            raise ValueError(
                f"{empty} cells express none of the model's {len(self._read_genes)} vocabulary genes "
                "and have no tokens; remove them first (e.g. `sc.pp.filter_cells(adata, min_genes=1)` "
                "on the model's genes)."
            )
        return LengthGroupedDataSplitter(manager, lengths=lengths, seed=settings.seed or 0, **kwargs)

    def _run_inference(self, adata: AnnData, *, indices=None, **kwargs):
        """Minibatch inference over cells sorted by token count (a minibatch is padded to its
        longest cell), outputs returned in the order asked."""
        manager = self.adata_manager if adata is self.adata else self.get_anndata_manager(adata)
        lengths = self._token_counts(manager)
        idx = np.arange(adata.n_obs) if indices is None else _positions(indices, adata.n_obs)
        order = np.argsort(-lengths[idx], kind="stable")
        out = super()._run_inference(adata, indices=idx[order], **kwargs)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return {k: v[inverse] for k, v in out.items()}

    def _gene_positions(self, genes: Sequence[str]) -> torch.Tensor:
        """Positions of `genes` (IDs) among the model's genes; an error for unknown ones."""
        genes = [str(g) for g in ([genes] if isinstance(genes, str) else genes)]
        if not genes:
            raise ValueError("Give at least one gene.")
        pos = pd.Index(self.var_names_).get_indexer(genes)
        unknown = [g for g, p in zip(genes, pos, strict=True) if p < 0]
        if unknown:
            raise ValueError(f"{len(unknown)} genes are not in the model's vocabulary: "
                             f"{', '.join(unknown[:5])}.")
        return torch.as_tensor(pos, dtype=torch.long)
