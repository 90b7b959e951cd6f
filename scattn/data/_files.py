"""Several h5ad files whose genes differ as one AnnData on their common genes."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from ._validate import check_var_names, label_strings

logger = logging.getLogger(__name__)

_DENSE, _CSR = "array", "csr_matrix"


@dataclass
class _FileInfo:
    """What :func:`read_h5ads` reads of a file before concatenating: annotations, no values."""

    path: Path
    key: str
    obs: pd.DataFrame
    var: pd.DataFrame
    layers: list[str]
    has_x: bool
    encoding: str | None = None  # of the matrix read ("array", "csr_matrix", "csc_matrix")
    dtype: np.dtype | None = None

    @property
    def name(self) -> str:
        return repr(self.path.name)


def read_h5ads(
    paths: Sequence[str | PathLike] | str | PathLike,
    *,
    labels_key: str | None = None,
    layer: str | None = None,
    backed: bool = True,
    out: str | PathLike | None = None,
    overwrite: bool = False,
    keys: Sequence[str] | None = None,
    source_key: str = "source",
    index_unique: str | None = "-",
) -> AnnData:
    """Read several h5ad files whose genes differ as one AnnData on the genes they share.

    Everything is checked from the files' annotations (``obs``, ``var``; no expression value
    is read) before anything is written: unique gene names in each file, `labels_key` in every
    file, at least one gene common to all, the matrix (``X`` or `layer`) in every file, cell
    names unique in the result. The cells of every file are then concatenated on the
    intersection of their genes, in the first file's gene order, with anndata's
    concatenation (:func:`anndata.experimental.concat_on_disk` with ``backed=True``,
    :func:`anndata.concat` otherwise). The result trains any scattn model directly: one
    AnnData means one label encoding for all files, and scvi-tools' data loaders read the
    cells of a backed AnnData minibatch by minibatch.

    Parameters
    ----------
    paths
        The ``.h5ad`` files (one path is read as a list of one).
    labels_key
        Column of ``obs`` holding the cell types; it must be in every file (anndata's inner
        join keeps only the ``obs`` columns that every file has). In the result it is a
        categorical of strings (``1`` and ``1.0`` of two files are the same ``"1"``), missing
        labels stay NaN. `None`: no label column is required.
    layer
        Read the expression from ``layers[layer]`` of every file instead of ``X``; in the
        result it is ``X`` (set the model up with ``layer=None``).
    backed
        `True`: the concatenation is written to `out` without loading the files in memory
        (sparse matrices a block at a time) and returned backed (``adata.isbacked``): ``X``
        stays on disk and is read as it is used. `False`: the files are read in memory and
        an in-memory AnnData is returned.
    out
        The ``.h5ad`` file the concatenation is written to (``backed=True`` only). `None`: a
        file ``concatenated.h5ad`` in a new temporary directory (``scattn_*`` under
        :func:`tempfile.gettempdir`), logged at INFO; it is not deleted automatically
        (the returned AnnData reads from it): remove it, ``adata.filename``, when done.
    overwrite
        Replace `out` if it exists (otherwise that is an error).
    keys
        A name for each file, in ``obs[source_key]`` and in the cell names; `None`: the file
        names without ``.h5ad`` (the paths where two files share a name).
    source_key
        Column of ``obs`` naming each cell's file (categorical); must not already be a column
        of a file.
    index_unique
        Cell names become ``f"{name}{index_unique}{key}"`` (as in :func:`anndata.concat`), so
        the same barcode in two files stays two cells. `None` keeps the names; they must then
        differ between files.

    Returns
    -------
    AnnData, cells of all files x the genes common to all (backed with ``backed=True``):

    ``X``
        The expression: ``X``, or `layer`, of each file.
    ``obs``
        The columns every file has (one mixing numbers and text across files as
        categorical strings), `labels_key` as above, and `source_key`.
    ``var``
        The columns equal in every file.

    Other layers, ``obsm``, ``varm``, ``obsp``, ``varp``, ``uns`` and ``raw`` are not kept.

    Notes
    -----
    The number of genes kept and lost per file is logged at INFO (``sa.settings.verbosity =
    "info"`` shows it).

    With ``backed=True``, every file's matrix must be stored the same way: all CSR (the
    usual) or all dense (which needs ``dask``); a CSC file must be read with
    ``backed=False``. The result has the first file's dtype, so a file of floats cannot
    follow one of integers (put it first). A model set up on a backed AnnData checks it and,
    where it chooses genes, computes their statistics a block of cells at a time;
    ``n_top_genes=None`` (or ``genes=[...]``) skips that pass. Results written by
    ``predict`` are in memory (``adata.obs``, ``adata.obsm``...) like with any backed AnnData.

    The label encoding is shared by construction. To keep it fixed across runs whose files
    hold different subsets of types, pass the classes to the model:
    ``setup_anndata(adata, labels_key=..., classes=[...])``.

    Examples
    --------
    >>> import scattn as sa
    >>> adata = sa.data.read_h5ads(["a.h5ad", "b.h5ad"], labels_key="cell_type")
    >>> adata.obs["source"].value_counts()  # cells per file
    >>> sa.model.CFAN.setup_anndata(adata, labels_key="cell_type")
    >>> model = sa.model.CFAN(adata, n_top_genes=None)
    >>> model.train(max_epochs=20)
    >>> model.predict()  # writes adata.obs["cfan_prediction"], ...

    In memory, counts in a layer, and the concatenation kept in a chosen file:

    >>> adata = sa.data.read_h5ads(files, labels_key="cell_type", layer="counts", backed=False)
    >>> adata = sa.data.read_h5ads(files, labels_key="cell_type", out="merged.h5ad")
    """
    files = _check_paths(paths)
    keys = _check_keys(keys, files)
    if not isinstance(source_key, str) or not source_key:
        raise TypeError(f"source_key must be a non-empty string, got {source_key!r}.")
    if labels_key is not None and labels_key == source_key:
        raise ValueError(f"labels_key and source_key are both {labels_key!r}; choose another source_key.")
    out_path = _check_out(out, files, backed=backed, overwrite=overwrite)
    infos = [_read_annotations(path, key, layer) for path, key in zip(files, keys, strict=True)]
    _check_matrices(infos, layer, backed=backed)
    _check_obs_columns(infos, labels_key, source_key)
    genes = _common_genes(infos)
    _check_cell_names(infos, index_unique)
    _prepare_obs(infos, labels_key)
    if backed:
        return _concat_backed(infos, layer, out_path, source_key, index_unique)
    return _concat_in_memory(infos, layer, genes, source_key, index_unique)


# -- checks ---------------------------------------------------------------------------------
def _check_paths(paths) -> list[Path]:
    if isinstance(paths, str | PathLike):
        paths = [paths]
    if isinstance(paths, AnnData) or not isinstance(paths, Iterable):
        raise TypeError(
            f"paths must be a list of h5ad file paths, got {type(paths).__name__} (concatenate "
            "AnnData objects in memory with `anndata.concat(..., join='inner')`)."
        )
    files = []
    for p in paths:
        if not isinstance(p, str | PathLike):
            raise TypeError(f"paths must be a list of h5ad file paths; got a {type(p).__name__}.")
        files.append(Path(os.fspath(p)))
    if not files:
        raise ValueError("No files given: pass a list of .h5ad paths.")
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of the files do not exist: {', '.join(missing)}.")
    resolved = [p.resolve() for p in files]
    repeated = sorted({str(p) for p in resolved if resolved.count(p) > 1})
    if repeated:
        raise ValueError(f"Files given more than once: {', '.join(repeated)}.")
    import h5py

    for p in files:
        if p.is_dir() or not h5py.is_hdf5(p):
            raise ValueError(
                f"{str(p)!r} is not an h5ad (HDF5) file; read_h5ads reads .h5ad files (read "
                "other formats with anndata and write them with `adata.write_h5ad(...)`)."
            )
    return files


def _check_keys(keys, files: list[Path]) -> list[str]:
    if keys is None:
        stems = [p.stem for p in files]
        return stems if len(set(stems)) == len(stems) else [str(p) for p in files]
    if isinstance(keys, str) or len(keys) != len(files):
        raise ValueError(f"keys must name each of the {len(files)} files (one string per file).")
    keys = [str(k) for k in keys]
    if len(set(keys)) != len(keys):
        raise ValueError(f"keys must be unique, got {keys}.")
    return keys


def _check_out(out, files: list[Path], *, backed: bool, overwrite: bool) -> Path | None:
    if out is None:
        return None
    if not backed:
        raise ValueError(
            "out is the file a backed concatenation is written to; with backed=False nothing is "
            "written (save the result with `adata.write_h5ad(path)`)."
        )
    out = Path(os.fspath(out))
    if out.suffix != ".h5ad":
        raise ValueError(f"out must be a path ending in .h5ad, got {str(out)!r}.")
    if not out.parent.exists():
        raise FileNotFoundError(f"The directory of out, {str(out.parent)!r}, does not exist.")
    if out.exists():
        if any(out.resolve() == p.resolve() for p in files):
            raise ValueError(f"out {str(out)!r} is one of the input files; choose another path.")
        if not overwrite:
            raise FileExistsError(f"{str(out)!r} exists; pass `overwrite=True` to replace it.")
    return out


def _read_annotations(path: Path, key: str, layer: str | None) -> _FileInfo:
    """obs, var and the layout of a file's matrices; no expression value is read."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        try:
            obs, var = read_elem(f["obs"]), read_elem(f["var"])
        except Exception as err:  # any failure here means: not a readable AnnData
            raise ValueError(
                f"Could not read obs and var of {str(path)!r} ({type(err).__name__}: {err}); is "
                "it an AnnData h5ad? Files written by an old anndata: read them with "
                "`anndata.read_h5ad` and write them again."
            ) from None
        layers = list(f["layers"].keys()) if "layers" in f else []
        info = _FileInfo(path=path, key=key, obs=obs, var=var, layers=layers, has_x="X" in f)
        elem_path = "X" if layer is None else f"layers/{layer}"
        if elem_path in f:
            elem = f[elem_path]
            encoding = elem.attrs.get("encoding-type")
            if isinstance(elem, h5py.Dataset):
                info.encoding, info.dtype = _DENSE, elem.dtype
            else:
                info.encoding, info.dtype = str(encoding), elem["data"].dtype
    return info


