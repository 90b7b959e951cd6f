"""CGRAN training speed beside scANVI, and what CGRAN's *default* ``train()`` costs and scores.

Three parts, each on the same data and splits in every run, one CPU thread per process
(``OMP_NUM_THREADS=1``; the script pins torch to it):

``timing``
    Seconds per training epoch (median over the epochs after the first; without early
    stopping neither model scores its validation cells, except CGRAN since
    ``restore_best_weights``, whose epochs then include that forward pass over 10% of the
    cells) of CGRAN at its default minibatch size (and any
    ``--cgran-batch-sizes``) and of scANVI trained with the suite's recipe
    (:func:`benchmarks._peers.fit_scanvi_model`: scVI on 2000 ``seurat_v3`` genes, then
    ``SCANVI.from_scvi_model``), both stages timed separately. The ratio reported is CGRAN's
    epoch over scANVI's epoch. Sets: paul15 (all 2,730 cells, stratified 80/20 split, seed
    0), Kang 2018 control PBMCs (6,548 cells, 14,053 genes; the file has no labels, so the
    labels are 8 k-means clusters of the log-normalised PCA, only to give both models
    classes), and CellBench Drop-seq with 120 training cells (15,127 genes: the small set a
    user reported, where CGRAN's default took minutes and logistic regression seconds).
``defaults``
    The user's path: ``CGRAN.setup_anndata``, ``CGRAN(train)``, ``model.train()`` with no
    arguments, ``predict`` on the held-out cells. Records the set-up time (gene choice and
    SVD), the training time, the epochs run, the epoch of the lowest validation loss, macro F1
    and accuracy; beside it logistic regression (scikit-learn, L2, C=1) on the log-normalised
    training cells over all genes. Sets: pbmc68k_reduced (80/20), paul15 subsampled to 1,000
    cells (stratified, as the suite does; 80/20), CellBench Drop-seq (120 training cells, the
    other 90 tested); seeds 0-2.
``recipes``
    Time to a trained model on the timing sets: CGRAN's default ``train()`` (as in
    ``defaults``) beside scANVI's whole recipe, scVI for scvi-tools' default number of epochs
    (``min(400, 20000 / cells * 400)``) then 20 scANVI epochs, as the benchmark suite runs it;
    training CPU seconds and macro F1 on the held-out cells of the same split.
``variants``
    The ``defaults`` procedure with other ``train()`` settings (``--variants
    'name:lr=1e-3,patience=5,restore=1'``; keys ``lr``, ``batch_size``, ``max_epochs``,
    ``patience``, ``min_delta``, ``restore`` (best weights), ``plateau`` (learning rate x0.1
    after that many epochs without a better validation loss)), to choose defaults.

Wall time depends on what else the machine runs; every row also has the process' CPU time
(``*_cpu_s``) and the load average, and the ratios to scANVI are taken within one run.

Rows are written after every run into the study's one runs file, ``<out>_runs.csv``, each row
with its ``part`` (timing, defaults, variants, recipes) and the code version's ``--label``: a
rerun replaces only the rows of its part, label and sets (variants: its variants) and keeps the
others, so the versions stay side by side and an interrupted run keeps what it measured.
``--summarize`` tabulates them into ``<out>.md`` (every table) and ``<out>.csv`` (default
``train()``).

    OMP_NUM_THREADS=1 python -m benchmarks.studies.cgran_speed --label before   # old code
    OMP_NUM_THREADS=1 python -m benchmarks.studies.cgran_speed --label after --cgran-batch-sizes 128
    OMP_NUM_THREADS=1 python -m benchmarks.studies.cgran_speed --label variants --parts variants \\
        --variants "old:lr=1e-4,patience=10,restore=0" "lr3:lr=1e-3,patience=10,restore=0" \\
        "lr3_p5_best:lr=1e-3,patience=5,restore=1"
    python -m benchmarks.studies.cgran_speed --summarize
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from contextlib import contextmanager
from functools import partial

import numpy as np
import pandas as pd

from .._common import (
    RESULTS,
    data_dir,
    load_tasks,
    markdown_table,
    metrics,
    pin_threads,
    splits,
    upsert_runs,
)

TIMING_SETS = ("paul15", "kang_ctrl", "cellbench_dropseq_120")
DEFAULT_SETS = ("pbmc68k_reduced", "paul15_1000", "cellbench_dropseq_120")


# -- data ----------------------------------------------------------------------------------
def _kang_ctrl():
    """Kang 2018 control PBMCs (counts) with 8 k-means clusters of the PCA as labels."""
    import scanpy as sc
    from sklearn.cluster import KMeans

    from scattn.datasets import read_local

    adata = read_local("kang2018_pbmc_ctrl_unlabeled", data_dir())
    norm = adata.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    sc.pp.highly_variable_genes(norm, n_top_genes=2000)
    pcs = sc.pp.pca(norm[:, norm.var["highly_variable"].to_numpy()].X, n_comps=30, random_state=0)
    clusters = KMeans(8, n_init=4, random_state=0).fit_predict(pcs)
    adata.obs["cell_type"] = pd.Categorical([f"cluster{c}" for c in clusters])
    pin_threads()
    return adata


def _stratified(y, n_train, seed):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train, test = train_test_split(idx, train_size=n_train, stratify=y, random_state=seed)
    return np.sort(train), np.sort(test)


def load_split(name: str, seed: int):
    """``(train, test, labels_key, expression)`` of one set and seed (test labels intact)."""
    from sklearn.model_selection import train_test_split

    from scattn.datasets import read_local

    if name == "kang_ctrl":
        adata, key, expression = _kang_ctrl(), "cell_type", "counts"
        _, tr, te = next(splits(adata.obs[key], seeds=[seed]))
    elif name == "cellbench_dropseq_120":
        adata, key, expression = read_local("cellbench_3cl_dropseq", data_dir()), "cell_type", "counts"
        adata.obs[key] = adata.obs[key].astype(str).astype("category")
        tr, te = _stratified(adata.obs[key].to_numpy(), 120, seed)
        pin_threads()
    else:
        base = name.removesuffix("_1000")
        task = load_tasks([base])[0]
        adata, key, expression = task.adata, task.labels_key, task.expression
        if name.endswith("_1000"):  # the suite's stratified subsample (seed 0 for every split)
            keep, _ = train_test_split(np.arange(adata.n_obs), train_size=1000,
                                       stratify=adata.obs[key].astype(str), random_state=0)
            adata = adata[np.sort(keep)].copy()
        _, tr, te = next(splits(adata.obs[key].astype(str), seeds=[seed]))
    return adata[tr].copy(), adata[te].copy(), key, expression


# -- epoch timing ----------------------------------------------------------------------------
def _epoch_timer():
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        """Wall time of each training epoch (Lightning runs validation inside it)."""

        def __init__(self):
            self.times, self.cpu_times, self._t0, self._c0, self.steps, self.batch_size = [], [], None, None, 0, 0

        def on_train_epoch_start(self, trainer, pl_module):
            self._t0, self._c0 = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.steps += 1
            if isinstance(batch, list | tuple) and batch:  # scANVI: [all cells, labelled cells]
                batch = batch[0]
            x = batch.get("X") if isinstance(batch, dict) else None
            if x is not None:
                self.batch_size = max(self.batch_size, int(x.shape[0]))

        def on_train_epoch_end(self, trainer, pl_module):
            self.times.append(time.perf_counter() - self._t0)
            self.cpu_times.append(time.process_time() - self._c0)

    return EpochTimer()


def _median_epoch(times) -> float:
    times = list(times)
    return float(np.median(times[1:] if len(times) > 1 else times)) if times else np.nan


@contextmanager
def _timed_scvi():
    """Add an epoch timer to every ``SCVI.train`` / ``SCANVI.train`` call inside; yields
    ``{class name: timer}`` (the peer recipe itself is untouched)."""
    import scvi

    timers, originals = {}, {}
    for cls in (scvi.model.SCVI, scvi.model.SCANVI):
        originals[cls] = cls.__dict__.get("train")
        orig = cls.train

        def wrapped(self, *args, _orig=orig, _name=cls.__name__, **kwargs):
            timer = _epoch_timer()
            timers[_name] = timer
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), timer]
            return _orig(self, *args, **kwargs)

        cls.train = wrapped
    try:
        yield timers
    finally:
        for cls, orig in originals.items():
            if orig is None:
                del cls.train
            else:
                cls.train = orig


def _new_cgran(train, key, expression, seed):
    """A CGRAN on a copy of `train` (seeded, quiet), its construction time and an epoch timer."""
    import scattn as sa

    sa.settings.seed = seed
    sa.settings.progress_bar = False
    a = train.copy()
    sa.model.CGRAN.setup_anndata(a, labels_key=key, expression=expression)
    t0 = time.perf_counter()
    model = sa.model.CGRAN(a)
    return model, time.perf_counter() - t0, _epoch_timer()


def time_cgran(train, key, expression, *, batch_size, epochs, seed=0) -> dict:
    model, t_init, timer = _new_cgran(train, key, expression, seed)
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    model.train(max_epochs=epochs, early_stopping=False, callbacks=[timer], **kwargs)
    return dict(method="CGRAN", batch_size=timer.batch_size, setup_s=t_init,
                epoch_s=_median_epoch(timer.times), epoch_cpu_s=_median_epoch(timer.cpu_times),
                steps_per_epoch=timer.steps / max(1, len(timer.times)), epochs=len(timer.times),
                train_s=time.perf_counter() - t0, train_cpu_s=time.process_time() - c0,
                load=(load0 + os.getloadavg()[0]) / 2, epoch_times=";".join(f"{t:.3f}" for t in timer.times))


def time_scanvi(train, key, *, scvi_epochs, scanvi_epochs, seed=0) -> list[dict]:
    from .._peers import fit_scanvi_model

    a = train.copy()
    with _timed_scvi() as timers:
        t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        fit_scanvi_model(a, key, seed, scvi_epochs=scvi_epochs, scanvi_epochs=scanvi_epochs)
        total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
        load = (load0 + os.getloadavg()[0]) / 2
    pin_threads()  # scvi-tools' seeding and scanpy's numba reset the thread count
    rows = []
    for name, stage in (("SCVI", "scANVI (scVI stage)"), ("SCANVI", "scANVI")):
        t = timers[name]
        rows.append(dict(method=stage, batch_size=t.batch_size, setup_s=np.nan, epoch_s=_median_epoch(t.times),
                         epoch_cpu_s=_median_epoch(t.cpu_times), steps_per_epoch=t.steps / max(1, len(t.times)),
                         epochs=len(t.times), train_s=total if name == "SCANVI" else np.nan,
                         train_cpu_s=total_cpu if name == "SCANVI" else np.nan, load=load,
                         epoch_times=";".join(f"{x:.3f}" for x in t.times)))
    return rows


# -- default train() ---------------------------------------------------------------------------
def _lognorm(adata, expression):
    from scattn.data import log_normalize

    return log_normalize(adata.X, expression)


def default_run(name, seed, train_kwargs: dict | None = None, variant: str = "default",
                baseline: bool = True) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    train, test, key, expression = load_split(name, seed)
    y_test = test.obs[key].astype(str).to_numpy()
    model, t_init, timer = _new_cgran(train, key, expression, seed)
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    model.train(callbacks=[timer], **(train_kwargs or {}))
    t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
    load = (load0 + os.getloadavg()[0]) / 2
    t0 = time.perf_counter()
    pred = model.predict(test.copy(), inplace=False).prediction.astype(str).to_numpy()
    t_pred = time.perf_counter() - t0
    hist = model.history
    val = hist["validation_loss"].to_numpy().ravel() if "validation_loss" in hist else np.array([])
    best = float(np.argmin(val)) + 1 if len(val) else np.nan
    rows = [dict(dataset=name, seed=seed, method="CGRAN", variant=variant,
                 validation_loss=";".join(f"{v:.4g}" for v in val), n_train=train.n_obs, n_genes=len(model.var_names_),
                 setup_s=t_init, train_s=t_train, train_cpu_s=c_train, total_s=t_init + t_train, predict_s=t_pred,
                 load=load, batch_size=timer.batch_size, epochs=len(hist["train_loss"]), best_epoch=best,
                 epoch_s=_median_epoch(timer.times), epoch_cpu_s=_median_epoch(timer.cpu_times),
                 steps_per_epoch=timer.steps / max(1, len(timer.times)), **metrics(y_test, pred))]
    if not baseline:
        return rows
    t0, c0 = time.perf_counter(), time.process_time()
    x_tr = _lognorm(train, expression)
    lr = LogisticRegression(max_iter=1000, C=1.0).fit(x_tr, train.obs[key].astype(str).to_numpy())
    t_lr, c_lr = time.perf_counter() - t0, time.process_time() - c0
    pred = lr.predict(_lognorm(test, expression))
    rows.append(dict(dataset=name, seed=seed, method="LogisticRegression", variant="", n_train=train.n_obs,
                     n_genes=train.n_vars, setup_s=np.nan, train_s=t_lr, train_cpu_s=c_lr, total_s=t_lr,
                     predict_s=np.nan,
                     epochs=np.nan, best_epoch=np.nan, epoch_s=np.nan, steps_per_epoch=np.nan,
                     **metrics(y_test, pred)))
    return rows


def recipe_run(name, seed) -> list[dict]:
    """Time to a trained model: CGRAN's default ``train()`` beside scANVI's whole recipe (scVI
    with scvi-tools' default epochs, then 20 scANVI epochs, as the suite runs it), same split."""
    from .._peers import fit_scanvi_model

    rows = [{**default_run(name, seed, baseline=False)[0], "variant": "default train()"}]
    train, test, key, _ = load_split(name, seed)
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    lvae, genes = fit_scanvi_model(train.copy(), key, seed)
    t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
    load = (load0 + os.getloadavg()[0]) / 2
    pin_threads()  # scvi-tools' seeding and scanpy's numba reset the thread count
    t0 = time.perf_counter()
    pred = np.asarray(lvae.predict(test[:, genes].copy()), dtype=str)
    t_pred = time.perf_counter() - t0
    rows.append(dict(dataset=name, seed=seed, method="scANVI", variant="scVI (default epochs) + 20 scANVI epochs",
                     n_train=train.n_obs, n_genes=len(genes), setup_s=np.nan, train_s=t_train,
                     train_cpu_s=c_train, total_s=t_train, predict_s=t_pred, load=load, epochs=lvae.n_epochs_,
                     **metrics(test.obs[key].astype(str).to_numpy(), pred)))
    return rows


# -- summary ------------------------------------------------------------------------------------
NOTES = """\
`python -m benchmarks.studies.cgran_speed` (see its docstring). `before`: the code before the
change (CGRAN's first block through PyTorch's fused attention on per-cell gene tokens, lr 1e-4,
patience 10, last epoch's weights); `after`: the factorised attention and the new defaults
(lr 1e-3, patience 5, best validation epoch's weights). One process, one thread
(`OMP_NUM_THREADS=1`), 2-core AMD EPYC VM. `*_cpu_s` is the process' CPU time, `epoch_s`/`train_s`
wall time; the first `before` run shared the machine with other jobs (load about 6, so wall
times are inflated; CPU times barely: the rerun at load 1 gives the same), hence the timing
rerun of the old code. Ratios to scANVI are taken within one run. In the timing part neither
model validates each epoch (no early stopping), except `after` CGRAN, whose default
`restore_best_weights` scores the 10% validation cells every epoch. Variants: `old` = lr 1e-4,
patience 10, last weights; `lr3` = lr 1e-3, patience 10, last weights; `lr3_p5_best` (the new
default) = lr 1e-3, patience 5, best weights; `_plateau` adds learning rate x0.1 after 2 epochs
without improvement; `lr3e-4_p5_best` = lr 3e-4, patience 5, best weights.

"""


def _part(runs: pd.DataFrame, part: str) -> pd.DataFrame:
    """One part's rows of the runs file, with only the columns that part records."""
    rows = runs[runs["part"] == part].drop(columns="part").reset_index(drop=True)
    for col in ("seed", "n_train", "n_genes", "batch_size", "threads"):  # counts, NaN only in other parts
        if col in rows and len(rows) and rows[col].notna().all():
            rows[col] = rows[col].astype(int)
    return rows


def summarize(out: str) -> pd.DataFrame:
    """The runs of every code version (``label``) in ``<out>_runs.csv``, in the order they were
    first measured, tabulated into ``<out>.md`` (timing, default ``train()``, variants where
    measured) and ``<out>.csv`` (default ``train()``)."""
    every = pd.read_csv(f"{out}_runs.csv")
    timing = _part(every, "timing").rename(columns={"label": "code"})
    scanvi = timing[timing.method == "scANVI"].set_index(["code", "dataset"])
    for col in ("epoch_s", "epoch_cpu_s"):
        ref = scanvi[col]
        timing[col.replace("epoch", "ratio")] = [getattr(r, col) / ref.get((r.code, r.dataset), np.nan)
                                                 for r in timing.itertuples()]
    timing = timing[["code", "dataset", "n_train", "n_genes", "method", "batch_size", "steps_per_epoch",
                     "epoch_cpu_s", "ratio_cpu_s", "epoch_s", "ratio_s", "load"]]
    timing = timing.rename(columns={"ratio_cpu_s": "cpu_ratio_to_scanvi", "ratio_s": "wall_ratio_to_scanvi"})
    runs = _part(every, "defaults").rename(columns={"label": "code"})
    agg = dict(n_seeds=("seed", "nunique"), macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"),
               accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"), epochs=("epochs", "mean"),
               best_epoch=("best_epoch", "mean"), epoch_cpu_s=("epoch_cpu_s", "mean"),
               train_cpu_s=("train_cpu_s", "mean"), train_s=("train_s", "mean"), setup_s=("setup_s", "mean"))
    defaults = runs.groupby(["dataset", "method", "code"], sort=False).agg(**agg).reset_index()
    defaults.to_csv(f"{out}.csv", index=False)
    with open(f"{out}.md", "w") as fh:
        fh.write("# CGRAN training speed, before and after (one CPU thread each)\n\n")
        fh.write(NOTES)
        fh.write("## Seconds per epoch beside scANVI (same split, same run)\n\n")
        fh.write(markdown_table(timing))
        fh.write("\n## Default `train()`: time and accuracy on held-out cells (mean over seeds)\n\n")
        fh.write(markdown_table(defaults))
        v = _part(every, "variants")
        if len(v):
            v = v[v.method == "CGRAN"]
            table = (v.groupby(["dataset", "variant"], sort=False)
                     .agg(n_seeds=("seed", "nunique"), macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"),
                          accuracy=("accuracy", "mean"), epochs=("epochs", "mean"), best_epoch=("best_epoch", "mean"),
                          train_cpu_s=("train_cpu_s", "mean"))
                     .reset_index())
            fh.write("\n## `train()` settings compared on the new code (mean over seeds)\n\n")
            fh.write(markdown_table(table))
    print(timing.to_string(index=False))
    print(defaults.to_string(index=False))
    return defaults


VARIANT_KEYS = {"lr": ("lr", float), "batch_size": ("batch_size", int), "max_epochs": ("max_epochs", int),
                "patience": ("early_stopping_patience", int), "min_delta": ("early_stopping_min_delta", float),
                "restore": ("restore_best_weights", lambda v: bool(int(v))), "plateau": ("plan_kwargs", int)}


def parse_variant(spec: str) -> tuple[str, dict]:
    """``"name:lr=1e-3,patience=5"`` -> ``("name", {"lr": 0.001, "early_stopping_patience": 5})``;
    ``plateau=k``: learning rate x0.1 after k epochs without a better validation loss."""
    name, _, body = spec.partition(":")
    kwargs = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        arg, cast = VARIANT_KEYS[key]
        if key == "plateau":
            kwargs[arg] = {"reduce_lr_on_plateau": True, "lr_factor": 0.1, "lr_patience": cast(value),
                           "lr_scheduler_metric": "validation_loss", "lr_threshold": 0.0}
        else:
            kwargs[arg] = cast(value)
    return name, kwargs


def _append(rows: list[dict], path: str, keys: tuple[str, ...]) -> None:
    """`rows` into the one runs file at `path`, in place of earlier rows of the same `keys`
    (the part and the code version's ``label`` among them): every version's runs stay side by side."""
    upsert_runs(path, pd.DataFrame(rows), keys)


def _run_all(jobs, env: dict, path: str, keys: tuple[str, ...], file_keys: tuple[str, ...]) -> None:
    """Run each job (a callable returning rows), print `keys` of each row, write `path` after
    every job (rows of the same `file_keys` replaced) so that an interrupted run keeps what it
    measured."""
    rows = []
    for job in jobs:
        for r in job():
            rows.append({**r, **env})
            print({k: r[k] for k in keys}, flush=True)
        _append(rows, path, file_keys)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="run", help="code version recorded in every row")
    parser.add_argument("--parts", nargs="*", default=["timing", "defaults"],
                        choices=["timing", "defaults", "variants", "recipes"])
    parser.add_argument("--variants", nargs="*", default=[],
                        help="train() settings compared on the default sets, e.g. 'fast:lr=1e-3,patience=5' "
                             f"(keys: {', '.join(VARIANT_KEYS)})")
    parser.add_argument("--timing-sets", nargs="*", default=list(TIMING_SETS))
    parser.add_argument("--default-sets", nargs="*", default=list(DEFAULT_SETS))
    parser.add_argument("--recipe-sets", nargs="*", default=list(TIMING_SETS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--cgran-epochs", type=int, default=3)
    parser.add_argument("--cgran-batch-sizes", nargs="*", type=int, default=[],
                        help="extra CGRAN minibatch sizes timed beside the default")
    parser.add_argument("--scvi-epochs", type=int, default=5)
    parser.add_argument("--scanvi-epochs", type=int, default=5)
    parser.add_argument("--summarize", action="store_true",
                        help="only tabulate the runs files of --out (every --label side by side)")
    parser.add_argument("--out", default=str(RESULTS / "cgran_speed"))
    args = parser.parse_args(argv)
    if args.summarize:
        return summarize(args.out)
    import torch

    pin_threads()
    env = dict(label=args.label, threads=torch.get_num_threads(), omp=os.environ.get("OMP_NUM_THREADS"),
               torch=torch.__version__, cpu=platform.processor() or platform.machine())
    print(env, flush=True)
    path = f"{args.out}_runs.csv"
    if "timing" in args.parts:
        rows = []
        for name in args.timing_sets:
            train, _, key, expression = load_split(name, 0)
            info = dict(part="timing", dataset=name, n_train=train.n_obs, n_genes=train.n_vars, **env)
            for bs in [None, *args.cgran_batch_sizes]:
                rows.append({**info, **time_cgran(train, key, expression, batch_size=bs, epochs=args.cgran_epochs)})
                print(rows[-1], flush=True)
                _append(rows, path, ("part", "label", "dataset"))
            for r in time_scanvi(train, key, scvi_epochs=args.scvi_epochs, scanvi_epochs=args.scanvi_epochs):
                rows.append({**info, **r})
                print(rows[-1], flush=True)
            _append(rows, path, ("part", "label", "dataset"))
    common = ("dataset", "seed", "method", "macro_f1")
    grid = [(name, seed) for name in args.default_sets for seed in args.seeds]
    if "defaults" in args.parts:
        _run_all([partial(default_run, name, seed) for name, seed in grid], {"part": "defaults", **env},
                 path, (*common, "accuracy", "total_s", "epochs"), ("part", "label", "dataset", "seed"))
    if "variants" in args.parts:
        specs = [parse_variant(spec) for spec in args.variants]
        jobs = [partial(default_run, name, seed, kwargs, variant=variant, baseline=i == 0)
                for name, seed in grid for i, (variant, kwargs) in enumerate(specs)]
        _run_all(jobs, {"part": "variants", **env}, path,
                 (*common, "variant", "accuracy", "train_cpu_s", "epochs", "best_epoch"),
                 ("part", "dataset", "seed", "variant"))
    if "recipes" in args.parts:
        jobs = [partial(recipe_run, name, seed) for name in args.recipe_sets for seed in args.seeds]
        _run_all(jobs, {"part": "recipes", **env}, path, (*common, "train_cpu_s", "epochs"),
                 ("part", "dataset", "seed", "variant"))

if __name__ == "__main__":
    main()
