"""AnnData to tensors: reading files, validation, normalisation, gene choice and alignment, embeddings."""

from ._embed import Embedding, factorize, gd_embedding, svd_embedding
from ._fields import LabelsField
from ._files import read_h5ads
from ._gene_order import GENE_ORDERS, order_genes
from ._genes import align_to_genes, genes_to_positions, select_variable_genes
from ._grouping import group_mask, make_gene_groups, pad_groups
from ._normalize import (
    TARGET_SUM,
    BackedLogNorm,
    gene_mean_var,
    log_normalize,
    seurat_dispersions_norm,
)
from ._validate import (
    check_expression,
    check_input,
    check_labels,
    check_nonempty_cells,
    check_not_empty,
    check_var_names,
    get_matrix,
    is_backed,
    iter_row_blocks,
    labelled_mask,
)

__all__ = [
    "GENE_ORDERS",
    "TARGET_SUM",
    "BackedLogNorm",
    "Embedding",
    "LabelsField",
    "align_to_genes",
    "check_expression",
    "check_input",
    "check_labels",
    "check_nonempty_cells",
    "check_not_empty",
    "check_var_names",
    "factorize",
    "gd_embedding",
    "gene_mean_var",
    "genes_to_positions",
    "get_matrix",
    "group_mask",
    "is_backed",
    "iter_row_blocks",
    "labelled_mask",
    "log_normalize",
    "make_gene_groups",
    "order_genes",
    "pad_groups",
    "read_h5ads",
    "select_variable_genes",
    "seurat_dispersions_norm",
    "svd_embedding",
]