def _check_matrices(infos: list[_FileInfo], layer: str | None, *, backed: bool) -> None:
    """The matrix is in every file and, for the on-disk concatenation, stored alike."""
    lacking = [i for i in infos if i.encoding is None]
    if lacking:
        shown = "; ".join(f"{i.name} (layers: {', '.join(map(repr, i.layers)) or 'none'})" for i in lacking)
        if layer is None:
            raise KeyError(
                f"{len(lacking)} of the files have no X: {shown}. Pass `layer=` naming the layer "
                "that holds the expression."
            )
        raise KeyError(f"Layer {layer!r} is missing from {len(lacking)} of the files: {shown}.")
    where = "X" if layer is None else f"layers[{layer!r}]"
    bad = [i for i in infos if i.encoding not in (_DENSE, _CSR, "csc_matrix")]
    if bad:
        raise TypeError(
            f"{where} of {', '.join(i.name for i in bad)} is not a matrix "
            f"({', '.join(sorted({str(i.encoding) for i in bad}))})."
        )
    if not backed:
        return
    kinds = {i.encoding for i in infos}
    if "csc_matrix" in kinds or len(kinds) > 1:
        shown = ", ".join(f"{i.name}: {_describe(i.encoding)}" for i in infos)
        raise ValueError(
            f"The on-disk concatenation needs {where} stored the same way in every file, CSR or "
            f"dense, but got {shown}. Use `backed=False` (files read in memory), or write the "
            "files again with CSR matrices (`adata.X = scipy.sparse.csr_matrix(adata.X)`)."
        )
    if kinds == {_DENSE}:
        import importlib.util

        if importlib.util.find_spec("dask") is None:
            raise ImportError(
                f"The on-disk concatenation of dense matrices ({where} of these files) uses dask: "
                "`pip install dask`, or use `backed=False`."
            )
    first = infos[0]
    if first.dtype.kind in "biu":
        floats = [i for i in infos[1:] if i.dtype.kind == "f"]
        if floats:
            raise ValueError(
                f"The on-disk concatenation writes the first file's dtype ({first.dtype}, "
                f"{first.name}), which would truncate the float values of "
                f"{', '.join(i.name for i in floats)}. Put a file with float values first, or use "
                "`backed=False`."
            )


