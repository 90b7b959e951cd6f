"""Datasets available without a download: bundled with scanpy, or files the user points to."""

from __future__ import annotations

import os
from pathlib import Path

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
