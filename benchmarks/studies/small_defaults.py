"""Each classifier's default settings on small real sets (120-150 training cells).

A new user calls ``Model.setup_anndata(adata, labels_key=...)``, ``Model(adata)``,
``model.train()`` and ``model.predict(new_cells)`` with nothing else. This study measures
exactly that for CGRAN, CFAN and SIMS on small labelled sets, beside logistic regression on
the same training cells, so that a default that fails on small data (chance-level predictions,
training stopped before anything was learned) shows up as a number.

Sets (each a stratified split per seed; classes with fewer than 10 cells are dropped first):

* ``pbmc68k_reduced``: scanpy's bundled PBMC set (log-normalised, 765 genes, 10
  ``bulk_labels``), 150 training cells, the rest tested. Needs no local data.
* ``paul15``: mouse myeloid progenitors (raw counts, 3,451 genes, 9 types kept), 150 training
  cells, 600 of the rest tested.
* ``cellbench_dropseq``: 3 lung cancer cell lines (raw counts, 15,127 genes), 120 training
  cells, the other 90 tested.
* ``cellbench_celseq2``: the same cell lines on CEL-seq2 (raw counts, 28,204 genes), 120
  training cells, the other 120 tested.
* ``cellbench_celseq2_to_dropseq``: 120 CEL-seq2 cells train, all 210 Drop-seq cells are
  predicted (the genes both files share).

The CellBench and paul15 sets come from ``../shared/data`` (or ``$SCATTN_DATA_DIR``); when that
folder is absent they are skipped with a message and only ``pbmc68k_reduced`` runs.

Per run it records macro F1 and accuracy on the held-out cells, the epochs and optimiser
steps trained, the epoch of the lowest validation loss, the share of test cells given the most
frequent predicted class (near 1: the model predicts one class, i.e. it learned nothing) and
the warnings scattn raised while training and predicting.

``--sims-variants`` adds SIMS runs with explicit patience arguments of
:meth:`scattn.model.SIMS.train`, to see what the default patience rule does:
``epoch-patience`` is the rule before the small-data fix (15 epochs of early-stopping and 5 of
learning-rate patience, whatever the epoch length); ``step-patience`` is the rule proposed by
this study, patience counted in optimiser steps (``early_stopping_patience =
max(15, ceil(300 / s))``, ``lr_patience = max(5, ceil(100 / s))`` with ``s`` minibatches per
epoch). From about 20 minibatches per epoch (5,000 cells) up both give 15 and 5.

Usage::

    python -m benchmarks.studies.small_defaults            # 3 seeds, every set and model
    python -m benchmarks.studies.small_defaults --quick    # seed 0, pbmc68k_reduced only
    python -m benchmarks.studies.small_defaults --models SIMS --sets paul15 \
        --sims-variants epoch-patience step-patience

Writes a markdown table (default ``benchmarks/results/small_defaults.md``) and the runs beside
it (``.csv``).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parents[1] / "results"
MODELS = ("CGRAN", "CFAN", "SIMS")
SETS = ("pbmc68k_reduced", "paul15", "cellbench_dropseq", "cellbench_celseq2",
        "cellbench_celseq2_to_dropseq")
MIN_CELLS = 10  # classes with fewer cells are dropped before splitting
MAX_TEST = 600


def _data_dir() -> Path | None:
    """``$SCATTN_DATA_DIR`` or ``../shared/data`` (as :func:`scattn.datasets.shared_data_dir`)."""
    from scattn.datasets import shared_data_dir

    return shared_data_dir()


def _read(name: str, data_dir: Path):
    """A local labelled set with string labels in ``obs["cell_type"]``."""
    from scattn.datasets import read_local

    adata = read_local(name, data_dir)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    return adata


def _drop_rare(adata):
    """`adata` without the cells of classes with fewer than ``MIN_CELLS`` cells."""
    counts = adata.obs["cell_type"].value_counts()
    keep = adata.obs["cell_type"].isin(counts.index[counts >= MIN_CELLS]).to_numpy()
    return adata[keep].copy()


def load_set(name: str, seed: int, data_dir: Path | None):
    """Training cells, test cells and the expression kind of one set and seed.

    Parameters
    ----------
    name
        One of ``SETS``.
    seed
        Seed of the stratified split.
    data_dir
        Folder of the local data sets; `None` when absent.

    Returns
    -------
    ``(train, test, expression)``, two AnnData with ``obs["cell_type"]`` and ``"counts"`` or
    ``"log1p"``; `None` when the set needs local data that are absent.
    """
    from sklearn.model_selection import train_test_split

    import scattn as sa

    if name == "pbmc68k_reduced":
        adata, expression, n_train = sa.datasets.pbmc68k_reduced(), "log1p", 150
        adata.obs["cell_type"] = adata.obs["bulk_labels"].astype(str)
    elif data_dir is None:
        return None
    elif name == "cellbench_celseq2_to_dropseq":
        ref = _read("cellbench_3cl_celseq2", data_dir)
        query = _read("cellbench_3cl_dropseq", data_dir)
        genes = ref.var_names.intersection(query.var_names)
        ref, query = ref[:, genes].copy(), query[:, genes].copy()
        idx, _ = train_test_split(np.arange(ref.n_obs), train_size=120,
                                  stratify=ref.obs["cell_type"], random_state=seed)
        return ref[np.sort(idx)].copy(), query, "counts"
    else:
        file = {"paul15": "paul15", "cellbench_dropseq": "cellbench_3cl_dropseq",
                "cellbench_celseq2": "cellbench_3cl_celseq2"}[name]
        adata, expression = _read(file, data_dir), "counts"
        n_train = 150 if name == "paul15" else 120
    adata = _drop_rare(adata)
    y = adata.obs["cell_type"].to_numpy()
    train, test = train_test_split(np.arange(adata.n_obs), train_size=n_train, stratify=y,
                                   random_state=seed)
    if len(test) > MAX_TEST:
        test, _ = train_test_split(test, train_size=MAX_TEST, stratify=y[test], random_state=seed)
    return adata[np.sort(train)].copy(), adata[np.sort(test)].copy(), expression


def _lognorm(adata, expression: str):
    """``log1p(normalize_total(1e4))`` of counts; log-normalised data as they are."""
    import scanpy as sc

    if expression == "log1p":
        return adata.X
    out = sc.pp.normalize_total(adata, target_sum=1e4, inplace=False)["X"]
    return out.log1p() if hasattr(out, "log1p") else np.log1p(out)


def sims_epoch_patience_kwargs(n_cells: int) -> dict:
    """SIMS ``train`` arguments of the rule before the small-data fix: 15 and 5 epochs.

    Parameters
    ----------
    n_cells
        Labelled cells the model is trained on (unused; the signature of the variants).

    Returns
    -------
    ``early_stopping_patience`` 15 and ``lr_patience`` 5.
    """
    return {"early_stopping_patience": 15, "lr_patience": 5}


def sims_step_patience_kwargs(n_cells: int, train_size: float = 0.9) -> dict:
    """SIMS ``train`` arguments of the proposed rule: patience counted in optimiser steps.

    Parameters
    ----------
    n_cells
        Labelled cells the model is trained on (training plus validation).
    train_size
        Fraction of them that trains (SIMS' default 0.9).

    Returns
    -------
    ``batch_size`` (SIMS' current rule: 256 halved, not below 32, until an epoch has 8
    minibatches), ``early_stopping_patience = max(15, ceil(300 / s))`` and
    ``lr_patience = max(5, ceil(100 / s))``, with ``s`` minibatches per epoch.
    """
    n_train = max(1, math.ceil(train_size * n_cells))
    batch_size = 256
    while batch_size > 32 and n_train < 8 * batch_size:
        batch_size //= 2
    steps = math.ceil(n_train / batch_size)
    return {"batch_size": batch_size,
            "early_stopping_patience": max(15, math.ceil(300 / steps)),
            "lr_patience": max(5, math.ceil(100 / steps))}


def _history_summary(model) -> tuple[int, float]:
    """Epochs trained and the epoch of the lowest validation loss (NaN without validation)."""
    history = model.history
    epochs = max((len(v) for v in history.values()), default=0)
    best = np.nan
    if "validation_loss" in history:
        best = float(np.argmin(history["validation_loss"].to_numpy().ravel()))
    return epochs, best


def run_model(name: str, train, test, expression: str, seed: int, train_kwargs: dict) -> dict:
    """Train one scattn model with its defaults (plus `train_kwargs`) and score the test cells.

    Parameters
    ----------
    name
        ``"CGRAN"``, ``"CFAN"`` or ``"SIMS"``.
    train, test
        Training and test cells (``obs["cell_type"]``).
    expression
        ``"counts"`` or ``"log1p"``.
    seed
        :attr:`scattn.settings.seed`.
    train_kwargs
        Arguments of ``train`` beyond the defaults (empty: the defaults).

    Returns
    -------
    The run's metrics and training summary.
    """
    from sklearn.metrics import accuracy_score, f1_score

    import scattn as sa

    sa.settings.seed = seed
    sa.settings.progress_bar = False
    cls = getattr(sa.model, name)
    adata = train.copy()
    query = test.copy()
    y_test = query.obs["cell_type"].to_numpy()
    query.obs = query.obs[[]]  # the model never sees the test labels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cls.setup_anndata(adata, labels_key="cell_type", expression=expression)
        model = cls(adata)
        t0 = time.perf_counter()
        model.train(**train_kwargs)
        train_s = time.perf_counter() - t0
        pred = model.predict(query, inplace=False).prediction.astype(str).to_numpy()
    # scattn's own warnings: raised in scattn, or pointing (stacklevel) at this caller
    here = {f"{os.sep}scattn{os.sep}", os.path.basename(__file__)}
    ours = sorted({str(w.message).splitlines()[0][:120] for w in caught
                   if any(h in str(w.filename) for h in here)})
    epochs, best = _history_summary(model)
    trainer = getattr(model, "trainer", None)
    return {"macro_f1": f1_score(y_test, pred, average="macro"),
            "accuracy": accuracy_score(y_test, pred), "epochs": epochs,
            "steps": getattr(trainer, "global_step", np.nan), "best_epoch": best,
            "top_class_share": pd.Series(pred).value_counts(normalize=True).iloc[0],
            "train_s": train_s, "warnings": " | ".join(ours)}


def run_lr(train, test, expression: str) -> dict:
    """Logistic regression (scikit-learn, L2, C=1) on log-normalised expression.

    Parameters
    ----------
    train, test
        Training and test cells (``obs["cell_type"]``).
    expression
        ``"counts"`` or ``"log1p"``.

    Returns
    -------
    Macro F1, accuracy and training time.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    t0 = time.perf_counter()
    clf = LogisticRegression(max_iter=1000).fit(_lognorm(train, expression), train.obs["cell_type"])
    train_s = time.perf_counter() - t0
    pred = clf.predict(_lognorm(test, expression))
    y = test.obs["cell_type"].to_numpy()
    return {"macro_f1": f1_score(y, pred, average="macro"), "accuracy": accuracy_score(y, pred),
            "train_s": train_s}


SIMS_VARIANTS = {"epoch-patience": sims_epoch_patience_kwargs,
                 "step-patience": sims_step_patience_kwargs}


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per set and method.

    Parameters
    ----------
    runs
        One row per set, method and seed.

    Returns
    -------
    One row per set and method.
    """
    agg = {"n_seeds": ("seed", "size"), "macro_f1": ("macro_f1", "mean"),
           "macro_f1_sd": ("macro_f1", "std"), "accuracy": ("accuracy", "mean"),
           "accuracy_sd": ("accuracy", "std"), "epochs": ("epochs", "mean"),
           "steps": ("steps", "mean"), "best_epoch": ("best_epoch", "mean"),
           "top_class_share": ("top_class_share", "mean"), "train_s": ("train_s", "mean")}
    runs = runs.copy()
    for col in ("epochs", "steps", "best_epoch", "top_class_share"):
        if col not in runs:
            runs[col] = np.nan
    return runs.groupby(["set", "method"], sort=False).agg(**agg).reset_index()


def to_markdown(summary: pd.DataFrame, runs: pd.DataFrame, header: str) -> str:
    """The summary as a markdown table, with the warnings scattn raised listed below it.

    Parameters
    ----------
    summary
        Output of :func:`summarize`.
    runs
        The runs (for their ``warnings`` column).
    header
        Text above the table.

    Returns
    -------
    Markdown text.
    """
    cols = list(summary.columns)
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in summary.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if np.isnan(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    if "warnings" in runs:
        warned = runs[runs["warnings"].fillna("").astype(bool)]
        lines += ["", "Warnings scattn raised (set, method: messages):", ""]
        if warned.empty:
            lines.append("none")
        for (s, m), g in warned.groupby(["set", "method"], sort=False):
            msgs = sorted(set(" | ".join(g["warnings"]).split(" | ")))
            lines.append(f"- {s}, {m}: " + "; ".join(msgs))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the study from the command line; return the summary.

    Parameters
    ----------
    argv
        Command-line arguments (`None`: ``sys.argv``).

    Returns
    -------
    One row per set and method (see :func:`summarize`).
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="seed 0, pbmc68k_reduced only")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--sims-variants", nargs="*", choices=sorted(SIMS_VARIANTS), default=[],
                   help="also run SIMS with these explicit patience rules (see the docstring)")
    p.add_argument("--no-lr", action="store_true", help="skip logistic regression")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--out", type=Path, default=RESULTS / "small_defaults.md",
                   help="markdown output; the runs go beside it as .csv")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.sets = [0], ["pbmc68k_reduced"]
    # before torch is imported (through scattn)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    data_dir = _data_dir()
    methods = [(m, m, None) for m in args.models]
    methods += [("SIMS", f"SIMS ({v})", SIMS_VARIANTS[v]) for v in args.sims_variants]
    rows, t_start = [], time.perf_counter()
    for name in args.sets:
        for seed in args.seeds:
            data = load_set(name, seed, data_dir)
            if data is None:
                print(f"skip {name}: no local data folder (../shared/data or $SCATTN_DATA_DIR)")
                break
            train, test, expression = data
            base = {"set": name, "seed": seed, "n_train": train.n_obs, "n_test": test.n_obs,
                    "n_genes": train.n_vars, "n_classes": train.obs["cell_type"].nunique()}
            if not args.no_lr:
                rows.append({**base, "method": "LogisticRegression", **run_lr(train, test, expression)})
                print(rows[-1], flush=True)
            for model, label, variant in methods:
                kwargs = {} if variant is None else variant(train.n_obs)
                rows.append({**base, "method": label,
                             **run_model(model, train, test, expression, seed, kwargs)})
                print(rows[-1], flush=True)
    if not rows:
        print("nothing ran")
        return pd.DataFrame()
    runs = pd.DataFrame(rows)
    summary = summarize(runs)
    minutes = (time.perf_counter() - t_start) / 60
    header = (
        "# Default settings on small sets (`python -m benchmarks.studies.small_defaults`)\n\n"
        f"Seeds {args.seeds}; every scattn model with its defaults (`Model(adata)`, "
        "`model.train()`), predicting held-out cells as new data; logistic regression "
        "(C=1) on log1p(normalize_total) of the same training cells. `top_class_share`: share "
        "of test cells given the most frequent prediction (near 1: one class for every cell). "
        f"`epochs`, `steps`: epochs and optimiser steps trained. Total {minutes:.1f} min."
    )
    text = to_markdown(summary, runs, header)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    runs.to_csv(args.out.with_suffix(".csv"), index=False)
    return summary


if __name__ == "__main__":
    main()
