"""Where the points go across studies, one factor at a time: input scaling, then training.

The transfer family's panc8 pairs (every technology as the reference for all the others,
``benchmarks/suite/tasks/transfer.py``), CFAN (scattn's most accurate model across studies)
and logistic regression, seeds 0-2 (the seed varies the models). Each scaling is applied to the
reference and the query alike, before the model sees them (``expression="log1p"``):

* ``log_cp10k``: library-size normalised to 10,000 and log1p (the baseline, as the family);
* ``cell_ranks``: each cell's log-CP10k values replaced by their rank quantile within the cell
  (expressed genes in (0, 1], zeros stay 0): a per-cell, technology-blind scale;
* ``gene_study_scaled``: each gene's log-CP10k divided by its mean over its own study (the
  reference, or the query), so that a gene's typical level is 1 in both studies.

Scores as the family: macro F1 over the query cells of the reference's types. Genes: panc8's
1,000 genes are the same in every technology, so the gene-choice factor (reference-only versus
shared genes) cannot be measured on it; CellBench, where it could, scores 1.0 for every method.

``--factor training`` (log-CP10k input; ``results/transfer_factors_training.*``): CFAN trained
on the reference with one change at a time from ``unweighted`` (scattn 0.x's default:
unweighted cross-entropy, Adam without weight decay, early stopping on held-out reference
cells, at most ``--max-epochs``):

* ``class_balanced``: each class weighted ``n / (C n_c)`` in the loss (class imbalance; now
  the default of every classifier);
* ``epochs_10``, ``epochs_100``: a shorter cap, a longer one (overfitting the reference's
  technology; both stop early on reference cells);
* ``gene_dropout``, ``library_jitter``: augmentation while training (30% of the genes set to
  zero per cell; library size times ``exp(N(0, 0.5))``), a study-local change of the
  module's input;
* ``weight_decay``: ``weight_decay=1e-3``;
* ``self_training``: the query's cells used: ``CFAN.load_query_data(query, reference_model)``
  on the unlabelled query, then ``train()`` on the reference's cells plus the reference
  model's most confident half of each called class (scattn's adaptation path);
* and the combinations ``class_balanced+self_training`` and
  ``class_balanced+self_training+weight_decay``.

    python -m benchmarks.studies.transfer_factors [--factor scaling|training] [--seeds 0 1 2]
        [--pairs ...] [--max-epochs 30]
"""

from __future__ import annotations

import argparse
import contextlib
import warnings

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import rankdata

from .._common import RESULTS, upsert_runs, write_results
from .._pairs import PAIRS, load_pair, score

SCALINGS = ("log_cp10k", "cell_ranks", "gene_study_scaled")
TRAININGS = ("unweighted", "class_balanced", "epochs_10", "epochs_100", "gene_dropout", "library_jitter",
             "weight_decay", "self_training", "class_balanced+self_training",
             "class_balanced+self_training+weight_decay")


def _dense(m) -> np.ndarray:
    return np.asarray(m.todense() if sparse.issparse(m) else m, dtype=np.float64)


def scale(x: np.ndarray, how: str) -> np.ndarray:
    """`x` (cells x genes, log-CP10k) scaled by `how` (see the module docstring)."""
    if how == "log_cp10k":
        return x
    if how == "cell_ranks":
        out = np.zeros_like(x)
        for i, row in enumerate(x):
            nz = row > 0
            if nz.any():
                out[i, nz] = rankdata(row[nz]) / nz.sum()
        return out
    if how == "gene_study_scaled":
        mean = x.mean(0)
        return x / np.where(mean > 0, mean, 1.0)
    raise ValueError(how)


def run_pair(name: str, seed: int, how: str, max_epochs: int) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    import scattn as sa

    ref, query, _, _ = load_pair(name)
    known = set(ref.obs["cell_type"].astype(str))
    xr, xq = scale(_dense(ref.X), how), scale(_dense(query.X), how)
    y_ref = ref.obs["cell_type"].astype(str).to_numpy()
    y_q = query.obs["cell_type"].astype(str).to_numpy()
    rows = []
    lr = LogisticRegression(max_iter=1000, random_state=seed).fit(xr, y_ref)
    rows.append(dict(task=name, seed=seed, scaling=how, method="LogisticRegression",
                     **score(y_q, lr.predict(xq), known)))
    r = ref.copy()
    r.X = sparse.csr_matrix(xr.astype(np.float32))
    q = query.copy()
    q.X = sparse.csr_matrix(xq.astype(np.float32))
    q.obs = q.obs[[]]
    sa.settings.seed = seed
    sa.settings.progress_bar = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sa.model.CFAN.setup_anndata(r, labels_key="cell_type", expression="log1p")
        model = sa.model.CFAN(r)
        # as measured (results/transfer_factors.md): before class weighting became the default
        model.train(max_epochs=max_epochs, plan_kwargs={"class_weights": None})
        pred = model.predict(q, inplace=False).prediction
    rows.append(dict(task=name, seed=seed, scaling=how, method="CFAN", **score(y_q, np.asarray(pred), known)))
    return rows


