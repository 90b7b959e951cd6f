"""The scale family's data: Kang 2018 PBMCs resampled to 10k, 100k and 1M cells, written chunk by chunk.

    python -m benchmarks.scale.make_data --n-cells 1000000 --out benchmarks/output/scale/kang_1m.h5ad [--zarr]
    python -m benchmarks.scale.make_data --n-cells 10000 100000 1000000   # kang_10k.h5ad ... in --out-dir

No real dataset of a million cells is available offline, so the big files are **resampled
real cells** (say so wherever their numbers are shown):

Source (built once, cached as ``<out-dir>/kang_source.h5ad``)
    Every cell of ``kang2018_pbmc_ctrl_unlabeled.h5ad`` and ``kang2018_pbmc_stim_unlabeled.h5ad``
    (6,548 control + 7,451 IFN-beta stimulated PBMCs, raw counts; read by
    :func:`benchmarks.studies.scgpt.load_kang`, ``obs["condition"]`` control/stimulated, cell
    names = barcode + ``-control``/``-stimulated``). Genes: the 2,000 highly variable genes of
    both conditions together, chosen once here (scanpy ``seurat_v3`` on counts with the condition
    as batch, after dropping genes seen in < 3 cells: :func:`benchmarks._integration._hvg`, the
    selection the scGPT study uses for Kang). Each source cell also gets a label for the training
    set (``obs["cell_type"]``: the PBMC type of ``benchmarks/markers_pbmc.csv`` whose markers
    score highest, :func:`benchmarks.studies.scgpt.marker_scores`, computed on all genes before
    the HVG choice; '/' in the type names written as a space). Source cells with no count on the
    2,000 genes are left out of the pool.
Resampled files (``kang_10k.h5ad``, ``kang_100k.h5ad``, ``kang_1m.h5ad``)
    n cells drawn uniformly **with replacement** from the source pool, then **binomially
    thinned**: each count c of a drawn cell becomes Binomial(c, p), p drawn per cell from
    U(0.7, 1.0), so that copies of one source cell differ in their counts and depth (sparsity
    pattern a subset of the source cell's; counts stay integers); a cell thinned to zero counts
    keeps its source counts (no empty cells: the models refuse them). Raw counts, CSR, float32,
    cells x the 2,000 source genes. ``obs``: ``condition`` (control/stimulated, the source's)
    and ``source_cell`` (the source cell's name, i.e. its barcode and condition); **no cell
    labels** (the benchmark maps ``source_cell`` to the source's label where it needs one).
    ``uns["scale_data"]``: how the file was made. Seeded: chunk i draws from
    ``numpy.random.default_rng([seed, i])``.
Writing
    Chunk by chunk (``--chunk-size``, default 50,000 cells), never the whole matrix in memory:
    the first chunk is written with :func:`anndata.io.write_elem`, the next ones appended through
    :func:`anndata.io.sparse_dataset` (``.append``); ``obs``/``var``/empty slots with
    ``write_elem`` at the end. The result is a plain h5ad: ``anndata.read_h5ad(path,
    backed="r")`` opens it. HDF5 datasets of 2^18 values per chunk, uncompressed (so that reading
    is not bound by decompression on one thread). ``--zarr`` also writes ``<name>.zarr`` in the
    same pass, the same way (a zarr v3 group, anndata's default compression): ``anndata.read_zarr``
    reads it in memory, and ``anndata.io.sparse_dataset(zarr.open_group(path)["X"])`` gives a
    backed matrix an ``AnnData`` can hold (:func:`open_zarr`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .._common import ROOT

OUTPUT = ROOT / "output" / "scale"
N_HVG = 2000
CHUNK_SIZE = 50_000
H5_CHUNK = 2**18  # values per HDF5/zarr chunk of X's data and indices
THIN = (0.7, 1.0)  # per-cell binomial thinning probability, uniform in this range
SOURCE = "kang_source.h5ad"


def size_label(n: int) -> str:
    """10000 -> '10k', 1000000 -> '1m', 2500 -> '2500'."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def data_path(out_dir: Path, n: int, fmt: str = "h5ad") -> Path:
    return Path(out_dir) / f"kang_{size_label(n)}.{fmt}"


