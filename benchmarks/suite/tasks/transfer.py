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
cell), with ``known_unknown`` the share of the known types' cells so flagged. Methods: the
annotation family's adapters (scattn's classifiers, scANVI, CellTypist, pytorch-tabnet,
logistic regression, linear SVM), each trained on the reference. A method with its own path to
another study takes it (``Fitted.predict_query``): scattn's classifiers adapt to the unlabelled
query (``load_query_data`` then ``train``, as a user would) and flag as ``"Unknown"`` the cells
under the 1% quantile of confidence on held-out reference cells (as ``scattn annotate``); the
macro F1 is scored on their calls before flagging, as the peers' (which never abstain).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import pandas as pd

from ..._common import data_dir
from ..._measure import measure
from ..._pairs import PAIRS, QUICK, load_pair, score
from ..methods import METHODS, NotApplicable, Split
from ._family import Family, RunSettings, write_runs_and_summary
from .annotation import _hide

log = logging.getLogger("benchmarks")

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
                pred = measure(lambda f=fit: f.value.predict_query(split.test) if f.value.predict_query
                               else (f.value.predict(split.test), None))
        except NotApplicable as err:
            log.info("%s on %s: not applicable (%s)", name, split.task, err)
            continue
        except Exception as err:  # one failing method must not end a long run
            log.exception("%s on %s seed %d failed", name, split.task, split.seed)
            rows.append(dict(base, error=f"{type(err).__name__}: {err}"))
            continue
        rows.append(dict(base, **score(split.y_test, pred.value[0], known, pred.value[1]), epochs=fit.value.epochs,
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
                 known_unknown=("known_unknown", "mean"),
                 n_novel=("n_novel", "first"), train_s=("train_s", "mean"))
            .reset_index())


def report(rows: list[dict], extra_rows: list[dict], settings: RunSettings, header: str) -> pd.DataFrame:
    """The runs and the summary under ``<out>_transfer``."""
    return write_runs_and_summary(FAMILY, rows, settings, header, summarize)


FAMILY = Family(name="transfer", tasks=tuple(PAIRS), quick_tasks=QUICK, extra_tasks=(), methods=METHODS,
                problems=problems, run=run, report=report, suffix="_transfer")