def _describe(encoding: str) -> str:
    return {_DENSE: "dense", _CSR: "CSR", "csc_matrix": "CSC"}.get(encoding, encoding)


def _check_obs_columns(infos: list[_FileInfo], labels_key: str | None, source_key: str) -> None:
    if labels_key is not None:
        lacking = [i for i in infos if labels_key not in i.obs.columns]
        if lacking:
            shown = "; ".join(
                f"{i.name} (obs columns: {', '.join(map(repr, i.obs.columns[:10])) or 'none'}"
                f"{', ...' if len(i.obs.columns) > 10 else ''})"
                for i in lacking
            )
            raise KeyError(
                f"labels_key {labels_key!r} is missing from {len(lacking)} of the {len(infos)} "
                f"files: {shown}. Every file needs the label column (name it the same in each; "
                "cells without a label can hold NaN)."
            )
    clash = [i for i in infos if source_key in i.obs.columns]
    if clash:
        raise ValueError(
            f"obs of {', '.join(i.name for i in clash)} already has a column {source_key!r}; pass "
            "another `source_key=` for the column naming each cell's file."
        )


def _common_genes(infos: list[_FileInfo]) -> pd.Index:
    """The genes of every file, in the first file's order; logs what each file loses."""
    for info in infos:
        check_var_names(info.var.index, where=info.name,
                        fix="make them unique (`adata.var_names_make_unique()`) and write the file again")
    genes = infos[0].var.index
    for info in infos[1:]:
        genes = genes[genes.isin(info.var.index)]
    if len(genes) == 0:
        shown = "; ".join(
            f"{i.name}: {len(i.var)} genes ({', '.join(map(str, i.var.index[:3]))}, ...)" for i in infos
        )
        raise ValueError(
            f"The files share no gene name: {shown}. Are some files named by Ensembl IDs and "
            "others by gene symbols? Use the same identifiers in every file (e.g. set var_names "
            "from the column holding them)."
        )
    logger.info("Reading %d files on the %d genes they all have.", len(infos), len(genes))
    for info in infos:
        lost = len(info.var) - len(genes)
        logger.info(
            "  %s: %d cells, %d genes, %d of them (%.0f%%) not in every file and dropped.",
            info.name, len(info.obs), len(info.var), lost, 100 * lost / max(len(info.var), 1),
        )
    dropped = sorted(set().union(*(i.obs.columns for i in infos)) - set.intersection(
        *(set(i.obs.columns) for i in infos)))
    if dropped:
        logger.info("obs columns not in every file, not kept: %s.", ", ".join(map(repr, dropped)))
    return genes


