"""The attribution mixin: per-cell gene attribution, its top-k sparse layer and markers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from scattn._attribution import attention_markers
from scattn._docs import scattn_dsp
from scattn._version import __version__
from scattn._write import write_results
from scattn.module import MODULE_KEYS

from ._results import EmbeddingResult


class AttentionMixin:
    """Models whose module's ``inference(..., return_attention=True)`` returns
    :data:`MODULE_KEYS.ATTENTION <scattn.module.MODULE_KEYS>` (cells x model genes).

    A model sets ``_attention_description`` (what its attribution means, recorded in
    ``params``) and may return an accumulator from :meth:`_attention_summary` (SIMS' feature
    importances).
    """

    _attention_description = ""
    _writes_attribution = True

    @scattn_dsp.dedent
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
        %(adata)s
        %(indices)s
        top_k
            Keep only each cell's `top_k` largest positive weights (others 0). `None`: all
            weights, as computed (CFAN's gradients keep their sign).
        %(batch_size)s

        Returns
        -------
        DataFrame, cells x the model's genes (``model.var_names_``).
        """
        self._check_usable()
        out = self._infer(adata, indices=indices, batch_size=batch_size, attention_top_k=top_k or 0,
                          keys=(), desc=f"{type(self).__name__}.get_attention")
        names = self._obs_names_of(adata, indices)
        return pd.DataFrame(out[MODULE_KEYS.ATTENTION].toarray(), index=names, columns=self.var_names_)

    def _attention_summary(self):
        """A callable fed every inference minibatch by `predict`, whose ``results(readable)``
        (a dict) goes beside ``params`` in ``adata.uns[key]``; `None`: nothing extra."""
        return None

    def _readable_in(self, var_names: pd.Index) -> np.ndarray:
        """Which model genes (``var_names_`` order) the model reads and `var_names` holds."""
        genes = pd.Index(self.var_names_)
        return genes.isin(self._read_genes) & genes.isin(pd.Index(var_names))

    def _attention_in_genes_of(self, attention: sparse.csr_matrix, var_names: pd.Index) -> sparse.csr_matrix:
        """Map a cells x model-genes matrix onto the columns `var_names` (absent genes dropped)."""
        pos = pd.Index(var_names).get_indexer(pd.Index(self.var_names_))
        readable = self._readable_in(var_names)  # genes the model never reads get nothing
        attention = sparse.csr_matrix(attention, dtype=np.float32)
        if not readable.all():
            attention = attention.copy()
            attention.data[~readable[attention.indices]] = 0
            attention.eliminate_zeros()
        # each entry moves to its gene's column: only the column indices are new (no product)
        out = sparse.csr_matrix((attention.data, pos.astype(attention.indices.dtype)[attention.indices],
                                 attention.indptr), shape=(attention.shape[0], len(var_names)))
        out.has_sorted_indices = False
        out.sort_indices()
        out.eliminate_zeros()
        return out

    @staticmethod
    def _attention_markers(attention: sparse.csr_matrix, groups: pd.Series, var_names: pd.Index, *,
                           key: str, top_k: int, n_genes: int) -> dict:
        """Markers per group from the attribution layer (``rank_genes_groups`` layout)."""
        return attention_markers(
            attention, groups, var_names, n_top=top_k, n_genes=n_genes,
            groupby=f"{key}_prediction", layer=f"{key}_attention",
        )

    def _predict_embedding(self, adata: AnnData | None, *, key_added: str | None, inplace: bool,
                           attention_top_k: int, batch_size: int | None, min_gene_overlap: float,
                           z_key: str = MODULE_KEYS.Z, params: dict | None = None) -> EmbeddingResult | None:
        """``predict`` of a model without a classifier: the embedding (``obsm[f"X_{key}"]``), the
        top-k attribution layer and ``uns[key]["params"]`` (written all or nothing), or an
        :class:`EmbeddingResult` with ``inplace=False``. Needs the attention mixin."""
        if attention_top_k < 1:
            raise ValueError(f"attention_top_k must be >= 1, got {attention_top_k}.")
        self._check_usable()
        key = self._key if key_added is None else key_added
        target = self.adata if adata is None else adata
        out = self._infer(adata, min_gene_overlap=min_gene_overlap, batch_size=batch_size,
                          attention_top_k=attention_top_k, keys=(z_key,), with_empty=True,
                          desc=f"{type(self).__name__}.predict")
        out[z_key] = self._blank_empty_cells(out[z_key], out.pop("empty"), "embedding")
        attention = self._attention_in_genes_of(out.pop(MODULE_KEYS.ATTENTION), target.var_names)
        info = {"model": type(self).__name__, "scattn_version": __version__, "key_added": key,
                "attention_top_k": attention_top_k, "n_model_genes": len(self.var_names_),
                "attention": self._attention_description, **(params or {})}
        result = EmbeddingResult(out[z_key], attention, target.var_names.copy(),
                                 {k: v for k, v in info.items() if v is not None})
        if not inplace:
            return result
        write_results(target, [("obsm", f"X_{key}", result.embedding.astype(np.float32)),
                               ("layers", f"{key}_attention", attention),
                               ("uns", key, {"params": result.params})],
                      by=f"{type(self).__name__}.predict")
        return None
