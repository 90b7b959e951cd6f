"""Starting a model from another: the source's genes found by name, its fitted buffers and
weights (``from_pretrained``, ``load_query_data``, published checkpoints)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from ._fitted import FittedState, Source, check_shared_genes

logger = logging.getLogger(__name__)


class SourceMixin:
    """A model on new data that starts from a source model (:class:`~scattn.model.base.Source`):
    the overlap check, the fitted buffers, the gene positions and the weights. Part of
    :class:`~scattn.model.base.ScattnModel`."""

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
