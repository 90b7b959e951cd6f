"""Train scattn classifiers with Lightning's DDP on CPU and write what came out (for tests/test_ddp.py).

    OMP_NUM_THREADS=1 python tests/ddp_train.py OUT_DIR --mode ddp     # two processes
    OMP_NUM_THREADS=1 python tests/ddp_train.py OUT_DIR --mode single  # the reference

A script, not a test: with ``strategy="ddp"`` Lightning starts the second process by running
this file again (same arguments, ``LOCAL_RANK=1`` in its environment), so the script is the
unit that runs under DDP. On scanpy's bundled ``pbmc68k_reduced`` (700 cells,
log-normalised, 11 ``louvain`` clusters; a quarter of the cells held out as unlabelled):

* ``--mode single``: a CFAN trained in one process, 32 cells a minibatch; writes
  ``single.json`` (held-out accuracy, last validation loss, cells per epoch, time).
* ``--mode ddp``: in both processes, the same CFAN trained with ``devices=2,
  strategy="ddp"`` and 16 cells a minibatch per process (32 per optimiser step, as in one
  process); then a SIMS under DDP with early stopping set to stop after its second epoch
  (SIMS classifying leaves its decoder out of the loss, so DDP must look for unused
  parameters). Every process writes ``rank<r>.json`` (world size and rank seen inside
  training, cells seen per epoch, epochs run); rank 0 also writes ``ddp.json`` (held-out
  accuracy, last validation loss, time), then waits for the other process to exit.

The two modes are independent processes, so a caller can run them at the same time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class Seen(Callback):
    """Records, inside the training processes, the world size, the rank and the cells of
    every training epoch."""

    def __init__(self) -> None:
        self.cells: list[int] = []
        self.world_size = self.rank = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.world_size, self.rank = trainer.world_size, trainer.global_rank
        self.cells.append(0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from scvi import REGISTRY_KEYS

        self.cells[-1] += int(batch[REGISTRY_KEYS.X_KEY].shape[0])

    def as_dict(self) -> dict:
        return {"world_size": self.world_size, "rank": self.rank, "cells_per_epoch": self.cells,
                "epochs": len(self.cells)}


def load_data():
    """pbmc68k_reduced with a quarter of the cells' labels hidden (held out)."""
    import numpy as np

    import scattn as sa

    adata = sa.datasets.pbmc68k_reduced()
    truth = adata.obs["louvain"].astype(str).to_numpy()
    held_out = np.random.default_rng(0).random(adata.n_obs) < 0.25
    labels = truth.copy()
    labels[held_out] = "Unknown"
    adata.obs["label"] = labels
    return adata, truth, held_out


def fit_cfan(adata, truth, held_out, *, epochs: int, n_top_genes: int, **train_kwargs) -> dict:
    import numpy as np

    import scattn as sa

    sa.model.CFAN.setup_anndata(adata, labels_key="label", expression="log1p")
    model = sa.model.CFAN(adata, n_top_genes=n_top_genes, n_extractors=4, n_features=16, n_qk=8,
                          n_values=8, conv_channels=4)
    seen = Seen()
    start = time.perf_counter()
    model.train(max_epochs=epochs, accelerator="cpu", early_stopping=False,
                check_val_every_n_epoch=1, callbacks=[seen], **train_kwargs)
    out = {"seconds": time.perf_counter() - start, "is_trained": bool(model.is_trained_),
           "history_keys": sorted(model.history or {}), **seen.as_dict()}
    if model.trainer.is_global_zero:  # rank 0 holds the history (and the model to use)
        out["validation_loss"] = float(model.history["validation_loss"].iloc[-1, 0])
        proba = model.predict_proba(adata)
        predicted = proba.columns.to_numpy()[proba.to_numpy().argmax(1)]
        out["accuracy"] = float(np.mean(predicted[held_out] == truth[held_out]))
    return out, model


def fit_sims_early_stopping(adata) -> dict:
    import scattn as sa

    sa.model.SIMS.setup_anndata(adata, labels_key="label", expression="log1p")
    model = sa.model.SIMS(adata, n_d=8, n_a=8, n_steps=2, virtual_batch_size=16)
    seen = Seen()
    # the first epoch improves on nothing; no later one can improve by 1e9: stops after epoch 2
    model.train(max_epochs=20, batch_size=32, accelerator="cpu", devices=2, strategy="ddp",
                early_stopping=True, early_stopping_patience=1, early_stopping_min_delta=1e9,
                callbacks=[seen])
    return {"is_trained": bool(model.is_trained_), **seen.as_dict()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--mode", choices=("single", "ddp"), required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-top-genes", type=int, default=300)
    args = parser.parse_args(argv)

    import scattn as sa

    sa.settings.seed = 0
    sa.settings.progress_bar = False
    adata, truth, held_out = load_data()
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"n_cells": int(adata.n_obs), "n_held_out": int(held_out.sum()),
            "chance": float(max((truth[held_out] == c).mean() for c in set(truth)))}
    if args.mode == "single":
        single, _ = fit_cfan(adata, truth, held_out, epochs=args.epochs,
                             n_top_genes=args.n_top_genes, devices=1, batch_size=32)
        (args.out / "single.json").write_text(json.dumps({**info, **single}, indent=1))
        return
    cfan, model = fit_cfan(adata.copy(), truth, held_out, epochs=args.epochs,
                           n_top_genes=args.n_top_genes, devices=2, strategy="ddp", batch_size=16)
    # the processes Lightning started for this run (the next DDP run reuses them)
    children = list(getattr(model.trainer.strategy.launcher, "procs", None) or [])
    sims = fit_sims_early_stopping(adata.copy())
    rank = model.trainer.global_rank
    (args.out / f"rank{rank}.json").write_text(json.dumps({"cfan": cfan, "sims": sims}, indent=1))
    if rank == 0:
        (args.out / "ddp.json").write_text(json.dumps({**info, **cfan}, indent=1))
        for proc in children:  # never leave the other process behind (or unreaped)
            proc.wait(timeout=120)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
