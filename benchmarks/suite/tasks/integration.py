"""The integration family: embed and reconstruct counts, mix batches, keep cell types apart.

Tasks
    :data:`TASKS`: paul15 (no batches), CellBench CEL-seq2 + Drop-seq (two batches), the panc8
    integer-count technologies (inDrop, Smart-seq2) as batches; 2,000 variable genes
    (:func:`benchmarks._integration.load_integration_tasks`). One stratified 80/20 split of the
    cells per seed: the models train on 80%, the held-out 20% score the likelihood.
Methods
    scViT (``sa.model.SCVIT``, defaults), SCGPT (``sa.model.SCGPT`` from scratch, its
    integration fine-tuning: GEP, GEPC, ECS, DAR with batches; ``--max-epochs`` caps it, else
    its own budget), scVI, PCA (HVG, scaled, 10 components).
Scores
    Held-out negative log-likelihood per cell (scVI and scViT), 15-NN cell-type accuracy on
    the latent (5-fold), an MLP on the latent (the scViT report's protocol), training time per
    epoch and peak memory with their ratios to scVI's, and with batches scib-metrics' bio
    conservation, batch correction and total.
Outputs (under ``--out`` + ``_integration``)
    ``_runs.csv``, ``.csv``/``.md`` (summary).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..._common import markdown_table, splits
from ..._integration import (
    IntegrationTask,
    evaluate_split,
    integration_scores,
    load_integration_tasks,
)
from ._family import Family, RunSettings

TASKS = ("integration_paul15", "integration_cellbench", "integration_panc8")
QUICK = ("integration_cellbench",)
#: epochs of scVI and scViT per run mode (the same for both)
EPOCHS = {"default": 100, "quick": 10, "full": 400}


@dataclass
class Problem:
    task: str
    seed: int
    data: IntegrationTask
    train: np.ndarray
    test: np.ndarray


def problems(tasks: list[str], settings: RunSettings) -> Iterator[tuple[Problem, str]]:
    """One 80/20 split per seed of each asked dataset that is present."""
    names = [t.removeprefix("integration_") for t in tasks]
    for data in load_integration_tasks(names):
        labels = data.adata.obs["cell_type"].to_numpy()
        for seed, train, test in splits(labels, seeds=settings.seeds):
            yield (Problem(f"integration_{data.name}", seed, data, train, test),
                   f"{data.name}: {data.adata.n_obs} cells x {data.adata.n_vars} genes, {data.note}")


def _epochs(settings: RunSettings, method: str) -> int | None:
    # SCGPT counts its own budget in steps unless capped (the VAEs' epoch counts would be
    # hours of transformer training)
    default = None if method == "SCGPT" else EPOCHS[settings.mode]
    return settings.budget.get(method, {}).get("max_epochs", default)


def run(problem: Problem, note: str, methods: list[str], settings: RunSettings) -> tuple[list[dict], list[dict]]:
    """Fit every method on one split; score latents, held-out likelihood and cost."""
    print(f"[{problem.task} seed {problem.seed}] {note}", flush=True)
    rows, latents = evaluate_split(problem.data, problem.train, problem.test,
                                   dict.fromkeys(methods), seed=problem.seed,
                                   epochs={m: _epochs(settings, m) for m in methods})
    for row in rows:
        row.update(task=problem.task, seed=problem.seed)
    scores = integration_scores(problem.data, latents)
    if scores is not None:
        for row in rows:
            for col in ("Bio conservation", "Batch correction", "Total"):
                if col in scores:
                    row[col] = float(scores.loc[row["method"], col])
    return rows, []


def report(rows: list[dict], extra_rows: list[dict], settings: RunSettings, header: str) -> pd.DataFrame:
    """Write the runs and the summary (means over seeds); return the summary."""
    out = FAMILY.prefix(settings.out)
    runs = pd.DataFrame(rows)
    runs.to_csv(f"{out}_runs.csv", index=False)
    cols = [c for c in ("heldout_nll", "knn_acc", "mlp_acc", "Bio conservation", "Batch correction",
                        "Total", "s_per_epoch", "s_per_epoch_vs_scvi", "peak_mb", "peak_mb_vs_scvi")
            if c in runs]
    table = runs.groupby(["task", "method"], sort=False)[cols].mean().round(4).reset_index()
    table.to_csv(f"{out}.csv", index=False)
    Path(f"{out}.md").write_text(
        header + "## Integration and reconstruction\n\nscVI and scViT train the same epochs "
        f"({EPOCHS[settings.mode]} unless capped) on 80% of the cells; heldout_nll per held-out "
        "cell (lower is better); knn_acc 15-NN 5-fold, mlp_acc MLP on the latent; scib-metrics "
        "scores where there are batches; ratios to scVI in the same run.\n\n" + markdown_table(table))
    print(table.to_string(index=False))
    return table


# scVI first: the first fit of a process pays one-time costs, and scVI is the reference
METHODS = {"scVI": "scvi", "scViT": "scattn", "SCGPT": "scattn", "PCA": "scanpy"}
FAMILY = Family(name="integration", tasks=TASKS, quick_tasks=QUICK, extra_tasks=(), methods=METHODS,
                problems=problems, run=run, report=report, suffix="_integration")
