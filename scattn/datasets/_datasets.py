"""Datasets available without a download: bundled with scanpy, or files the user points to."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from anndata import AnnData


def pbmc68k_reduced() -> AnnData:
    """scanpy's bundled PBMC subset (700 cells, 765 genes, 10 ``bulk_labels``), ready for scattn.

    scanpy's object keeps scaled values in ``X`` (negative, not usable here) and the
    log-normalised data in ``.raw``. This returns the ``.raw`` genes with log-normalised ``X``,
    ``obs`` (``bulk_labels`` and the rest) and the UMAP, so set it up with
    ``expression="log1p"``. Nothing is downloaded: the file ships with scanpy.
    """
    import scanpy as sc

    ref = sc.datasets.pbmc68k_reduced()
    adata = ref.raw.to_adata()
    adata.obsm["X_umap"] = ref.obsm["X_umap"].copy()
    adata.uns["scattn_dataset"] = {"name": "pbmc68k_reduced", "expression": "log1p"}
    return adata


def pbmc68k_reference_query(labels_key: str = "bulk_labels") -> tuple[AnnData, AnnData]:
    """:func:`pbmc68k_reduced` split into a labelled reference and a query, the example of
    ``scattn annotate``.

    The rule: within each cell type of `labels_key`, the cells at even positions (in the
    file's order) form the reference and the others the query (353 and 347 cells, every type
    on both sides). Both keep their labels; hide the query's to annotate it blind.

    Returns
    -------
    ``(reference, query)``, log-normalised (``expression="log1p"``), 765 genes.
    """
    adata = pbmc68k_reduced()
    labels = adata.obs[labels_key].astype(str).to_numpy()
    rank = np.zeros(adata.n_obs, dtype=int)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        rank[where] = np.arange(len(where))
    return adata[rank % 2 == 0].copy(), adata[rank % 2 == 1].copy()


def shared_data_dir() -> Path | None:
    """The local folder of benchmark datasets, if present.

    Looks at ``$SCATTN_DATA_DIR``, then ``../shared/data`` next to the current directory.
    Returns `None` when neither exists; the package never needs it.
    """
    candidates = [os.environ.get("SCATTN_DATA_DIR"), Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def read_local(name: str, data_dir: str | os.PathLike | None = None) -> AnnData:
    """Read ``<data_dir>/<name>.h5ad`` (default :func:`shared_data_dir`), never downloading.

    Raises
    ------
    FileNotFoundError
        Naming where it looked.
    """
    import anndata as ad

    base = Path(data_dir) if data_dir is not None else shared_data_dir()
    if base is None:
        raise FileNotFoundError(
            "No local data folder: set SCATTN_DATA_DIR or pass data_dir= (scattn never downloads)."
        )
    path = base / (name if name.endswith(".h5ad") else f"{name}.h5ad")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    return ad.read_h5ad(path)
