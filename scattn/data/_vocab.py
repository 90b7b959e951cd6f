"""A gene vocabulary for token models: gene IDs and special tokens, saved with the model."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from scattn._quiet import user_stacklevel

logger = logging.getLogger(__name__)

#: special tokens every vocabulary starts with, in this order (ids 0, 1, 2)
SPECIAL_TOKENS = ("<pad>", "<mask>", "<cls>")
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}")


def _id_kind(names: Iterable[str]) -> str:
    names = [str(n) for n in names][:2000]
    if not names:
        return "none"
    share = np.mean([bool(_ENSEMBL.match(n)) for n in names])
    return "Ensembl IDs" if share > 0.5 else "gene symbols"


class GeneVocabulary:
    """Gene IDs and special tokens with integer ids (specials first, then genes in order).

    Parameters
    ----------
    genes
        Gene IDs (unique), e.g. ``adata.var_names`` or an Ensembl ID column.
    special_tokens
        Names of the special tokens (default ``<pad>``, ``<mask>``, ``<cls>``).

    Examples
    --------
    >>> vocab = GeneVocabulary.from_anndata(adata)               # var_names
    >>> vocab = GeneVocabulary.from_anndata(adata, gene_id_key="gene_ids")
    >>> ids, kept = vocab.match(other.var_names)                  # -1 where unknown
    """

    def __init__(self, genes: Sequence[str], special_tokens: Sequence[str] = SPECIAL_TOKENS) -> None:
        genes = pd.Index([str(g) for g in genes])
        if genes.has_duplicates:
            dup = genes[genes.duplicated()].unique()[:5].tolist()
            raise ValueError(f"Gene IDs must be unique; duplicated: {dup}. Make them unique "
                             "(`adata.var_names_make_unique()`) or use an ID column (`gene_id_key`).")
        clash = set(special_tokens) & set(genes)
        if clash:
            raise ValueError(f"Gene IDs clash with special tokens: {sorted(clash)}.")
        self.special_tokens = tuple(special_tokens)
        self.genes = genes
        self._index = pd.Index([*self.special_tokens, *genes])

    @classmethod
    def from_anndata(cls, adata: AnnData, gene_id_key: str | None = None, **kwargs) -> GeneVocabulary:
        """The vocabulary of `adata`'s genes (``var_names`` or ``adata.var[gene_id_key]``)."""
        return cls(gene_ids(adata, gene_id_key), **kwargs)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"GeneVocabulary({len(self.genes)} genes ({_id_kind(self.genes)}), specials {list(self.special_tokens)})"

    def __eq__(self, other) -> bool:
        return isinstance(other, GeneVocabulary) and self._index.equals(other._index)

    def token_id(self, token: str) -> int:
        """The id of a special token or gene."""
        pos = self._index.get_loc(token)
        return int(pos)

    @property
    def pad_id(self) -> int:
        return self.token_id("<pad>")

    @property
    def mask_id(self) -> int:
        return self.token_id("<mask>")

    @property
    def cls_id(self) -> int:
        return self.token_id("<cls>")

    def ids(self, genes: Iterable[str]) -> np.ndarray:
        """Token ids of `genes` (-1 for genes outside the vocabulary)."""
        pos = self._index.get_indexer(pd.Index([str(g) for g in genes]))
        pos[(pos >= 0) & (pos < len(self.special_tokens))] = -1  # a gene named like a special
        return pos.astype(np.int64)

    def match(self, genes: Iterable[str], *, min_overlap: float = 0.05, what: str = "adata",
              min_genes: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Match a dataset's genes to the vocabulary.

        Returns each gene's token id (-1 outside the vocabulary) and a boolean mask of the genes
        kept. Genes outside the vocabulary are dropped with a warning saying how many; fewer
        than `min_overlap` of the dataset's genes (or fewer than `min_genes`) in the vocabulary
        is an error that names the likely cause (gene symbols against Ensembl IDs).
        """
        genes = pd.Index([str(g) for g in genes])
        ids = self.ids(genes)
        kept = ids >= 0
        n = int(kept.sum())
        if n < max(min_genes, min_overlap * len(genes)):
            mine, theirs = _id_kind(self.genes), _id_kind(genes)
            hint = (f" The vocabulary holds {mine} and {what} {theirs}: pass `gene_id_key=` naming "
                    f"the adata.var column with {mine}." if mine != theirs else
                    " Check that both use the same gene identifiers and species.")
            raise ValueError(f"Only {n} of the {len(genes)} genes of {what} are in the model's "
                             f"vocabulary of {len(self.genes)} genes (e.g. {', '.join(self.genes[:3])})."
                             + hint)
        if n < len(genes):
            warnings.warn(f"{len(genes) - n} of the {len(genes)} genes of {what} are not in the "
                          "model's vocabulary and are dropped.", UserWarning, stacklevel=user_stacklevel())
        return ids, kept

    def to_dict(self) -> dict:
        """What is saved with a model."""
        return {"genes": list(self.genes), "special_tokens": list(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> GeneVocabulary:
        """Inverse of :meth:`to_dict`."""
        return cls(d["genes"], d.get("special_tokens", SPECIAL_TOKENS))

    @classmethod
    def from_token_dictionary(cls, token_dictionary: dict[str, int]) -> GeneVocabulary:
        """From a ``{token: id}`` mapping (e.g. Geneformer's token dictionary), keeping its ids
        when they are the specials first and the genes after them in id order."""
        items = sorted(token_dictionary.items(), key=lambda kv: kv[1])
        ids = [i for _, i in items]
        if ids != list(range(len(ids))):
            raise ValueError("The token dictionary's ids must be 0..n-1 without gaps.")
        names = [t for t, _ in items]
        specials = tuple(t for t in names if t.startswith("<") and t.endswith(">"))
        n = len(specials)
        if tuple(names[:n]) != specials:
            raise ValueError("The token dictionary's special tokens must come first.")
        return cls(names[n:], special_tokens=specials)


def gene_ids(adata: AnnData, gene_id_key: str | None = None) -> pd.Index:
    """``adata.var_names`` or the column ``adata.var[gene_id_key]``, as strings."""
    if gene_id_key is None:
        return pd.Index(adata.var_names.astype(str))
    if gene_id_key not in adata.var:
        cols = ", ".join(map(repr, adata.var.columns[:10])) or "none"
        raise KeyError(f"gene_id_key {gene_id_key!r} is not a column of adata.var (columns: {cols}).")
    col = adata.var[gene_id_key]
    if col.isna().any():
        raise ValueError(f"adata.var[{gene_id_key!r}] has missing gene IDs.")
    return pd.Index(col.astype(str))
