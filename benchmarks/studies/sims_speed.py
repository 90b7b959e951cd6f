"""Training time per epoch of SIMS and of the reference pytorch-tabnet, in one process.

Both train the same architecture (n_d = n_a = 8, 3 steps, ghost batches of 128) on the same
log-normalised cells and genes for a fixed number of epochs (no early stopping), with the same
minibatch size and a 10% validation set evaluated every epoch. Runs alternate between the two
implementations (``--repeats`` each) and the median epoch time is reported, with the ratio
SIMS / pytorch-tabnet. Peak resident memory of the process is not separable per method here;
see the accuracy benchmark for end-to-end times.

    python -m benchmarks.studies.sims_speed [--datasets pbmc68k_reduced paul15] [--epochs 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from .._common import RESULTS, load_tasks, lognorm_matrix, write_results
from .._peers import tabnet_classifier


def time_sims(task, epochs: int, batch_size: int) -> float:
    import scattn as sa

    adata = task.adata.copy()
    sa.model.SIMS.setup_anndata(adata, labels_key=task.labels_key, expression=task.expression)
    model = sa.model.SIMS(adata)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=batch_size, early_stopping=False)
    return (time.perf_counter() - t0) / epochs


def time_tabnet(task, epochs: int, batch_size: int) -> float:
    from sklearn.model_selection import train_test_split

    x = np.asarray(lognorm_matrix(task.adata, task.expression).todense(), dtype=np.float32)
    y = task.adata.obs[task.labels_key].astype(str).to_numpy()
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.1, stratify=y, random_state=0)
    clf = tabnet_classifier(0)
    t0 = time.perf_counter()
    # x is densified before the clock starts; patience larger than epochs: no early stop
    clf.fit(x_tr, y_tr, eval_set=[(x_va, y_va)], eval_metric=["logloss"], max_epochs=epochs,
            patience=epochs + 1, batch_size=batch_size, virtual_batch_size=128, drop_last=False)
    return (time.perf_counter() - t0) / epochs


def main(argv=None) -> pd.DataFrame:
    import scattn as sa
    from scattn.model._sims import default_batch_size

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="*", default=["pbmc68k_reduced", "paul15"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "sims_speed"))
    args = parser.parse_args(argv)
    sa.settings.progress_bar = False
    sa.settings.seed = 0
    rows = []
    for task in load_tasks(args.datasets):
        batch_size = default_batch_size(int(0.9 * task.adata.n_obs))
        times = {"SIMS": [], "pytorch-tabnet": []}
        for _ in range(args.repeats):
            times["SIMS"].append(time_sims(task, args.epochs, batch_size))
            times["pytorch-tabnet"].append(time_tabnet(task, args.epochs, batch_size))
        sims, ref = np.median(times["SIMS"]), np.median(times["pytorch-tabnet"])
        rows.append(dict(dataset=task.name, n_cells=task.adata.n_obs, n_genes=task.adata.n_vars,
                         batch_size=batch_size, sims_s_per_epoch=sims, tabnet_s_per_epoch=ref,
                         ratio_sims_to_tabnet=sims / ref))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    write_results(table, args.out, f"SIMS vs pytorch-tabnet: seconds per epoch ({args.epochs} epochs, "
                                   f"median of {args.repeats} alternating runs, CPU)")
    return table


if __name__ == "__main__":
    main()
