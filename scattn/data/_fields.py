"""scvi-tools AnnData fields with the behaviour scattn documents: the expression matrix in any
form anndata holds it, labels with unlabelled cells."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from scvi.data.fields import LabelsWithUnlabeledObsField, LayerField

from scattn._quiet import user_stacklevel

from ._validate import _value_summary, _values, label_strings, read_rows

#: rows whose stored values :class:`ExpressionField` looks at for its counts warning
_COUNTS_SAMPLE_ROWS = 100


class ExpressionField(LayerField):
    """scvi-tools' ``LayerField`` (``X`` or a layer) that also takes scipy sparse *arrays*.

    ``scipy.sparse.csr_array`` and ``csc_array`` (what anndata reads with
    ``anndata.settings.use_sparse_array_on_read = True``, in memory and backed) are refused by
    scvi-tools' registration ("data type not understood"), though its data loader reads them
    minibatch by minibatch like sparse matrices. This field registers them as they are: the
    user's matrix is neither converted nor copied, and every minibatch is densified on its own
    as for a ``csr_matrix``. A ``csc_array`` gets scvi-tools' warning for a ``csc_matrix``
    (cells are read by rows: CSR is faster).

    The warning for data that do not look like counts (``is_count_data``) is scvi-tools' own,
    from the stored values of the first rows (a few, read from disk for a backed matrix).
    scattn checks every value itself before registration (:func:`~scattn.data.check_input`).
    """

    def __init__(self, registry_key: str, layer: str | None, *,
                 is_count_data: bool = True) -> None:
        super().__init__(registry_key, layer, is_count_data=is_count_data)

    def validate_field(self, adata: AnnData) -> None:
        """Warn (as scvi-tools does) when `is_count_data` and the first rows are not counts."""
        matrix = self.get_field_data(adata)  # scvi's ValueError for a missing layer
        if not self.is_count_data or matrix.shape[0] == 0:
            return
        values = _values(read_rows(matrix, np.arange(min(matrix.shape[0], _COUNTS_SAMPLE_ROWS))))
        n_bad, minimum, integral, _ = _value_summary(values, "counts")
        if n_bad or minimum < 0 or not integral:
            where = "adata.X" if self.attr_key is None else f"adata.layers[{self.attr_key}]"
            warnings.warn(
                f"{where} does not contain unnormalized count data. Are you sure this is what "
                "you want?",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    def register_field(self, adata: AnnData) -> dict:
        """Register the field (scvi-tools' state: cells, genes, gene names)."""
        state = super().register_field(adata)
        matrix = self.get_field_data(adata)
        if sparse.issparse(matrix) and not sparse.isspmatrix(matrix) and matrix.format != "csr":
            warnings.warn(
                "Training will be faster when sparse matrix is formatted as CSR. It is safe to "
                "cast before model initialization.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        return state


class LabelsField(LabelsWithUnlabeledObsField):
    """Labels where NaN and `unlabeled_category` both mean "unlabelled".

    Known classes are sorted and coded ``0..n-1``; the unlabelled category is always the last
    code, ``n``. Like every scvi-tools field, registration writes the codes into
    ``adata.obs["_scvi_labels"]``; the user's label column itself is never changed. On transfer
    (prediction on new data), a missing label column or labels outside the reference classes
    map to the unlabelled code instead of raising.

    With `classes`, the known classes and their order are fixed (e.g. a reference model's
    classes, so that a query dataset shares its label encoding); labels outside them must have
    been rejected before registration.
    """

    def __init__(self, registry_key: str, obs_key: str, unlabeled_category: str,
                 classes: list[str] | None = None) -> None:
        super().__init__(registry_key, obs_key, unlabeled_category)
        self._classes = None if classes is None else [str(c) for c in classes]

    def _codes(self, adata: AnnData, mapping: np.ndarray) -> np.ndarray:
        if self._original_attr_key not in adata.obs:
            return np.full(adata.n_obs, len(mapping) - 1, dtype=np.int64)
        labels = adata.obs[self._original_attr_key]
        values = labels.astype(object).where(labels.notna(), self._unlabeled_category)
        values = values.where(values == self._unlabeled_category, label_strings(values))
        codes = pd.Categorical(values, categories=mapping).codes.astype(np.int64)
        codes[codes < 0] = len(mapping) - 1
        return codes

    def register_field(self, adata: AnnData) -> dict:
        """Register the field: code the labels, unlabelled last."""
        self.validate_field(adata)
        if self._classes is not None:
            known = self._classes
        else:
            labels = adata.obs[self._original_attr_key]
            values = labels[labels.notna()].astype(object)
            known = sorted(pd.unique(label_strings(values[values != self._unlabeled_category])))
        mapping = np.asarray([*known, self._unlabeled_category], dtype=object)
        adata.obs[self.attr_key] = self._codes(adata, mapping)
        return {
            self.CATEGORICAL_MAPPING_KEY: mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
            self.UNLABELED_CATEGORY: self._unlabeled_category,
        }

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        """Code the target's labels with the reference mapping; unknown ones are unlabelled."""
        mapping = state_registry[self.CATEGORICAL_MAPPING_KEY]
        adata_target.obs[self.attr_key] = self._codes(adata_target, mapping)
        return {
            self.CATEGORICAL_MAPPING_KEY: mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
            self.UNLABELED_CATEGORY: self._unlabeled_category,
        }
