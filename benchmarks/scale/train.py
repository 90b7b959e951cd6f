"""The scale family's models: every method trained once on the same small labelled Kang set, saved.

    python -m benchmarks.scale.train [--out-dir benchmarks/output/scale] [--n-train 4000]

Training set
    ``--n-train`` (4,000) cells of the source file (:mod:`benchmarks.scale.make_data`: every Kang
    2018 cell, the 2,000 HVGs, raw counts), a stratified random subset by condition and marker
    label (:func:`benchmarks.studies.sims_pretraining.labelled_subset`, seeded), labels =
    ``obs["cell_type"]`` (argmax of marker scores, :func:`benchmarks.studies.scgpt.marker_scores`);
    classes with fewer than ``--min-cells`` (10) cells in the subset are left out. The same cells,
    genes and labels for every method.
Methods (saved under ``<out-dir>/models/<method>``; what was used goes to ``train_info.json``)
    CFAN, SIMS, CGRAN (scattn): ``setup_anndata(labels_key="cell_type")`` on the counts, each
    model's default architecture (CFAN, CGRAN: their 1,000 most variable of the 2,000 genes; SIMS
    all 2,000), ``train()`` with the suite's default epoch caps (:data:`benchmarks._budgets.BUDGETS`:
    CFAN 30, SIMS 30, CGRAN 8 at lr 1e-3; early stopping on), ``model.save(save_anndata=True)``.
    scANVI: :func:`benchmarks._peers.fit_scanvi_model` (scVI 2 layers, 30 latent, NB, then
    ``SCANVI.from_scvi_model``; the suite's cap of 70 scVI epochs and 20 scANVI epochs), on all
    2,000 genes (the recipe's own ``seurat_v3`` choice is skipped at 2,000 genes); ``.save``.
    CellTypist: :func:`benchmarks._peers.fit_celltypist_model` (``celltypist.train``, logistic
    regression) on log1p(counts per 10k over the 2,000 genes); ``model.write``.
It is a speed benchmark: these budgets are recorded, not tuned.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .make_data import OUTPUT, SOURCE, source_info

SCATTN = ("CFAN", "SIMS", "CGRAN")
PEERS = ("CellTypist", "scANVI")
METHODS = SCATTN + PEERS
LABELS = "cell_type"


def model_path(out_dir: Path, method: str) -> Path:
    return Path(out_dir) / "models" / (f"{method}.pkl" if method == "CellTypist" else method)


def training_set(source_path: Path, n_train: int, seed: int, min_cells: int = 10):
    """A stratified subset (condition x label) of the source cells; rare classes left out."""
    import anndata as ad
    import pandas as pd

    from ..studies.sims_pretraining import labelled_subset

    source = ad.read_h5ad(source_path)
    strata = pd.Series(source.obs["condition"].astype(str) + "|" + source.obs[LABELS].astype(str),
                       index=source.obs_names)
    idx = labelled_subset(strata, min(1.0, n_train / source.n_obs), seed)
    train = source[idx].copy()
    counts = train.obs[LABELS].astype(str).value_counts()
    keep = counts.index[counts >= min_cells]
    train = train[train.obs[LABELS].astype(str).isin(keep).to_numpy()].copy()
    train.obs = train.obs[["condition", LABELS]]
    train.obs[LABELS] = train.obs[LABELS].astype(str).astype("category")
    dropped = sorted(set(counts.index) - set(keep))
    return train, dropped


def _fit_scattn(name: str, train, budget: dict, seed: int, path: Path) -> dict:
    import scattn as sa

    sa.settings.seed = seed
    sa.settings.progress_bar = False
    data = train.copy()
    cls = getattr(sa.model, name)
    cls.setup_anndata(data, labels_key=LABELS)
    model = cls(data)
    model.train(**budget)
    model.save(str(path), overwrite=True, save_anndata=True)
    return {"epochs": len(model.history["train_loss"]), "n_model_genes": len(model.var_names_),
            "train_args": budget, "classes": list(model.classes_)}


def _fit_scanvi(train, budget: dict, seed: int, path: Path) -> dict:
    from .._peers import fit_scanvi_model

    scvi_epochs = budget.get("max_epochs")
    scanvi_epochs = 20 if scvi_epochs is None else min(20, scvi_epochs)  # as the suite's adapter
    model, genes = fit_scanvi_model(train, LABELS, seed, scvi_epochs=scvi_epochs, scanvi_epochs=scanvi_epochs)
    model.save(str(path), overwrite=True, save_anndata=True)
    return {"epochs": int(model.n_epochs_), "n_model_genes": len(genes),
            "train_args": {"scvi_epochs": scvi_epochs, "scanvi_epochs": scanvi_epochs},
            "classes": [str(c) for c in model._label_mapping if str(c) != "Unknown"]}


def _fit_celltypist(train, seed: int, path: Path) -> dict:
    from .._common import lognorm_matrix
    from .._peers import fit_celltypist_model

    labels = train.obs[LABELS].astype(str).to_numpy()
    model = fit_celltypist_model(lognorm_matrix(train, "counts"), labels, train.var_names)
    model.write(str(path))
    return {"epochs": np.nan, "n_model_genes": int(train.n_vars), "classes": [str(c) for c in model.cell_types],
            "train_args": {"input": "log1p(counts per 10k over the 2,000 genes)", "check_expression": False}}


def _budget_of(method: str, budget: dict) -> dict:
    """The training arguments of `method` (CellTypist: none)."""
    return {} if method == "CellTypist" else dict(budget.get(method, {}))


def train_models(out_dir: Path, methods, budget: dict, *, n_train: int = 4000, seed: int = 0,
                 retrain: bool = False) -> dict:
    """Train (or find already saved) every method in `methods`; returns ``train_info.json``'s content."""
    from .._common import pin_threads

    out_dir = Path(out_dir)
    info_path = out_dir / "models" / "train_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    built = str(source_info(out_dir / SOURCE).get("built"))
    todo = [m for m in methods if retrain or m not in info or not model_path(out_dir, m).exists()
            or info[m].get("source_built") != built or info[m].get("n_train_asked") != n_train
            or info[m].get("budget") != _budget_of(m, budget)]
    if not todo:
        return info
    pin_threads()
    train, dropped = training_set(out_dir / SOURCE, n_train, seed)
    info_path.parent.mkdir(parents=True, exist_ok=True)
    for method in todo:
        path = model_path(out_dir, method)
        t0 = time.perf_counter()
        if method in SCATTN:
            row = _fit_scattn(method, train, _budget_of(method, budget), seed, path)
        elif method == "scANVI":
            row = _fit_scanvi(train, _budget_of(method, budget), seed, path)
        elif method == "CellTypist":
            row = _fit_celltypist(train, seed, path)
        else:
            raise ValueError(f"unknown method {method!r}")
        pin_threads()  # scanpy's numba functions reset torch's thread count
        row.update(train_s=time.perf_counter() - t0, n_train=int(train.n_obs), seed=seed,
                   dropped_classes=dropped, path=str(path), source_built=built, n_train_asked=n_train,
                   budget=_budget_of(method, budget))
        info[method] = row
        info_path.write_text(json.dumps(info, indent=1, default=str))
        print(f"trained {method}: {row['train_s']:.1f} s, {row['epochs']} epochs, {train.n_obs} cells, "
              f"{len(row['classes'])} classes -> {path}", flush=True)
    return info


def main(argv=None) -> dict:
    from .._budgets import BUDGETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=str(OUTPUT))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--max-epochs", type=int, default=None, help="one epoch cap for every model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args(argv)
    budget = {m: dict(kw) for m, kw in BUDGETS["default"].items()}
    if args.max_epochs is not None:
        budget = {m: {**budget.get(m, {}), "max_epochs": args.max_epochs} for m in METHODS}
    return train_models(Path(args.out_dir), args.methods, budget, n_train=args.n_train, seed=args.seed,
                        retrain=args.retrain)


if __name__ == "__main__":
    main()
