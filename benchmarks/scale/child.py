"""One measurement of the scale family, meant to run in a process of its own.

    python -m benchmarks.scale.child --method CFAN --step predict --data benchmarks/output/scale/kang_100k.h5ad \
        [--format h5ad|zarr] [--out-dir benchmarks/output/scale] [--json row.json]

Steps
    ``predict``: open the file, then the method's prediction end to end; for scattn models
    ``model.predict(adata)``, which writes ``obs``/``obsm``/``layers``/``uns`` including the
    sparse top-k attribution layer (attribution included). ``proba``: scattn's
    ``model.predict_proba(adata)``, the same inference without attribution, markers or writing
    (``predict`` has no switch to leave the attribution out; ``predict - proba`` is its cost).
    ``train-disk``: CFAN or SIMS set up on the backed file itself (``setup_anndata``, model
    construction, one epoch ``train(max_epochs=1, train_size=1.0)`` through scvi-tools' data
    loaders), labels ``cell_type`` = each cell's source cell's marker label (every cell labelled).
How each method reads the file
    scattn models and scANVI take the AnnData as opened (``read_h5ad(backed="r")`` or the zarr
    store with ``X`` as an anndata ``sparse_dataset``, :func:`~benchmarks.scale.make_data.open_data`).
    scANVI needs its labels column: ``obs["cell_type"] = "Unknown"`` (its unlabelled category) is
    added in memory. CellTypist cannot: ``celltypist.annotate`` wants log1p(CP10k) values in
    memory (it checks ``X`` for them and scales ``X`` as a dense matrix), so the file is read a
    block of 50,000 rows at a time, normalised (log1p of counts per 10k over the 2,000 genes, as
    it was trained) into one in-memory CSR matrix, and annotated in one call
    (:func:`benchmarks._peers.celltypist_labels`, no majority voting); that loading is timed.
Measured (written as one JSON row)
    ``model_load_s`` (not in the totals), ``open_s`` (opening / loading the data), ``run_s`` (the
    step), ``total_s`` = open + run, ``cells_per_s`` = cells / total_s, ``cpu_s``: user + system
    CPU seconds of the process over open + run (with one thread about ``total_s`` on an idle
    machine; a larger ``total_s`` means it waited for a core), ``load_1min``: the machine's load
    average when the measurement started; ``peak_gib``: the
    process' peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end,
    imports and model included), ``start_gib``: its resident memory just before the data were
    opened (imports, model), ``step_peak_gib``: the peak above that (the kernel's high-water mark,
    :func:`benchmarks._measure.measure`); ``agreement``: fraction of cells whose prediction
    equals their source cell's marker label (a sanity check, not an accuracy: the training cells
    are among the sources).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from .make_data import OUTPUT, SOURCE, open_data
from .train import LABELS, SCATTN, model_path

STEPS = ("predict", "proba", "train-disk")
TRAIN_DISK = ("CFAN", "SIMS")
CT_BLOCK = 50_000  # rows read at once when CellTypist's input is loaded into memory


def applies(method: str, step: str, fmt: str) -> bool:
    """Whether `method` has `step` on `fmt` (zarr: scattn models' predict only)."""
    if fmt == "zarr" and (method not in SCATTN or step != "predict"):
        return False
    if step == "proba":
        return method in SCATTN
    if step == "train-disk":
        return method in TRAIN_DISK and fmt == "h5ad"
    return True


def estimate_gib(method: str, step: str, n_cells: int, n_genes: int) -> float:
    """Rough peak memory where it is known to grow with cells x genes: CellTypist scales its
    input as a dense float64 matrix, and holds two such matrices at once."""
    if method == "CellTypist" and step == "predict":
        return 2 * n_cells * n_genes * 8 / 2**30
    return 0.0


def _gib(kib: float) -> float:
    return kib / 2**20  # ru_maxrss is KiB on Linux


def _peak_gib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else _gib(peak)


def _source_labels(out_dir: Path, adata) -> np.ndarray:
    """Each cell's source cell's marker label (``cell_type`` of the source file)."""
    import anndata as ad
    import pandas as pd

    source = ad.read_h5ad(Path(out_dir) / SOURCE, backed="r")
    obs = source.obs
    source.file.close()
    cells = adata.obs["source_cell"]
    pos = pd.Index(obs.index).get_indexer(cells.cat.categories)
    if (pos < 0).any():
        raise ValueError("source cells missing from the source file: was the data made from another one?")
    labels = obs[LABELS].astype(str).to_numpy()
    return labels[pos[cells.cat.codes.to_numpy()]]


def _agreement(pred, truth) -> float:
    return float(np.mean(np.asarray(pred, dtype=str) == np.asarray(truth, dtype=str)))


def _close(adata) -> None:
    if getattr(adata, "isbacked", False):
        adata.file.close()


# -- the methods ----------------------------------------------------------------------------------
def _loaded(row: dict, load):
    """`load()`, its seconds in ``row["model_load_s"]``."""
    t0 = time.perf_counter()
    model = load()
    row["model_load_s"] = time.perf_counter() - t0
    return model


def _prediction(open_fn, predict_fn, still_backed: bool | None = None):
    """``(run, state)``: `run()` opens the data (`open_fn()`, timed as ``open_s``), predicts
    (`predict_fn(data, state)`, timed as ``run_s``) and returns ``(data, prediction)``;
    ``still_backed``: whether the data are still on disk afterwards (unless given)."""
    state = {}

    def run():
        t = time.perf_counter()
        data = open_fn()
        state["open_s"] = time.perf_counter() - t
        t = time.perf_counter()
        pred = predict_fn(data, state)
        state["run_s"] = time.perf_counter() - t
        state["still_backed"] = bool(getattr(data, "isbacked", False)) if still_backed is None else still_backed
        return data, pred

    return run, state


def _scattn(method, step, path, fmt, out_dir, row):
    import scattn as sa

    sa.settings.progress_bar = False
    model = _loaded(row, lambda: getattr(sa.model, method).load(str(model_path(out_dir, method))))
    row["reads"] = "backed h5ad (read_h5ad backed='r')" if fmt == "h5ad" else "zarr (X as anndata sparse_dataset)"

    def predict(adata, state):
        if step == "predict":
            model.predict(adata)
            state["attention_nnz"] = int(adata.layers[f"{model._key}_attention"].nnz)
            return adata.obs[f"{model._key}_prediction"]
        proba = model.predict_proba(adata)
        return proba.columns.to_numpy()[proba.to_numpy().argmax(1)]

    return _prediction(lambda: open_data(path, fmt), predict)


def _scanvi(step, path, fmt, out_dir, row):
    import scvi

    model = _loaded(row, lambda: scvi.model.SCANVI.load(str(model_path(out_dir, "scANVI"))))
    row["reads"] = "backed h5ad (read_h5ad backed='r'); obs['cell_type']='Unknown' added in memory"

    def open_fn():
        adata = open_data(path, fmt)
        adata.obs[LABELS] = "Unknown"  # scANVI's query needs its labels column (unlabelled category)
        return adata

    return _prediction(open_fn, lambda adata, state: model.predict(adata))


def _celltypist(step, path, fmt, out_dir, row):
    import anndata as ad
    from celltypist.models import Model
    from scipy import sparse

    from .._peers import celltypist_labels

    model = _loaded(row, lambda: Model.load(str(model_path(out_dir, "CellTypist"))))
    row["reads"] = ("in memory: backed h5ad read in blocks, log1p(CP10k) into one CSR matrix, "
                    "then celltypist.annotate (needs normalised values in memory)")
    lognorm = {}

    def open_fn():
        adata = ad.read_h5ad(path, backed="r")
        blocks = []
        for start in range(0, adata.n_obs, CT_BLOCK):
            block = sparse.csr_matrix(adata.X[start:start + CT_BLOCK], dtype=np.float32)
            scale = 1e4 / np.maximum(np.asarray(block.sum(axis=1)).ravel(), 1e-12)
            block = sparse.csr_matrix(sparse.diags(scale.astype(np.float32)) @ block)
            block.data = np.log1p(block.data)
            blocks.append(block)
        lognorm["x"] = sparse.vstack(blocks, format="csr")
        del blocks
        lognorm["names"], lognorm["genes"] = adata.obs_names.copy(), adata.var_names.copy()
        return adata

    def predict(adata, state):
        return celltypist_labels(model, lognorm.pop("x"), lognorm["names"], lognorm["genes"])

    # the prediction reads the normalised copy in memory, not the file
    return _prediction(open_fn, predict, still_backed=False)


def _train_disk(method, path, out_dir, row, *, batch_size=None):
    import anndata as ad

    import scattn as sa

    sa.settings.progress_bar = False
    sa.settings.seed = 0
    row["model_load_s"] = 0.0
    row["reads"] = "backed h5ad (read_h5ad backed='r'), scvi-tools data loaders"
    state = {}

    def run():
        t = time.perf_counter()
        adata = ad.read_h5ad(path, backed="r")
        adata.obs[LABELS] = _source_labels(out_dir, adata)  # every cell: its source's label
        state["open_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cls = getattr(sa.model, method)
        cls.setup_anndata(adata, labels_key=LABELS)
        state["setup_s"] = time.perf_counter() - t
        t1 = time.perf_counter()
        model = cls(adata)
        state["init_s"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        kwargs = {"batch_size": batch_size} if batch_size else {}
        model.train(max_epochs=1, train_size=1.0, early_stopping=False, **kwargs)
        state["train_s"] = time.perf_counter() - t1
        state["run_s"] = time.perf_counter() - t
        state["epochs"] = len(model.history["train_loss"])
        state["still_backed"] = bool(adata.isbacked)
        return adata, None

    return run, state


def measure_one(method: str, step: str, path, fmt: str = "h5ad", out_dir=OUTPUT) -> dict:
    """Run one step of one method on one file; the row of results (see the module's docstring)."""
    from .._measure import measure

    uses_torch = method != "CellTypist"  # CellTypist's process never imports torch
    if uses_torch:
        from .._common import pin_threads

        pin_threads()
    path, out_dir = Path(path), Path(out_dir)
    row = {"method": method, "step": step, "format": fmt, "data": str(path), "status": "ok", "note": ""}
    if hasattr(os, "getloadavg"):  # other work on the machine when the measurement started
        row["load_1min"] = os.getloadavg()[0]
    if step == "train-disk":
        run, state = _train_disk(method, path, out_dir, row)
    elif method in SCATTN:
        run, state = _scattn(method, step, path, fmt, out_dir, row)
    elif method == "scANVI":
        run, state = _scanvi(step, path, fmt, out_dir, row)
    elif method == "CellTypist":
        run, state = _celltypist(step, path, fmt, out_dir, row)
    else:
        raise ValueError(f"unknown method {method!r}")
    if uses_torch:
        pin_threads()
    peak_before = _peak_gib()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    measured = measure(run)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    adata, pred = measured.value
    row.update(state)
    row["n_cells"] = int(adata.n_obs)
    row["n_genes"] = int(adata.n_vars)
    row["total_s"] = row["open_s"] + row["run_s"]
    row["cells_per_s"] = row["n_cells"] / row["total_s"]
    row["cpu_s"] = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    # the kernel's peak counter was reset by `measure`: the whole process' peak is the larger one
    row["peak_gib"] = max(peak_before, _peak_gib())
    row["start_gib"] = measured.start_mb / 2**10
    row["step_peak_gib"] = measured.peak_mb / 2**10
    if uses_torch:
        import torch

        row["threads"] = torch.get_num_threads()
    else:  # numpy/BLAS threads, from the environment the runner sets
        row["threads"] = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    row["pid"] = os.getpid()
    if pred is not None:
        row["agreement"] = _agreement(pred, _source_labels(out_dir, adata))
    _close(adata)
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True)
    parser.add_argument("--step", default="predict", choices=STEPS)
    parser.add_argument("--data", required=True)
    parser.add_argument("--format", default="h5ad", choices=("h5ad", "zarr"))
    parser.add_argument("--out-dir", default=str(OUTPUT), help="where the source file and models are")
    parser.add_argument("--json", default=None, help="write the row here (default: print it)")
    args = parser.parse_args(argv)
    row = measure_one(args.method, args.step, args.data, args.format, args.out_dir)
    text = json.dumps(row, default=float)
    if args.json:
        Path(args.json).write_text(text)
    print(text, flush=True)
    return row


if __name__ == "__main__":
    main()