# -- source: all Kang cells, 2,000 HVGs, marker labels ------------------------------------------
def build_source(out_dir: Path, *, n_per_condition: int | None = None, seed: int = 0,
                 overwrite: bool = False) -> Path:
    """Kang 2018 ctrl+stim counts on their 2,000 HVGs with marker labels, cached in `out_dir`.

    `n_per_condition`: cells drawn per condition (``--quick``; `None`: every cell).
    """
    from scipy import sparse

    from .._integration import _hvg
    from ..studies.scgpt import load_kang, marker_scores

    out_dir = Path(out_dir)
    path = out_dir / SOURCE
    wanted = "all" if n_per_condition is None else int(n_per_condition)
    if path.exists() and not overwrite:
        made = source_info(path)
        if made.get("cells_per_condition") == wanted and made.get("seed") == seed:
            return path
        print(f"{path} was made with other settings ({made}): made again", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    kang = load_kang(n_per_condition, seed)
    # '/' in class names would end up in h5 keys of the models' results: written with spaces
    kang.obs["cell_type"] = marker_scores(kang).idxmax(axis=1).str.replace("/", " ").to_numpy()
    kang.obs["source_cell"] = kang.obs_names.astype(str)
    kang = _hvg(kang, "condition", N_HVG)
    x = sparse.csr_matrix(kang.X, dtype=np.float32)
    x.eliminate_zeros()
    empty = np.diff(x.indptr) == 0
    kang = kang[~empty].copy()
    kang.X = sparse.csr_matrix(kang.X, dtype=np.float32)
    kang.obs = kang.obs[["condition", "source_cell", "cell_type"]]
    kang.obs["cell_type"] = kang.obs["cell_type"].astype("category")
    kang.var = kang.var[[]]
    kang.uns["scale_source"] = {
        "files": "kang2018_pbmc_ctrl_unlabeled.h5ad + kang2018_pbmc_stim_unlabeled.h5ad",
        "cells_per_condition": wanted,
        "genes": f"{N_HVG} HVGs, seurat_v3 on counts, batch_key=condition (benchmarks._integration._hvg)",
        "cell_type": "argmax of marker scores (benchmarks.studies.scgpt.marker_scores, markers_pbmc.csv)",
        "dropped_empty_cells": int(empty.sum()),
        "seed": seed,
        "built": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    kang.write_h5ad(path)
    print(f"source: {kang.n_obs} Kang cells x {kang.n_vars} HVGs ({int(empty.sum())} without counts on "
          f"them dropped), {time.perf_counter() - t0:.1f} s -> {path}", flush=True)
    return path


def source_info(path: Path) -> dict:
    """``uns["scale_source"]`` of a source file (how and when it was made), without reading X."""
    import anndata as ad
    import h5py

    with h5py.File(path, "r") as f:
        return ad.io.read_elem(f["uns"]).get("scale_source", {}) if "uns" in f else {}


def _made_from(path: Path) -> str | None:
    """When the source of a resampled file was built (``uns["scale_data"]["source_built"]``)."""
    import anndata as ad
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return str(ad.io.read_elem(f["uns"])["scale_data"]["source_built"])
    except (OSError, KeyError):
        return None


# -- resampling ---------------------------------------------------------------------------------
def resample_chunk(x_src, n: int, rng: np.random.Generator):
    """`n` rows drawn with replacement from CSR `x_src`, binomially thinned; (csr, source rows)."""
    from scipy import sparse

    src = rng.integers(0, x_src.shape[0], size=n)
    p = rng.uniform(*THIN, size=n)
    drawn = x_src[src]  # CSR row gather
    nnz = np.diff(drawn.indptr)
    counts = np.rint(drawn.data).astype(np.int64)
    thinned = rng.binomial(counts, np.repeat(p, nnz)).astype(np.float32)
    # a cell thinned to nothing keeps its source counts (empty cells are refused by the models)
    row_sums = np.bincount(np.repeat(np.arange(n), nnz), weights=thinned, minlength=n)
    empty = np.repeat(row_sums <= 0, nnz)
    thinned[empty] = drawn.data[empty]
    out = sparse.csr_matrix((thinned, drawn.indices.copy(), drawn.indptr.copy()), shape=drawn.shape)
    out.eliminate_zeros()
    out.sort_indices()
    return out, src


class _Writer:
    """One output store (h5ad or zarr) filled chunk by chunk through anndata's own on-disk API."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = Path(path), fmt
        if fmt == "h5ad":
            import h5py

            self.store = h5py.File(self.path, "w")
            self.kwargs = {"chunks": (H5_CHUNK,)}
        else:
            import zarr

            self.store = zarr.open_group(str(self.path), mode="w")
            self.kwargs = {"chunks": (H5_CHUNK,)}
        self.matrix = None

    def append(self, chunk) -> None:
        import anndata as ad

        # no zarr v3 shards: appending would rewrite whole shards
        with ad.settings.override(auto_shard_zarr_v3=False):
            if self.matrix is None:
                ad.io.write_elem(self.store, "X", chunk, dataset_kwargs=self.kwargs)
                self.matrix = ad.io.sparse_dataset(self.store["X"])
            else:
                self.matrix.append(chunk)

    def finish(self, obs: pd.DataFrame, var: pd.DataFrame, uns: dict) -> None:
        import anndata as ad

        with ad.settings.override(auto_shard_zarr_v3=False):
            ad.io.write_elem(self.store, "obs", obs)
            ad.io.write_elem(self.store, "var", var)
            for name in ("layers", "obsm", "varm", "obsp", "varp"):
                ad.io.write_elem(self.store, name, {})
            ad.io.write_elem(self.store, "uns", uns)
        self.store.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        if hasattr(self.store, "close"):
            self.store.close()


def make_file(source_path: Path, n_cells: int, out: Path, *, zarr: bool = False, seed: int = 0,
              chunk_size: int = CHUNK_SIZE, overwrite: bool = False) -> dict:
    """Write `n_cells` resampled cells to `out` (and ``out.with_suffix('.zarr')``); returns info."""
    import anndata as ad

    out = Path(out)
    targets = [(out, "h5ad")] + ([(out.with_suffix(".zarr"), "zarr")] if zarr else [])
    built = str(source_info(source_path).get("built"))
    if all(p.exists() for p, _ in targets) and not overwrite and _made_from(out) == built:
        print(f"exists: {', '.join(str(p) for p, _ in targets)}", flush=True)
        return {"path": str(out), "skipped": True}
    out.parent.mkdir(parents=True, exist_ok=True)
    source = ad.read_h5ad(source_path)
    x_src = source.X.tocsr()
    t0 = time.perf_counter()
    tmp = [(p.with_name(p.name + ".partial"), fmt) for p, fmt in targets]
    for p, _ in tmp:
        _remove(p)
    writers = [_Writer(p, fmt) for p, fmt in tmp]
    src_rows, nnz = [], 0
    try:
        for i, start in enumerate(range(0, n_cells, chunk_size)):
            n = min(chunk_size, n_cells - start)
            chunk, src = resample_chunk(x_src, n, np.random.default_rng([seed, i]))
            for w in writers:
                w.append(chunk)
            src_rows.append(src.astype(np.int32))
            nnz += chunk.nnz
            print(f"  {start + n:>9,} / {n_cells:,} cells ({time.perf_counter() - t0:.0f} s)", flush=True)
        src = np.concatenate(src_rows)
        width = len(str(n_cells - 1))
        obs = pd.DataFrame({
            "condition": pd.Categorical.from_codes(source.obs["condition"].cat.codes.to_numpy()[src],
                                                   source.obs["condition"].cat.categories),
            "source_cell": pd.Categorical.from_codes(src, source.obs_names.astype(str)),
        }, index=pd.Index([f"cell{i:0{width}d}" for i in range(n_cells)]))
        uns = {"scale_data": {
            "source": "Kang 2018 PBMCs (ctrl + IFN-beta stim), resampled: see benchmarks/scale/make_data.py",
            "n_source_cells": int(source.n_obs),
            "genes": str(source.uns["scale_source"]["genes"]),
            "sampling": "uniform with replacement",
            "thinning": f"each count c -> Binomial(c, p), p ~ U{THIN} per cell; a cell thinned to 0 keeps its counts",
            "seed": seed, "chunk_size": chunk_size, "source_built": built,
        }}
        for w in writers:
            w.finish(obs, source.var[[]], uns)
    except BaseException:
        for w in writers:
            if hasattr(w.store, "close"):
                w.store.close()
        for p, _ in tmp:
            _remove(p)
        raise
    for (p_tmp, _), (p, _) in zip(tmp, targets, strict=True):
        _remove(p)
        p_tmp.rename(p)
    seconds = time.perf_counter() - t0
    size = sum(_disk_size(p) for p, _ in targets)
    info = {"path": str(out), "n_cells": n_cells, "n_genes": int(source.n_vars), "nnz": int(nnz),
            "nnz_per_cell": nnz / n_cells, "seconds": seconds, "zarr": zarr,
            "disk_gib": size / 2**30}
    print(f"wrote {', '.join(str(p) for p, _ in targets)}: {n_cells:,} x {source.n_vars} "
          f"({nnz / n_cells:.0f} counts per cell stored), {seconds:.1f} s, {size / 2**30:.2f} GiB", flush=True)
    return info


def _remove(path: Path) -> None:
    import shutil

    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _disk_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def open_zarr(path):
    """A zarr store written by :func:`make_file` as an AnnData whose ``X`` stays on disk
    (:func:`anndata.io.sparse_dataset`; ``obs``/``var`` in memory)."""
    import anndata as ad
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return ad.AnnData(X=ad.io.sparse_dataset(group["X"]), obs=ad.io.read_elem(group["obs"]),
                      var=ad.io.read_elem(group["var"]))


def open_data(path, fmt: str):
    """The benchmark's way of opening a file: ``read_h5ad(backed="r")`` or :func:`open_zarr`."""
    import anndata as ad

    return ad.read_h5ad(path, backed="r") if fmt == "h5ad" else open_zarr(path)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--out", default=None, help="output file (one --n-cells only); default "
                        "<out-dir>/kang_<size>.h5ad")
    parser.add_argument("--out-dir", default=str(OUTPUT), help="where the source and the files go")
    parser.add_argument("--zarr", action="store_true", help="also write <name>.zarr")
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source-cells", type=int, default=None,
                        help="cells per condition in the source (default: all; --quick uses fewer)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out and len(args.n_cells) != 1:
        parser.error("--out names one file: give one --n-cells")
    out_dir = Path(args.out_dir)
    source = build_source(out_dir, n_per_condition=args.source_cells, seed=args.seed)
    infos = []
    for n in args.n_cells:
        out = Path(args.out) if args.out else data_path(out_dir, n)
        infos.append(make_file(source, n, out, zarr=args.zarr, seed=args.seed, chunk_size=args.chunk_size,
                               overwrite=args.overwrite))
    log = out_dir / "make_data.json"
    previous = json.loads(log.read_text()) if log.exists() else {}
    previous.update({i["path"]: i for i in infos if not i.get("skipped")})
    log.write_text(json.dumps(previous, indent=1))
    return infos


if __name__ == "__main__":
    main()
