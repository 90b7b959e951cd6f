"""The checks `setup_anndata` makes before it registers anything."""

from __future__ import annotations

from collections.abc import Sequence

from anndata import AnnData

from scattn.data import check_input, check_labels, check_not_empty


def validate_setup(adata: AnnData, labels_key: str | None, layer: str | None, expression: str,
                   unlabeled_category: str, *, classes: list[str] | None = None,
                   obs_keys: Sequence[str] = ()) -> None:
    """Every check `setup_anndata` makes before it registers anything."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    if adata.is_view:
        raise ValueError("adata is a view; call `adata = adata.copy()` first.")
    check_not_empty(adata)  # before the labels, whose checks would misread an empty AnnData
    cols = ", ".join(map(repr, adata.obs.columns[:10])) or "none"
    for key in obs_keys:
        if key not in adata.obs:
            raise KeyError(f"{key!r} is not a column of adata.obs (columns: {cols}).")
        if adata.obs[key].isna().any():
            raise ValueError(f"adata.obs[{key!r}] has missing values; every cell needs one.")
    if labels_key is not None:
        if labels_key not in adata.obs:
            raise KeyError(f"labels_key {labels_key!r} is not a column of adata.obs (columns: {cols}).")
        check_labels(adata.obs[labels_key], unlabeled_category, labels_key=labels_key, classes=classes)
    check_input(adata, layer, expression)
