"""Training with Lightning's DDP: two CPU processes train a model as well as one process does.

``strategy="ddp"`` makes Lightning run the calling script again for the second process, so
the training runs in ``tests/ddp_train.py`` as a subprocess (its own session, so that nothing
it starts can outlive the test); the one-process reference runs beside it at the same time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).with_name("ddp_train.py")
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds; about 30 on an idle 2-core machine


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp)  # to see what the run leaves in the temporary folder
    # one thread per process: two DDP processes on two cores (numba's OpenMP pool, which
    # scanpy's gene statistics start, would otherwise raise torch's threads to the core count)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "PL_GLOBAL_SEED"):  # a DDP run's own variables, never inherited
        env.pop(key, None)
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run ``ddp_train.py`` in both modes at once; return (out dir, {mode: (rc, output, left
    behind)}, seconds)."""
    out = tmp_path_factory.mktemp("ddp")
    for mode in ("ddp", "single"):
        (out / f"tmp_{mode}").mkdir()
    start = time.perf_counter()
    procs = {}
    for mode in ("ddp", "single"):
        with open(out / f"{mode}.log", "w") as log:  # a file, never a pipe that could fill
            procs[mode] = subprocess.Popen(
                [sys.executable, str(SCRIPT), str(out), "--mode", mode], cwd=out,
                env=_env(out / f"tmp_{mode}"), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
    runs = {}
    try:
        for mode, proc in procs.items():
            note = ""
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                note = f"\n[timed out after {TIMEOUT} s]"
            # the session's processes (the second DDP rank) must all have exited with it
            left_behind = _group_alive(proc.pid)
            runs[mode] = (proc.returncode, (out / f"{mode}.log").read_text() + note, left_behind)
    finally:
        for proc in procs.values():  # whatever happened, nothing of ours keeps running
            if _group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait()
    return out, runs, time.perf_counter() - start


def _read(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


@pytest.mark.slow
def test_ddp_runs_end_cleanly(ddp_run):
    out, runs, seconds = ddp_run
    for mode, (rc, output, left_behind) in runs.items():
        assert rc == 0, f"{mode} run failed:\n{output[-4000:]}"
        assert not left_behind, f"the {mode} run left processes behind"
    print(f"DDP test runs took {seconds:.1f} s")
    # no logs in the working directory, nothing of scattn's in the temporary one
    assert not [p.name for p in out.iterdir() if p.name in ("lightning_logs", "scvi_log")]
    assert not list(out.glob("tmp_*/scattn-*"))


@pytest.mark.slow
def test_both_ranks_trained_their_half(ddp_run):
    out, _, _ = ddp_run
    ranks = [_read(out, f"rank{r}.json") for r in (0, 1)]
    single = _read(out, "single.json")
    assert single["world_size"] == 1
    n_train = single["cells_per_epoch"][0]
    for r, info in enumerate(ranks):
        cfan = info["cfan"]
        assert (cfan["world_size"], cfan["rank"]) == (2, r)
        assert cfan["is_trained"] and cfan["epochs"] == single["epochs"]
        # scvi-tools' distributed sampler: each process sees its half of every epoch's cells
        assert all(abs(c - n_train / 2) <= 1 for c in cfan["cells_per_epoch"])
    # only rank 0 keeps the history; every rank has the trained weights
    assert "validation_loss" in ranks[0]["cfan"]["history_keys"]
    assert ranks[1]["cfan"]["history_keys"] == []


@pytest.mark.slow
def test_ddp_model_is_as_good_as_one_process(ddp_run):
    out, _, _ = ddp_run
    single, ddp = _read(out, "single.json"), _read(out, "ddp.json")
    # held-out cells (labels hidden from training); 11 clusters, the largest about 20%
    assert single["accuracy"] > single["chance"] + 0.4
    assert ddp["accuracy"] > ddp["chance"] + 0.4
    assert ddp["accuracy"] >= single["accuracy"] - 0.1
    # the validation loss is averaged over both processes' validation cells
    assert ddp["validation_loss"] <= 1.5 * single["validation_loss"]


@pytest.mark.slow
def test_early_stopping_stops_every_rank_together(ddp_run):
    out, _, _ = ddp_run
    sims = [_read(out, f"rank{r}.json")["sims"] for r in (0, 1)]
    # SIMS classifying leaves its decoder unused: DDP runs with find_unused_parameters
    assert all(s["is_trained"] and s["world_size"] == 2 for s in sims)
    assert [s["epochs"] for s in sims] == [2, 2]  # of max_epochs=20


def test_ddp_from_pytest_is_a_clear_error():
    import scattn as sa
    from tests.conftest import TINY_CFAN, make_counts

    adata = make_counts(n_cells=30)
    sa.model.CFAN.setup_anndata(adata, labels_key="cell_type", layer="counts")
    model = sa.model.CFAN(adata, **TINY_CFAN)
    with pytest.raises(ValueError, match="training script"):
        model.train(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp")
    assert not model.is_trained_


def test_strategies_scattn_reads():
    from lightning.pytorch.strategies import DDPStrategy

    from scattn.train._runner import (
        _ddp_start_method,
        _default_strategy,
        _with_unused_parameters,
    )

    assert _ddp_start_method("ddp") == "popen"
    assert _ddp_start_method("ddp_spawn") == "spawn"
    assert _ddp_start_method("ddp_notebook") == "fork"
    assert _ddp_start_method(DDPStrategy(start_method="spawn")) == "spawn"
    assert _ddp_start_method("auto") is None and _ddp_start_method(None) is None
    # a module with several objectives leaves some parameters out of each loss
    two, one = SimpleNamespace(objectives=("a", "b")), SimpleNamespace(objectives=("a",))
    strategy = _with_unused_parameters("ddp", "popen", two)
    assert isinstance(strategy, DDPStrategy) and strategy._ddp_kwargs["find_unused_parameters"]
    assert _with_unused_parameters("ddp", "popen", one) == "ddp"
    assert _with_unused_parameters("ddp_find_unused_parameters_false", "popen", two) == (
        "ddp_find_unused_parameters_false")
    # several CPU processes without a strategy: DDP with scvi-tools' distributed sampler
    assert _default_strategy("cpu", 2) == "ddp"
    assert _default_strategy("cpu", 1) is None and _default_strategy("cpu", "auto") is None


def test_step_budgets_count_each_process_share():
    """Defaults counted in optimiser steps (SIMS' batch size and patiences, Geneformer's and
    SCGPT's epochs and patience) see each DDP process's share of the cells: two processes take
    half the steps per epoch, so a small set gets twice the epochs, as one process would."""
    import math

    from scattn.model import SIMS
    from scattn.train import StepBudget, n_training_processes, steps_per_epoch

    assert n_training_processes({}) == 1
    assert n_training_processes({"accelerator": "cpu", "devices": 2}) == 2
    assert n_training_processes({"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}) == 2
    assert n_training_processes({"accelerator": "cpu", "devices": 2, "strategy": "ddp", "num_nodes": 3}) == 6
    assert n_training_processes({"accelerator": "cpu", "devices": 2, "strategy": "single_device"}) == 1
    assert n_training_processes({"accelerator": "cpu", "devices": 1, "strategy": "ddp"}) == 1

    one = SIMS._steps_per_epoch(2000, 0.9, None, 64)
    two = SIMS._steps_per_epoch(2000, 0.9, None, 64, n_processes=2)
    assert (one, two) == (math.ceil(1800 / 64), math.ceil(900 / 64))
    # 66 cells in two processes are 33 each: a last minibatch of one cell, dropped (batch norm)
    assert not SIMS._drop_last(66, 1.0, None, 32) and SIMS._drop_last(66, 1.0, None, 32, n_processes=2)
    assert SIMS._steps_per_epoch(66, 1.0, None, 32, n_processes=2) == 1
    # the default batch size halves until *each process* has >= 8 minibatches an epoch
    assert SIMS._batch_size_for(4000, 0.9, None) == 256
    assert SIMS._batch_size_for(4000, 0.9, None, n_processes=2) == 128
    # 270 training cells: 3 steps an epoch in one process, 2 in each of two; 300 steps and a
    # patience of 100 steps make (100, 34) and (150, 50) epochs
    one, two = steps_per_epoch(300, 0.9, None, 128), steps_per_epoch(300, 0.9, None, 128, n_processes=2)
    assert (one, two) == (3, 2)
    assert (StepBudget(30, 300).resolve(one), StepBudget(5, 100).resolve(one)) == (100, 34)
    assert (StepBudget(30, 300).resolve(two), StepBudget(5, 100).resolve(two)) == (150, 50)
