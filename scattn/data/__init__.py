"""AnnData to tensors: reading files, validation, normalisation, gene choice and alignment, embeddings."""

from ._binning import value_bins
from ._embed import Embedding, factorize, gd_embedding, svd_embedding
from ._fields import ExpressionField, LabelsField
from ._files import open_zarr, read_h5ads
from ._gene_order import GENE_ORDERS, order_genes
from ._genes import (
    align_to_genes,
    gene_selector,
    genes_to_positions,
    select_columns,
    select_variable_genes,
)
from ._grouping import group_mask, make_gene_groups, pad_groups
from ._normalize import (
    TARGET_SUM,
    BackedLogNorm,
    gene_mean_var,
    log_normalize,
    seurat_dispersions_norm,
)
from ._sampling import LengthGroupedBatchSampler, LengthGroupedDataSplitter, expressed_counts
from ._tokenize import RankTokens, gene_nonzero_medians, rank_tokens, rank_value_encode
from ._validate import (
    balanced_class_weights,
    check_expression,
    check_input,
    check_labels,
    check_nonempty_cells,
    check_not_empty,
    check_var_names,
    get_matrix,
    is_backed,
    iter_row_blocks,
    label_strings,
    labelled_mask,
    read_rows,
)
from ._vocab import SPECIAL_TOKENS, GeneVocabulary, gene_ids

__all__ = [
    "GENE_ORDERS",
    "SPECIAL_TOKENS",
    "TARGET_SUM",
    "BackedLogNorm",
    "Embedding",
    "ExpressionField",
    "GeneVocabulary",
    "LabelsField",
    "LengthGroupedBatchSampler",
    "LengthGroupedDataSplitter",
    "RankTokens",
    "align_to_genes",
    "balanced_class_weights",
    "gene_selector",
    "select_columns",
    "check_expression",
    "check_input",
    "check_labels",
    "check_nonempty_cells",
    "check_not_empty",
    "check_var_names",
    "expressed_counts",
    "factorize",
    "gd_embedding",
    "gene_ids",
    "gene_mean_var",
    "gene_nonzero_medians",
    "genes_to_positions",
    "get_matrix",
    "group_mask",
    "is_backed",
    "iter_row_blocks",
    "read_rows",
    "label_strings",
    "labelled_mask",
    "log_normalize",
    "make_gene_groups",
    "order_genes",
    "pad_groups",
    "rank_tokens",
    "rank_value_encode",
    "open_zarr",
    "read_h5ads",
    "select_variable_genes",
    "seurat_dispersions_norm",
    "svd_embedding",
    "value_bins",
]
