"""The *transfer* family: label a new study from a reference of another lab or technology.

Pairs (``--tasks``): every panc8 technology against all the others
(``transfer_panc8_<tech>``: the reference is that technology's cells, the query every other
technology's), and CellBench's three cell lines in both directions
(``transfer_cellbench_celseq2_to_dropseq``, ``transfer_cellbench_dropseq_to_celseq2``);
``--quick`` runs the first CellBench pair. The reference keeps its cell types with at least 5
cells; the query keeps every cell, so types the reference lacks are in it. Both are restricted
to their shared genes (at most 2,000, the reference's most variable, as the annotation
family's cross-study tasks). panc8 is library-size normalised and log1p (some of its
technologies are stored normalised), CellBench read as counts.

Scores per method and seed (seeds vary the models): accuracy and macro F1 over the query cells
whose type the reference has (macro over the reference's types present in the query), and
``novel_unknown``, the share of query cells of types the reference lacks that the method calls
``"Unknown"`` (methods that always name a known type score 0; NaN where the query has no such
cell). Methods: the annotation family's adapters (scattn's classifiers, scANVI, CellTypist,
pytorch-tabnet, logistic regression, linear SVM), each trained on the reference only.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ..._common import data_dir, markdown_table, metrics
from ..._measure import measure
from ..methods import METHODS, NotApplicable, Split
from ._family import Family, RunSettings
from .annotation import N_CROSS_GENES, _hide, _variable_genes

log = logging.getLogger("benchmarks")

PANC8_TECHS = ("indrop", "celseq", "celseq2", "smartseq2", "fluidigmc1")
PAIRS = {**{f"transfer_panc8_{t}": ("panc8", t) for t in PANC8_TECHS},
         "transfer_cellbench_celseq2_to_dropseq": ("cellbench", "celseq2"),
         "transfer_cellbench_dropseq_to_celseq2": ("cellbench", "dropseq")}
QUICK = ("transfer_cellbench_celseq2_to_dropseq",)
MIN_CELLS = 5  # reference types with fewer cells are left out of the reference


def load_pair(name: str):
    """``(reference, query, expression, note)`` of pair `name` (see the module docstring)."""
    import anndata as ad
    import scanpy as sc

    base = data_dir()
    kind, source = PAIRS[name]
    if kind == "panc8":
        panc = ad.read_h5ad(base / "panc8_subset.h5ad")
        sc.pp.normalize_total(panc, target_sum=1e4)
        sc.pp.log1p(panc)
        tech = panc.obs["tech"].astype(str)
        ref, query, expression = panc[tech == source].copy(), panc[tech != source].copy(), "log1p"
        note = f"panc8 {source} -> the other technologies"
    else:
        other = "dropseq" if source == "celseq2" else "celseq2"
        ref = ad.read_h5ad(base / f"cellbench_3cl_{source}.h5ad")
        query = ad.read_h5ad(base / f"cellbench_3cl_{other}.h5ad")
        sc.pp.filter_genes(ref, min_cells=1)
        expression, note = "counts", f"CellBench {source} -> {other}"
    labels = ref.obs["cell_type"].astype(str)
    counts = labels.value_counts()
    keep = counts.index[counts >= MIN_CELLS]
    ref = ref[labels.isin(keep).to_numpy()].copy()
    genes = ref.var_names.intersection(query.var_names)
    ref, query = ref[:, genes].copy(), query[:, genes].copy()
    if len(genes) > N_CROSS_GENES:
        genes = _variable_genes(ref, expression, N_CROSS_GENES)
        ref, query = ref[:, genes].copy(), query[:, genes].copy()
    ref.obs["cell_type"] = ref.obs["cell_type"].astype(str).astype("category")
    query.obs["cell_type"] = query.obs["cell_type"].astype(str)
    return ref, query, expression, note


def problems(tasks: list[str], settings: RunSettings) -> Iterator[tuple[Split, str]]:
    """One problem per asked pair and seed (the seed varies the models)."""
    if data_dir() is None:
        return
    for name in [t for t in tasks if t in PAIRS]:
        ref, query, expression, note = load_pair(name)
        known = set(ref.obs["cell_type"].cat.categories)
        novel = int((~query.obs["cell_type"].isin(known)).sum())
        note = (f"{note}; {ref.n_vars} shared genes; {ref.n_obs} -> {query.n_obs} cells "
                f"({novel} of types the reference lacks)")
        for seed in settings.seeds:
            test, y = _hide(query, "cell_type")
            yield Split(name, seed, ref.copy(), test, y, "cell_type", expression), note


def score(y_true: np.ndarray, y_pred: np.ndarray, known: set[str]) -> dict:
    """Accuracy and macro F1 on the query cells of known types, and the share of the others
    called ``"Unknown"``."""
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    seen = np.isin(y_true, list(known))
    out = metrics(y_true[seen], y_pred[seen])
    out["novel_unknown"] = float((y_pred[~seen] == "Unknown").mean()) if (~seen).any() else np.nan
    out["n_novel"] = int((~seen).sum())
    return out


def run(split: Split, note: str, methods: list[str], settings: RunSettings) -> tuple[list[dict], list[dict]]:
    """Every method trained on the reference, scored on the query."""
    rows = []
    known = set(split.train.obs["cell_type"].astype(str))
    for name in methods:
        base = dict(task=split.task, seed=split.seed, method=name, n_train=split.train.n_obs,
                    n_test=split.test.n_obs, n_genes=split.train.n_vars, note=note)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = measure(lambda n=name: METHODS[n](split, split.seed, settings.budget.get(n, {})))
                pred = measure(lambda f=fit: f.value.predict(split.test))
        except NotApplicable as err:
            log.info("%s on %s: not applicable (%s)", name, split.task, err)
            continue
        except Exception as err:  # one failing method must not end a long run
            log.exception("%s on %s seed %d failed", name, split.task, split.seed)
            rows.append(dict(base, error=f"{type(err).__name__}: {err}"))
            continue
        rows.append(dict(base, **score(split.y_test, pred.value, known), epochs=fit.value.epochs,
                         train_s=fit.seconds, predict_s=pred.seconds,
                         peak_mb=max(fit.peak_abs_mb, pred.peak_abs_mb) - fit.start_mb))
        print(f"{split.task} seed {split.seed} {name}: macro F1 {rows[-1]['macro_f1']:.3f} "
              f"(known types), novel Unknown {rows[-1]['novel_unknown']:.2f}", flush=True)
    return rows, []


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean (sd) over seeds per pair and method."""
    ok = runs[runs["error"].isna()] if "error" in runs else runs
    return (ok.groupby(["task", "method"], sort=False)
            .agg(n_seeds=("seed", "nunique"), macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"),
                 accuracy=("accuracy", "mean"), novel_unknown=("novel_unknown", "mean"),
                 n_novel=("n_novel", "first"), train_s=("train_s", "mean"))
            .reset_index())


def report(rows: list[dict], extra_rows: list[dict], settings: RunSettings, header: str) -> pd.DataFrame:
    """The runs and the summary under ``<out>_transfer``."""
    out = FAMILY.prefix(settings.out)
    runs = pd.DataFrame(rows)
    runs.to_csv(f"{out}_runs.csv", index=False)
    table = summarize(runs) if len(runs) else pd.DataFrame()
    table.to_csv(f"{out}.csv", index=False)
    Path(f"{out}.md").write_text(header + markdown_table(table) if len(table) else header)
    if len(table):
        print(table.to_string(index=False))
    return table


FAMILY = Family(name="transfer", tasks=tuple(PAIRS), quick_tasks=QUICK, extra_tasks=(), methods=METHODS,
                problems=problems, run=run, report=report, suffix="_transfer")
