"""scvi-tools AnnData fields with the behaviour scattn documents for labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi.data.fields import LabelsWithUnlabeledObsField

from ._validate import label_strings


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
