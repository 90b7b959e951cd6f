"""Summary tables and figures of a benchmark run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .methods import PEERS, SCATTN_MODELS

COSTS = ("train_s", "predict_s", "peak_mb")
FLOORS = {"train_s": 0.01, "predict_s": 0.01, "peak_mb": 1.0}  # 10 ms, 1 MiB


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean (sd) over seeds per task and method, plus each cost as a ratio to the best peer.

    ``<cost>_vs_best_peer`` divides a method's mean cost on a task by the smallest mean cost
    of any peer (scANVI, CellTypist, pytorch-tabnet, LR, linear SVM) on that task: the
    fastest peer for the times, the leanest for memory; costs under 10 ms or 1 MiB count as
    that floor. ``capped`` is the fraction of seeds whose training ran to the epoch cap.
    """
    ok = runs[runs["error"].isna()] if "error" in runs else runs
    if "capped" not in ok:
        ok = ok.assign(capped=False)
    table = (
        ok.groupby(["task", "method"], sort=False)
        .agg(n_seeds=("seed", "nunique"), capped=("capped", "mean"),
             accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"),
             macro_f1=("macro_f1", "mean"), macro_f1_sd=("macro_f1", "std"), median_f1=("median_f1", "mean"),
             epochs=("epochs", "mean"), train_s=("train_s", "mean"), predict_s=("predict_s", "mean"),
             peak_mb=("peak_mb", "mean"))
        .reset_index()
    )
    for cost in COSTS:
        # below these floors the measurement is noise (timer, allocator): divide by the floor
        floor = FLOORS[cost]
        best = table[table["method"].isin(PEERS)].groupby("task")[cost].min().clip(lower=floor)
        table[f"{cost}_vs_best_peer"] = table[cost].clip(lower=floor) / table["task"].map(best)
    return table


def summarize_markers(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method: precision@k and recall@k averaged over cell types and seeds, total hits."""
    return (rows.groupby("method", sort=False)
            .agg(n_types=("cell_type", "nunique"), precision_at_k=("precision_at_k", "mean"),
                 recall_at_k=("recall_at_k", "mean"), hits=("hits", "sum"),
                 n_reference=("n_reference", "sum"))
            .reset_index())


def _order(methods) -> list[str]:
    first = [m for m in (*SCATTN_MODELS, *PEERS) if m in set(methods)]
    return first + sorted(set(methods) - set(first))


def _colours(methods) -> dict[str, tuple]:
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(_order(methods))}


def _save_with_legend_below(fig, ax, *, ncol: int, bottom: float, path: str | Path) -> None:
    """One legend (``ax``'s entries) under the panels, then save and close ``fig``."""
    import matplotlib.pyplot as plt

    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_accuracy(table: pd.DataFrame, path: str | Path) -> None:
    """Accuracy and macro F1 per task and method, mean over seeds with sd bars."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(table["task"]))
    methods = _order(table["method"].unique())
    colours = _colours(methods)
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.6 * len(tasks)), 4.2), sharey=True)
    for ax, metric in zip(axes, ("accuracy", "macro_f1"), strict=True):
        for i, m in enumerate(methods):
            sub = table[table["method"] == m].set_index("task").reindex(tasks)
            x = np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width
            ax.bar(x, sub[metric], width, yerr=sub[f"{metric}_sd"].fillna(0), color=colours[m],
                   label=m, capsize=1.5, error_kw={"lw": 0.7})
        ax.set_xticks(np.arange(len(tasks)), [t.replace("_to_", "\n-> ").replace("_", " ") for t in tasks],
                      fontsize=8)
        ax.set_title({"accuracy": "Accuracy", "macro_f1": "Macro F1"}[metric])
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", lw=0.3)
    axes[0].set_ylabel("held-out cells (mean of seeds, sd bars)")
    _save_with_legend_below(fig, axes[0], ncol=len(methods), bottom=0.07, path=path)


def plot_costs(table: pd.DataFrame, path: str | Path) -> None:
    """Training time, prediction time and peak memory per method (log scale), one dot per task."""
    import matplotlib.pyplot as plt

    methods = _order(table["method"].unique())
    tasks = list(dict.fromkeys(table["task"]))
    markers = dict(zip(tasks, "osD^vP*Xh", strict=False))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    labels = {"train_s": "training time (s)", "predict_s": "prediction time (s)",
              "peak_mb": "peak memory above baseline (MiB)"}
    for ax, cost in zip(axes, COSTS, strict=True):
        for t in tasks:
            sub = table[table["task"] == t].set_index("method").reindex(methods)
            ax.scatter(sub[cost].clip(lower=1e-3), np.arange(len(methods)), marker=markers.get(t, "o"),
                       s=22, alpha=0.8, label=t)
        ax.set_xscale("log")
        ax.set_yticks(np.arange(len(methods)), methods if ax is axes[0] else [""] * len(methods))
        ax.invert_yaxis()
        ax.set_xlabel(labels[cost])
        ax.grid(lw=0.3)
    fig.suptitle("Cost per method (mean over seeds; each marker one task)", fontsize=10)
    _save_with_legend_below(fig, axes[0], ncol=len(tasks), bottom=0.06, path=path)
