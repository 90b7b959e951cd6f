"""Novel cell types: the masked-type experiment of the CFAN/CGRAN paper (Table 7, Figure 7).

For each masked type: the other ("known") types are split 80/20 (stratified); CGRAN and CFAN
are trained on the 80% (their own 10% validation cells held out from the updates); the
threshold t is chosen on those validation cells so that 5% of them are ambiguous
(``sa.tl.unknown_threshold``); then, on the held-out 20% of known cells and on every cell of
the masked type:

* ``p_ref``: ambiguous fraction of the held-out known cells (measured, not the 5% target);
* ``p``: ambiguous fraction of the masked type's cells, and Fisher's one-sided p-value of
  ``p > p_ref`` (``sa.tl.novelty``);
* F1 of ``"Unknown"``: the masked cells are the positives, cells below t the calls.

Rows with the paper's fixed thresholds (CGRAN 0.7, CFAN 0.995) are reported too. The
embedding view of Figure 7 (UMAP of each model's embedding, masked type highlighted) is
written as a PNG for the first masked type.

    python -m benchmarks.studies.novelty [--dataset pbmc68k_reduced] [--masked "CD19+ B" ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from .._common import RESULTS, load_tasks, write_results

PAPER_T = {"CGRAN": 0.7, "CFAN": 0.995}
DEFAULT_MASKED = {
    "pbmc68k_reduced": ["CD19+ B", "CD56+ NK", "CD14+ Monocyte", "Dendritic"],
    "paul15": ["Mo", "Baso", "Neu", "GMP"],
}


def _fit(model_cls, adata, task, seed: int, max_epochs: int):
    import scattn as sa

    sa.settings.seed = seed
    model_cls.setup_anndata(adata, labels_key=task.labels_key, expression=task.expression)
    model = model_cls(adata)
    t0 = time.perf_counter()
    model.train(max_epochs=max_epochs)
    return model, time.perf_counter() - t0


def run_masked(task, masked: str, seed: int, *, max_epochs: int, embedding_png: str | None):
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    import scattn as sa

    labels = task.adata.obs[task.labels_key].astype(str)
    known = np.flatnonzero((labels != masked).to_numpy())
    novel = np.flatnonzero((labels == masked).to_numpy())
    train, held = train_test_split(known, test_size=0.2, stratify=labels.iloc[known], random_state=seed)
    evaluation = task.adata[np.r_[held, novel]].copy()
    is_novel = np.r_[np.zeros(len(held), bool), np.ones(len(novel), bool)]
    evaluation.obs["sample"] = pd.Categorical(np.where(is_novel, f"masked: {masked}", "known (held out)"))
    rows, embeddings = [], {}
    for model_cls in (sa.model.CGRAN, sa.model.CFAN):
        name = model_cls.__name__
        a_train = task.adata[np.sort(train)].copy()
        model, t_train = _fit(model_cls, a_train, task, seed, max_epochs)
        val_conf = model.predict_proba(indices=model.validation_indices).max(1).to_numpy()
        model.predict(evaluation, key_added="m")
        embeddings[name] = evaluation.obsm["X_m"].copy()
        for rule, t in (("5% of validation cells", sa.tl.unknown_threshold(val_conf, p_ref=0.05)),
                        ("paper's fixed t", PAPER_T[name])):
            ref = evaluation[~is_novel].copy()
            sa.tl.novelty(evaluation, ref, threshold=t, key="m", groupby="sample")
            table = evaluation.uns["novelty"]["table"]
            called = evaluation.obs["novelty_ambiguous"].to_numpy()
            row = table.loc[f"masked: {masked}"]
            rows.append(dict(dataset=task.name, masked=masked, seed=seed, model=name, threshold_rule=rule,
                             t=t, n_masked=len(novel), n_known_heldout=len(held),
                             p_ref=row["p_ref"], p=row["p"], pval=row["pval"],
                             f1_unknown=f1_score(is_novel, called), train_s=t_train,
                             epochs=len(model.history["train_loss"])))
    if embedding_png:
        _plot_embeddings(evaluation, embeddings, masked, task.labels_key, embedding_png)
    return rows


def _plot_embeddings(adata, embeddings: dict, masked: str, labels_key: str, path: str) -> None:
    import matplotlib.pyplot as plt
    import scanpy as sc

    fig, axes = plt.subplots(1, len(embeddings), figsize=(6.5 * len(embeddings), 5.5))
    for ax, (name, emb) in zip(axes, embeddings.items(), strict=True):
        view = sc.AnnData(obs=adata.obs[[labels_key]].copy())
        view.obsm["X_emb"] = emb
        sc.pp.neighbors(view, use_rep="X_emb", random_state=0)
        sc.tl.umap(view, random_state=0)
        xy = view.obsm["X_umap"]
        lab = view.obs[labels_key].astype(str).to_numpy()
        for cls in sorted(set(lab) - {masked}):
            m = lab == cls
            ax.scatter(xy[m, 0], xy[m, 1], s=8, alpha=0.7, label=cls)
        m = lab == masked
        ax.scatter(xy[m, 0], xy[m, 1], s=14, c="black", marker="x", label=f"{masked} (masked)")
        ax.set_title(f"{name} embedding, trained without {masked}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP1")
        ax.set_ylabel("UMAP2")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="pbmc68k_reduced")
    parser.add_argument("--masked", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS / "novelty"))
    args = parser.parse_args(argv)
    import scattn as sa

    sa.settings.progress_bar = False
    (task,) = load_tasks([args.dataset])
    masked_types = args.masked or DEFAULT_MASKED.get(args.dataset) or \
        list(task.adata.obs[task.labels_key].value_counts().index[:4])
    rows = []
    for i, masked in enumerate(masked_types):
        for seed in args.seeds:
            png = f"{args.out}_embedding.png" if i == 0 and seed == args.seeds[0] else None
            new = run_masked(task, masked, seed, max_epochs=args.max_epochs, embedding_png=png)
            rows += new
            print(pd.DataFrame(new).to_string(index=False), flush=True)
            pd.DataFrame(rows).to_csv(f"{args.out}_runs.csv", index=False)
    df = pd.DataFrame(rows)
    summary = (df.groupby(["dataset", "masked", "model", "threshold_rule"], sort=False)
               .agg(t=("t", "mean"), p_ref=("p_ref", "mean"), p=("p", "mean"), pval=("pval", "max"),
                    f1_unknown=("f1_unknown", "mean"), n_masked=("n_masked", "first"))
               .reset_index())
    write_results(summary, args.out, f"Masked-type novelty on {args.dataset} (seeds {args.seeds})")
    return summary


if __name__ == "__main__":
    main()
