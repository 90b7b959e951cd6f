"""AnnData to tensors: validation, normalisation, gene choice and alignment, embeddings."""

from ._embed import Embedding, factorize, gd_embedding, svd_embedding
from ._fields import LabelsField
from ._genes import align_to_genes, genes_to_positions, select_variable_genes
from ._grouping import group_mask, make_gene_groups, pad_groups
from ._normalize import TARGET_SUM, log_normalize
from ._validate import (
    check_expression,
    check_input,
    check_labels,
    check_nonempty_cells,
    check_var_names,
    get_matrix,
)

__all__ = [
    "TARGET_SUM",
    "Embedding",
    "LabelsField",
    "align_to_genes",
    "check_expression",
    "check_input",
    "check_labels",
    "check_nonempty_cells",
    "check_var_names",
    "factorize",
    "gd_embedding",
    "genes_to_positions",
    "get_matrix",
    "group_mask",
    "log_normalize",
    "make_gene_groups",
    "pad_groups",
    "select_variable_genes",
    "svd_embedding",
]