def _check_cell_names(infos: list[_FileInfo], index_unique: str | None) -> None:
    within = [i for i in infos if not i.obs.index.is_unique]
    if within:
        raise ValueError(
            f"Cell names repeat within {', '.join(i.name for i in within)}; make them unique "
            "(`adata.obs_names_make_unique()`) and write the file again."
        )
    if index_unique is not None:
        if not isinstance(index_unique, str):
            raise TypeError(f"index_unique must be a string or None, got {index_unique!r}.")
        names = pd.Index(np.concatenate([
            (i.obs.index.astype(str) + index_unique + i.key).to_numpy() for i in infos
        ]))
        if names.is_unique:
            return
        raise ValueError(
            f"Cell names with the file keys appended ({names[names.duplicated()][0]!r}, ...) "
            "still repeat; choose other `keys=` or another `index_unique=`."
        )
    seen: dict[str, str] = {}
    for info in infos:
        shared = info.obs.index[info.obs.index.isin(list(seen))]
        if len(shared):
            raise ValueError(
                f"{len(shared)} cell names of {info.name} are also in {seen[shared[0]]} (e.g. "
                f"{shared[0]!r}); with index_unique=None cell names must differ between files. "
                "Use `index_unique='-'` to append each file's key."
            )
        seen.update(dict.fromkeys(info.obs.index, info.name))


