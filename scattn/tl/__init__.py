"""Tools on AnnData (scanpy style: write into ``adata``, record ``params``)."""

from ._attention_shift import attention_shift
from ._evaluate import evaluate
from ._gene_network import gene_network
from ._gene_programs import gene_programs
from ._gene_sets import gene_sets_from_attention
from ._markers import attention_markers, marker_genes_from_attention
from ._novelty import novelty, unknown_threshold
from ._perturbation import in_silico_perturbation

__all__ = [
    "attention_markers",
    "attention_shift",
    "evaluate",
    "gene_network",
    "gene_programs",
    "gene_sets_from_attention",
    "in_silico_perturbation",
    "marker_genes_from_attention",
    "novelty",
    "unknown_threshold",
]
