"""Tools on AnnData (scanpy style: write into ``adata``, record ``params``)."""

from ._evaluate import evaluate
from ._gene_sets import gene_sets_from_attention
from ._markers import attention_markers, marker_genes_from_attention
from ._novelty import novelty, unknown_threshold

__all__ = [
    "attention_markers",
    "evaluate",
    "gene_sets_from_attention",
    "marker_genes_from_attention",
    "novelty",
    "unknown_threshold",
]