def _prepare_obs(infos: list[_FileInfo], labels_key: str | None) -> None:
    """Make the kept obs columns concatenate cleanly (and be writable to h5ad).

    `labels_key` becomes a categorical of strings (NaN kept), so that labels of all files
    unify (``1`` and ``"1"`` alike); any other column kept whose values mix types across files
    (numbers in one, text in another) is stored as strings the same way.
    """
    common = [c for c in infos[0].obs.columns if all(c in i.obs.columns for i in infos[1:])]
    for column in common:
        if column != labels_key:
            values = pd.concat([i.obs[column].astype(object) for i in infos], ignore_index=True)
            if pd.api.types.infer_dtype(values, skipna=True) not in ("mixed", "mixed-integer"):
                continue
            logger.info("obs column %r mixes types across files; it is kept as strings.", column)
        for info in infos:
            info.obs[column] = _as_strings(info.obs[column])


def _as_strings(values: pd.Series) -> pd.Categorical:
    known = values.notna().to_numpy()
    out = np.full(len(values), np.nan, dtype=object)
    out[known] = label_strings(values[known]).to_numpy()
    return pd.Categorical(out)


# -- concatenation --------------------------------------------------------------------------
def _concat_in_memory(infos: list[_FileInfo], layer: str | None, genes: pd.Index,
                      source_key: str, index_unique: str | None) -> AnnData:
    import anndata as ad
    import h5py
    from anndata.io import read_elem

    adatas = []
    for info in infos:
        with h5py.File(info.path, "r") as f:
            matrix = read_elem(f["X" if layer is None else f"layers/{layer}"])
        part = AnnData(X=matrix, obs=info.obs, var=info.var)
        adatas.append(part[:, genes].copy() if len(genes) < part.n_vars else part)
        del matrix, part
    return ad.concat(adatas, join="inner", merge="same", label=source_key,
                     keys=[i.key for i in infos], index_unique=index_unique)


