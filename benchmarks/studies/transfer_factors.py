"""Where the points go across studies, one factor at a time: input scaling.

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

    python -m benchmarks.studies.transfer_factors [--seeds 0 1 2] [--pairs ...] [--max-epochs 30]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import rankdata

from .._common import RESULTS, upsert_runs, write_results
from .._pairs import PAIRS, load_pair, score

SCALINGS = ("log_cp10k", "cell_ranks", "gene_study_scaled")


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
        model.train(max_epochs=max_epochs)
        pred = model.predict(q, inplace=False).prediction
    rows.append(dict(task=name, seed=seed, scaling=how, method="CFAN", **score(y_q, np.asarray(pred), known)))
    return rows


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Macro F1 (mean, sd over seeds) per pair, method and scaling, and over the pairs."""
    per = (runs.groupby(["task", "method", "scaling"], sort=False)
           .agg(n_seeds=("seed", "nunique"), macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"))
           .reset_index())
    mean = (per.groupby(["method", "scaling"], sort=False)["macro_f1"].mean().reset_index()
            .assign(task="mean over pairs", n_seeds=per["n_seeds"].max(), macro_f1_sd=np.nan))
    return pd.concat([per, mean[per.columns]], ignore_index=True)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="*", default=[p for p in PAIRS if p.startswith("transfer_panc8")])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--scalings", nargs="*", default=list(SCALINGS), choices=SCALINGS)
    parser.add_argument("--max-epochs", type=int, default=30, help="CFAN's cap (the suite's default run)")
    parser.add_argument("--out", default=str(RESULTS / "transfer_factors"))
    args = parser.parse_args(argv)
    runs = pd.DataFrame()
    for name in args.pairs:
        for seed in args.seeds:
            for how in args.scalings:
                new = pd.DataFrame(run_pair(name, seed, how, args.max_epochs))
                print(new[["task", "seed", "scaling", "method", "macro_f1"]].to_string(index=False, header=False),
                      flush=True)
                runs = upsert_runs(f"{args.out}_runs.csv", new, ("task", "seed", "scaling", "method"))
    table = summarize(runs)
    write_results(table, args.out, "Cross-study annotation, one factor at a time: input scaling (panc8 "
                  "technology -> the others; macro F1 over the reference's types; "
                  f"seeds {sorted(runs.seed.unique().tolist())}; CFAN capped at {args.max_epochs} epochs)")
    return table


if __name__ == "__main__":
    main()