@contextlib.contextmanager
def _augmented(gene_dropout: float = 0.0, library_jitter: float = 0.0):
    """CFAN's module with its input augmented while training (study-local, undone on exit)."""
    import torch

    from scattn.module import CFANModule

    original = CFANModule.inference

    def inference(self, x, *args, **kwargs):
        if self.training:
            if library_jitter:  # the input is log-CP10k: scale the cell's CP10k values
                x = torch.log1p(torch.expm1(x) * torch.exp(torch.randn(x.shape[0], 1) * library_jitter))
            if gene_dropout:
                x = x * (torch.rand_like(x) >= gene_dropout)
        return original(self, x, *args, **kwargs)

    CFANModule.inference = inference
    try:
        yield
    finally:
        CFANModule.inference = original


def run_training(name: str, seed: int, how: str, max_epochs: int) -> list[dict]:
    """CFAN on pair `name` trained as `how` says (see the module docstring)."""
    import scattn as sa

    ref, query, expression, _ = load_pair(name)
    known = set(ref.obs["cell_type"].astype(str))
    y_q = query.obs["cell_type"].astype(str).to_numpy()
    parts = set(how.split("+"))
    q = query.copy()
    q.obs = q.obs[[]]
    kwargs = {"max_epochs": {"epochs_10": 10, "epochs_100": 100}.get(how, max_epochs)}
    if "class_balanced" not in parts:
        kwargs["plan_kwargs"] = {"class_weights": None}
    if "weight_decay" in parts:
        kwargs["weight_decay"] = 1e-3
    augment = _augmented(gene_dropout=0.3 if how == "gene_dropout" else 0.0,
                         library_jitter=0.5 if how == "library_jitter" else 0.0)
    sa.settings.seed = seed
    sa.settings.progress_bar = False
    with warnings.catch_warnings(), augment:
        warnings.simplefilter("ignore")
        sa.model.CFAN.setup_anndata(ref, labels_key="cell_type", expression=expression)
        model = sa.model.CFAN(ref)
        model.train(**kwargs)
        if "self_training" in parts:
            model = sa.model.CFAN.load_query_data(q, model)
            model.train(**kwargs)
            pred = model.predict(inplace=False).prediction
        else:
            pred = model.predict(q, inplace=False).prediction
    return [dict(task=name, seed=seed, training=how, method="CFAN", **score(y_q, np.asarray(pred), known))]


def summarize(runs: pd.DataFrame, factor: str = "scaling") -> pd.DataFrame:
    """Macro F1 (mean, sd over seeds) per pair, method and `factor` level, and over the pairs."""
    per = (runs.groupby(["task", "method", factor], sort=False)
           .agg(n_seeds=("seed", "nunique"), macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"))
           .reset_index())
    mean = (per.groupby(["method", factor], sort=False)["macro_f1"].mean().reset_index()
            .assign(task="mean over pairs", n_seeds=per["n_seeds"].max(), macro_f1_sd=np.nan))
    return pd.concat([per, mean[per.columns]], ignore_index=True)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="*", default=[p for p in PAIRS if p.startswith("transfer_panc8")])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--factor", default="scaling", choices=("scaling", "training"))
    parser.add_argument("--levels", nargs="*", help="the factor's levels (default: all; see above)")
    parser.add_argument("--max-epochs", type=int, default=30, help="CFAN's cap (the suite's default run)")
    parser.add_argument("--out", default=None, help="results prefix (default: results/transfer_factors"
                        "[_training])")
    args = parser.parse_args(argv)
    levels = args.levels or list(SCALINGS if args.factor == "scaling" else TRAININGS)
    known = SCALINGS if args.factor == "scaling" else TRAININGS
    if set(levels) - set(known):
        parser.error(f"unknown levels {sorted(set(levels) - set(known))}; choose among {', '.join(known)}")
    out = args.out or str(RESULTS / ("transfer_factors" if args.factor == "scaling" else "transfer_factors_training"))
    runner = run_pair if args.factor == "scaling" else run_training
    runs = pd.DataFrame()
    for name in args.pairs:
        for seed in args.seeds:
            for how in levels:
                new = pd.DataFrame(runner(name, seed, how, args.max_epochs))
                print(new[["task", "seed", args.factor, "method", "macro_f1"]].to_string(index=False, header=False),
                      flush=True)
                runs = upsert_runs(f"{out}_runs.csv", new, ("task", "seed", args.factor, "method"))
    table = summarize(runs, args.factor)
    what = "input scaling" if args.factor == "scaling" else "training (CFAN, log-CP10k)"
    write_results(table, out, f"Cross-study annotation, one factor at a time: {what} (panc8 "
                  "technology -> the others; macro F1 over the reference's types; "
                  f"seeds {sorted(runs.seed.unique().tolist())}; CFAN capped at {args.max_epochs} epochs)")
    return table


if __name__ == "__main__":
    main()
