"""CGRAN inference throughput (cells/s) on 10k real cells.

The model is trained for one epoch on the Kang 2018 PBMC control cells with k-means cluster
labels (8 clusters on the SVD of the log-normalised data; the labels only give the classifier
a target, throughput does not depend on them) and 1000 variable genes. It then predicts 10,000
cells: the first 10,000 of control + stimulated concatenated (cells the model did not train
on are folded in). Reported: ``predict`` end to end (gene alignment, inference, top-50
attention, markers) and the bare forward pass (``get_latent_representation``).

    python -m benchmarks.studies.cgran_throughput [--n-cells 10000] [--accelerator cpu]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from .._common import RESULTS, data_dir, write_results


def main(argv=None) -> pd.DataFrame:
    import anndata as ad
    import torch
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    import scattn as sa
    from scattn.data import log_normalize

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-cells", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args(argv)
    base = data_dir()
    if base is None:
        raise SystemExit("needs ../shared/data (kang2018_pbmc_*.h5ad)")
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    ctrl = ad.read_h5ad(base / "kang2018_pbmc_ctrl_unlabeled.h5ad")
    stim = ad.read_h5ad(base / "kang2018_pbmc_stim_unlabeled.h5ad")
    svd = TruncatedSVD(30, random_state=0).fit_transform(log_normalize(ctrl.X, "counts"))
    ctrl.obs["cluster"] = KMeans(8, n_init=4, random_state=0).fit_predict(svd).astype(str)
    sa.model.CGRAN.setup_anndata(ctrl, labels_key="cluster")
    model = sa.model.CGRAN(ctrl)
    model.train(max_epochs=1, accelerator=args.accelerator, early_stopping=False)
    query = ad.concat([ctrl, stim])[: args.n_cells].copy()
    query.obs_names_make_unique()
    rows = []
    t0 = time.perf_counter()
    model.predict(query, inplace=False, batch_size=args.batch_size)
    dt = time.perf_counter() - t0
    rows.append({"step": "predict (end to end)", "cells": query.n_obs, "seconds": dt, "cells_per_s": query.n_obs / dt})
    t0 = time.perf_counter()
    model.get_latent_representation(query, batch_size=args.batch_size)
    dt = time.perf_counter() - t0
    rows.append({"step": "forward only", "cells": query.n_obs, "seconds": dt, "cells_per_s": query.n_obs / dt})
    df = pd.DataFrame(rows)
    device = "cuda" if model.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    df["device"] = device
    out = RESULTS / f"cgran_throughput_{'gpu' if 'cuda' in device else 'cpu'}"
    write_results(df, out, f"CGRAN inference throughput, {query.n_obs} Kang 2018 PBMCs, 1000 genes, {device}")
    return df


if __name__ == "__main__":
    main()
