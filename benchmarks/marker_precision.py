"""Attention-derived markers against well-established markers, beside scanpy's Wilcoxon test.

On pbmc68k_reduced (bulk labels of FACS-sorted PBMC populations, Zheng et al. 2017), each
model is trained on all labelled cells and predicts them; its markers per class come from its
attribution layer (``uns[f"{key}_markers"]``, grouped by the *true* labels here, so every
method ranks genes for the same groups). The baseline is ``sc.tl.rank_genes_groups`` (Wilcoxon)
on the same log-normalised data. The reference, ``markers_pbmc.csv``, lists a few
well-established markers per type with their source (the populations' sort markers and the
Seurat PBMC 3k tutorial's markers); types none of whose reference markers are among the
dataset's 765 genes are left out. Per type: precision@k (reference markers among the top k
over k) and recall@k (over the reference markers present).

    python -m benchmarks.marker_precision [--models SIMS CFAN] [--k 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ._common import RESULTS, load_tasks, write_results

TABLE = Path(__file__).parent / "markers_pbmc.csv"


def top_genes(adata, key: str, group: str, k: int) -> list[str]:
    import scanpy as sc

    df = sc.get.rank_genes_groups_df(adata, group=group, key=key)
    return df["names"].astype(str).head(k).tolist()


def score(adata, key: str, reference: pd.DataFrame, k: int, method: str) -> list[dict]:
    rows = []
    for cell_type, ref in reference.groupby("cell_type"):
        genes = set(ref["gene"]) & set(adata.var_names)
        if not genes or cell_type not in adata.uns[key]["names"].dtype.names:
            continue
        top = top_genes(adata, key, cell_type, k)
        hits = len(genes & set(top))
        rows.append(dict(method=method, cell_type=cell_type, n_reference=len(genes),
                         hits=hits, precision_at_k=hits / k, recall_at_k=hits / len(genes),
                         top=" ".join(top)))
    return rows


def main(argv=None) -> pd.DataFrame:
    import scanpy as sc

    import scattn as sa

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=["SIMS", "CFAN"])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "marker_precision"))
    args = parser.parse_args(argv)
    (task,) = load_tasks(["pbmc68k_reduced"])  # also pins torch's threads
    reference = pd.read_csv(TABLE)
    adata = task.adata.copy()
    labels = task.labels_key
    rows = []
    sc.tl.rank_genes_groups(adata, labels, method="wilcoxon", key_added="wilcoxon")
    rows += score(adata, "wilcoxon", reference, args.k, "Wilcoxon (scanpy)")
    for name in args.models:
        sa.settings.seed = args.seed
        sa.settings.progress_bar = False
        data = task.adata.copy()
        model_cls = getattr(sa.model, name)
        model_cls.setup_anndata(data, labels_key=labels, expression=task.expression)
        model = model_cls(data)
        model.train(**({} if args.max_epochs is None else {"max_epochs": args.max_epochs}))
        model.predict()
        key = model._key
        sa.tl.marker_genes_from_attention(data, groupby=labels, layer=f"{key}_attention",
                                          key_added=f"{key}_true_markers")
        rows += score(data, f"{key}_true_markers", reference, args.k, name)
    per_type = pd.DataFrame(rows)
    per_type.to_csv(f"{args.out}_per_type.csv", index=False)
    summary = (per_type.groupby("method", sort=False)
               .agg(n_types=("cell_type", "size"), precision_at_k=("precision_at_k", "mean"),
                    recall_at_k=("recall_at_k", "mean"), hits=("hits", "sum"),
                    n_reference=("n_reference", "sum"))
               .reset_index())
    write_results(summary, args.out, f"Marker precision@{args.k} and recall@{args.k} against "
                                     "benchmarks/markers_pbmc.csv (pbmc68k_reduced)")
    return summary


if __name__ == "__main__":
    main()
