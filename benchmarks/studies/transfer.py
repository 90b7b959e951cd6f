"""Reference-to-query transfer across studies (the CFAN/CGRAN paper's section 4.4, Table 6).

Tasks (both from ``../shared/data``):

* ``panc8``: reference = the inDrop study (Baron et al.), query = the CEL-seq, CEL-seq2 and
  Smart-seq2 studies (Grün, Muraro, Segerstolpe et al.), cell types with >= 5 cells on both
  sides. All cells library-size normalised + log1p (some studies hold non-integer values).
* ``cellbench``: reference = CEL-seq2, query = Drop-seq (3 cell lines, raw counts).

For each seed the query is split 80/20 (stratified): the 80% fine-tunes, the 20% is the test.
The reference model is trained on all reference cells. Methods, scored on the query test cells:

* ``reference only``: the reference model predicts the query directly (genes aligned by name);
* CGRAN settings A (query SVD, classifier only), B (query SVD, all weights), C (reference gene
  embeddings + least-squares cell embeddings, all weights); CFAN settings A (classifier only)
  and B (all weights): ``Model.load_query_data`` then ``train`` on the 80%;
* logistic regression trained on the reference (the reference model's genes, log-normalised),
  and, as a within-query yardstick, on the query's 80%.

    python -m benchmarks.studies.transfer [--tasks panc8 cellbench] [--seeds 0 1 2]
    python -m benchmarks.studies.transfer --summarize results/transfer_runs.csv     # table only
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from .._common import RESULTS, load_transfer_tasks, lognorm_matrix, upsert_runs, write_results

SETTINGS = {
    "CGRAN": {"A": {"embedding": "query", "unfrozen": False},
              "B": {"embedding": "query", "unfrozen": True},
              "C": {"embedding": "reference", "unfrozen": True}},
    "CFAN": {"A": {"unfrozen": False}, "B": {"unfrozen": True}},
}


def _scores(y, pred) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": accuracy_score(y, pred), "macro_f1": f1_score(y, pred, average="macro")}


def run_task(name, ref, query, expression, seed, *, max_epochs, fine_tune_epochs):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    import scattn as sa

    idx_tune, idx_test = train_test_split(np.arange(query.n_obs), test_size=0.2, random_state=seed,
                                          stratify=query.obs["cell_type"])
    test = query[np.sort(idx_test)].copy()
    y_test = test.obs["cell_type"].to_numpy()
    rows = []
    for model_cls in (sa.model.CGRAN, sa.model.CFAN):
        mname = model_cls.__name__
        sa.settings.seed = seed
        reference = ref.copy()
        model_cls.setup_anndata(reference, labels_key="cell_type", expression=expression)
        model = model_cls(reference)
        model.train(max_epochs=max_epochs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = model.predict(test, inplace=False).prediction.astype(str)
        rows.append(dict(task=name, seed=seed, method=f"{mname} reference only", **_scores(y_test, pred)))
        for setting, kwargs in SETTINGS[mname].items():
            sa.settings.seed = seed
            tune = query[np.sort(idx_tune)].copy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qm = model_cls.load_query_data(tune, model, **kwargs)
                t0 = time.perf_counter()
                qm.train(max_epochs=fine_tune_epochs, early_stopping=False, train_size=1.0)
                t_tune = time.perf_counter() - t0
                pred = qm.predict(test, inplace=False).prediction.astype(str)
            rows.append(dict(task=name, seed=seed, method=f"{mname} setting {setting}",
                             fine_tune_s=t_tune, **_scores(y_test, pred)))
        genes = model.var_names_
    # logistic regression on the last reference model's genes, log-normalised
    cols_ref, cols_q = ref.var_names.get_indexer(genes), query.var_names.get_indexer(genes)
    x_ref = lognorm_matrix(ref, expression)[:, cols_ref]
    xq = lognorm_matrix(query, expression)
    x_q = xq[:, np.maximum(cols_q, 0)].toarray() if hasattr(xq, "toarray") else xq[:, np.maximum(cols_q, 0)]
    x_q[:, cols_q < 0] = 0
    lr = LogisticRegression(max_iter=2000).fit(x_ref, ref.obs["cell_type"])
    rows.append(dict(task=name, seed=seed, method="LogisticRegression on reference",
                     **_scores(y_test, lr.predict(x_q[np.sort(idx_test)]))))
    lr = LogisticRegression(max_iter=2000).fit(x_q[np.sort(idx_tune)], query.obs["cell_type"].iloc[np.sort(idx_tune)])
    rows.append(dict(task=name, seed=seed, method="LogisticRegression on query 80%",
                     **_scores(y_test, lr.predict(x_q[np.sort(idx_test)]))))
    return rows


def summarize(df: pd.DataFrame, out: str, title: str) -> pd.DataFrame:
    """Mean and sd over seeds per task and method; written as CSV and markdown."""
    summary = (df.groupby(["task", "method"], sort=False)
               .agg(accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"),
                    macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"),
                    n_seeds=("seed", "nunique"))
               .reset_index())
    write_results(summary, out, title)
    return summary


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--summarize", nargs="*", default=None,
                        help="only merge these *_runs.csv files (runs made in separate processes)")
    parser.add_argument("--tasks", nargs="*", default=["panc8", "cellbench"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--fine-tune-epochs", type=int, default=25)
    parser.add_argument("--out", default=str(RESULTS / "transfer"))
    args = parser.parse_args(argv)
    if args.summarize:
        df = pd.concat([pd.read_csv(f) for f in args.summarize], ignore_index=True)
        return summarize(df, args.out, f"Transfer to a new study, merged from {len(args.summarize)} run files")
    import scattn as sa

    sa.settings.progress_bar = False
    rows, notes = [], {}
    for name, (ref, query, expression, note) in load_transfer_tasks(args.tasks).items():
        notes[name] = f"{note}; reference {ref.n_obs} cells, query {query.n_obs}"
        for seed in args.seeds:
            new = run_task(name, ref, query, expression, seed, max_epochs=args.max_epochs,
                           fine_tune_epochs=args.fine_tune_epochs)
            rows += new
            print(pd.DataFrame(new).to_string(index=False), flush=True)
            # one runs file for every task and seed: this run's rows replace their earlier ones
            runs = upsert_runs(f"{args.out}_runs.csv", pd.DataFrame(new), ("task", "seed"))
    title = (f"Transfer to a new study (seeds {sorted(runs.seed.unique().tolist())}): "
             + "; ".join(f"{k}: {v}" for k, v in notes.items()))
    return summarize(runs, args.out, title)


if __name__ == "__main__":
    main()