def _concat_backed(infos: list[_FileInfo], layer: str | None, out: Path | None,
                   source_key: str, index_unique: str | None) -> AnnData:
    """anndata's on-disk concatenation of stand-in files that link to each file's matrix.

    Each stand-in (a small HDF5 file in a temporary directory, deleted at the end) holds the
    prepared ``obs``, the ``var`` and an HDF5 external link to the file's ``X`` or layer, so
    only that matrix is concatenated (not other layers or ``obsm``), read a block at a time.
    """
    import anndata as ad
    import h5py
    from anndata.experimental import concat_on_disk
    from anndata.io import write_elem

    made_dir = None
    if out is None:
        made_dir = Path(tempfile.mkdtemp(prefix="scattn_"))
        out = made_dir / "concatenated.h5ad"
        logger.info("Writing the concatenated files to %s (delete it when done).", out)
    elem_path = "X" if layer is None else f"layers/{layer}"
    started = False
    try:
        with tempfile.TemporaryDirectory(prefix="scattn_links_") as links:
            stubs = []
            try:
                for n, info in enumerate(infos):
                    stub = Path(links) / f"{n}.h5ad"
                    with h5py.File(stub, "w") as g:
                        g.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
                        write_elem(g, "obs", info.obs)
                        write_elem(g, "var", info.var)
                        for name in ("layers", "obsm", "varm", "obsp", "varp"):
                            write_elem(g, name, {})
                        g["X"] = h5py.ExternalLink(str(info.path.resolve()), elem_path)
                    stubs.append(h5py.File(stub, "r"))
                started = True
                concat_on_disk(
                    stubs, out, join="inner", merge="same", label=source_key,
                    keys=[i.key for i in infos], index_unique=index_unique,
                )
            finally:
                for s in stubs:
                    s.close()
    except BaseException as err:
        # nothing half-written: remove what was written (out was checked free or replaceable)
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
        elif started and out.exists() and "already open" not in str(err):
            out.unlink()
        if isinstance(err, OSError) and "already open" in str(err):
            raise OSError(
                f"{str(out)!r} is open (a backed AnnData reading it?); close it "
                "(`adata.file.close()`) or write to another path."
            ) from err
        raise
    return ad.read_h5ad(out, backed="r")


def open_zarr(path: str | PathLike) -> AnnData:
    """Open an AnnData zarr store with its expression left on disk, as a backed h5ad is.

    ``obs``, ``var``, ``obsm``, ``varm`` and ``uns`` are read into memory; ``X`` and every
    layer stay in the store (sparse ones as anndata's on-disk sparse datasets, dense ones as
    zarr arrays) and are read a block of cells at a time by scattn: ``model.predict(adata)``
    streams the cells :attr:`scattn.settings.chunk_size` at a time. anndata's
    ``read_zarr`` reads everything into memory instead; this is the zarr counterpart of
    ``anndata.read_h5ad(path, backed="r")``.

    Parameters
    ----------
    path
        A zarr store written by anndata (``adata.write_zarr(path)``).

    Returns
    -------
    AnnData whose ``X`` and ``layers`` read from `path`. Results written into it (``predict``)
    stay in memory; the store is not changed (it is opened read-only).

    Examples
    --------
    >>> adata = sa.data.open_zarr("atlas.zarr")
    >>> model.predict(adata)  # streamed; writes adata.obs["cfan_prediction"], ...
    """
    import zarr
    from anndata.io import read_elem, sparse_dataset

    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist.")
    try:
        group = zarr.open(str(path), mode="r")
        encoding = group.attrs.get("encoding-type")
    except Exception as err:  # any failure here means: not a zarr store
        raise ValueError(f"{str(path)!r} is not a zarr store ({type(err).__name__}: {err}).") from None
    if encoding != "anndata" or "obs" not in group or "var" not in group:
        raise ValueError(f"{str(path)!r} is not an AnnData zarr store (write one with "
                         "`adata.write_zarr(path)`).")

    def on_disk(elem):
        kind = elem.attrs.get("encoding-type")
        if kind in ("csr_matrix", "csc_matrix"):
            return sparse_dataset(elem)
        if isinstance(elem, zarr.Array):
            return elem
        raise TypeError(f"{elem.name} of {str(path)!r} is a {kind!r}, not a matrix.")

    parts = {key: read_elem(group[key]) for key in ("obs", "var", "obsm", "varm", "uns") if key in group}
    x = on_disk(group["X"]) if "X" in group else None
    layers = {name: on_disk(group["layers"][name]) for name in group["layers"]} if "layers" in group else {}
    return AnnData(X=x, layers=layers, obs=parts["obs"], var=parts["var"], obsm=parts.get("obsm"),
                   varm=parts.get("varm"), uns=parts.get("uns"))
