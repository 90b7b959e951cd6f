"""The scale family: prediction speed and peak memory at 10k, 100k and 1M cells, one process per method.

    python -m benchmarks --scale                      # 10k, 100k, 1M cells (hours at 1M on one thread)
    python -m benchmarks --scale --sizes 10000 100000 # some sizes; rows of other sizes already in the CSV stay
    python -m benchmarks --scale --quick              # 2k and 5k cells, 1,000 source cells per condition
    python -m benchmarks.scale ...                    # the same

What it does, each piece also a command of its own:

1. Data (:mod:`benchmarks.scale.make_data`): Kang 2018 cells resampled with replacement and
   binomially thinned to each size, 2,000 HVGs, raw counts, written chunk by chunk as h5ad
   (and zarr with ``--formats ... zarr``) under ``--out-dir``; made once, reused.
2. Models (:mod:`benchmarks.scale.train`): CFAN, SIMS, CGRAN, CellTypist and scANVI trained on
   the same ``--n-train`` (4,000) marker-labelled Kang cells, saved under ``<out-dir>/models``;
   trained once, reused (``--retrain``).
3. Measurements (:mod:`benchmarks.scale.child`): for each size, method, step and format, one
   fresh ``python -m benchmarks.scale.child`` process (so that each peak RSS is one method's):
   open the file and predict end to end (``predict``; scattn: ``model.predict(adata)``,
   attribution layer included), scattn's ``predict_proba`` (``proba``: inference without the
   attribution), and ``train-disk``: CFAN and SIMS set up on the backed file and trained one
   epoch from it. ``--threads`` (default ``$OMP_NUM_THREADS``, else 1) threads per process.
   A measurement whose estimated memory is over ``--mem-limit-gib`` is recorded as skipped
   (CellTypist's dense scaling at 1M cells), one that fails, is killed or passes
   ``--timeout-min`` as such, with the reason.

Outputs (``--out``, default ``benchmarks/results/scale``; ``--quick``: ``..._quick``)
    ``.csv`` (one row per size, method, step, format and threads per process, rewritten after
    every measurement; a new run replaces the rows it measures again and keeps the others, so
    runs with other ``--sizes`` or ``--threads`` add to the same file), ``.md`` (tables with the
    machine, threads and training set), ``.png`` (cells/s and peak RSS against cells, one row of
    panels per thread count, the 4 GiB line drawn). Process logs under ``<out-dir>/logs``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .._common import RESULTS, ROOT, markdown_table
from .child import STEPS, applies, estimate_gib
from .make_data import OUTPUT, SOURCE, data_path, size_label
from .train import METHODS

SIZES = {"default": (10_000, 100_000, 1_000_000), "quick": (2_000, 5_000)}
QUICK_SOURCE_CELLS = 1000  # per condition
QUICK_TRAIN = 600
RSS_LINE_GIB = 4.0
KEY = ["n_cells", "method", "step", "format", "threads"]
COLUMNS = ["n_cells", "size", "method", "step", "format", "status", "open_s", "run_s", "total_s",
           "cpu_s", "cells_per_s", "peak_gib", "start_gib", "step_peak_gib", "agreement", "attention_nnz",
           "setup_s", "init_s", "train_s", "epochs", "model_load_s", "threads", "load_1min", "reads", "still_backed",
           "process", "note", "machine", "date"]
COLOURS = {"CFAN": "#1b9e77", "SIMS": "#d95f02", "CGRAN": "#7570b3", "CellTypist": "#e7298a",
           "scANVI": "#66a61e"}


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kib = int(fh.readline().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores{mem}"


# -- running one measurement ----------------------------------------------------------------------
def _child(method, step, path, fmt, out_dir: Path, *, threads: int, timeout_min: float | None,
           in_process: bool) -> dict:
    """One measurement, in a fresh process (or in this one with `in_process`)."""
    if in_process:
        from .child import measure_one

        row = measure_one(method, step, path, fmt, out_dir)
        row["process"] = "in-process (peak RSS not per method)"
        return row
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(path).stem}_{method}_{step}_{fmt}"
    out_json, log = logs / f"{stem}.json", logs / f"{stem}.log"
    out_json.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "benchmarks.scale.child", "--method", method, "--step", step,
           "--data", str(path), "--format", fmt, "--out-dir", str(out_dir), "--json", str(out_json)]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(cmd, cwd=ROOT.parent, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=None if timeout_min is None else timeout_min * 60)
            rc = proc.returncode
        except subprocess.TimeoutExpired:  # subprocess.run has killed the child
            return {"status": "timed out", "note": f"killed after {timeout_min:g} min (--timeout-min); log {log}"}
    if rc == 0 and out_json.exists():
        row = json.loads(out_json.read_text())
        row["process"] = "own process"
        return row
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    last = (errors or lines or ["no output"])[-1][:300]
    if rc < 0:
        status, note = "killed", f"signal {-rc}{' (SIGKILL: out of memory?)' if rc == -9 else ''}"
    else:
        status, note = "failed", f"exit {rc}: {last}"
    return {"status": status, "note": f"{note}; after {time.perf_counter() - t0:.0f} s; log {log}"}


# -- results ----------------------------------------------------------------------------------
def _merge(table: pd.DataFrame, row: dict) -> pd.DataFrame:
    new = pd.DataFrame([row])
    if len(table):
        same = np.ones(len(table), dtype=bool)
        for k in KEY:
            if k in ("n_cells", "threads"):  # numbers: 1 and 1.0 are the same
                same &= pd.to_numeric(table[k], errors="coerce").to_numpy() == float(row[k])
            else:
                same &= table[k].astype(str).to_numpy() == str(row[k])
        table = table[~same]
    table = pd.concat([table, new], ignore_index=True) if len(table) else new
    for c in COLUMNS:
        if c not in table:
            table[c] = np.nan
    order = {m: i for i, m in enumerate(METHODS)}
    table = table.assign(_m=table["method"].map(order), _s=table["step"].map({s: i for i, s in enumerate(STEPS)}))
    table = table.sort_values(["_s", "threads", "n_cells", "_m", "format"]).drop(columns=["_m", "_s"])
    return table[COLUMNS + [c for c in table.columns if c not in COLUMNS]].reset_index(drop=True)


def _fmt(v, digits=1):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def write_markdown(table: pd.DataFrame, path: Path, *, header: str) -> None:
    lines = [header]
    titles = {"predict": "Prediction end to end (open the file + predict; scattn: `model.predict(adata)`, "
                         "attribution layer included)",
              "proba": "Inference without attribution (scattn `model.predict_proba(adata)`); "
                       "`attribution s` = predict run_s - proba run_s",
              "train-disk": "Training from disk: set-up + one epoch over the backed file (`max_epochs=1`, "
                            "`train_size=1.0`), scvi-tools data loaders"}
    for step in STEPS:
        part = table[table["step"] == step]
        if not len(part):
            continue
        rows = []
        for _, r in part.iterrows():
            out = {"cells": r["size"], "threads": _fmt(r["threads"], 0), "method": r["method"], "format": r["format"],
                   "open s": _fmt(r["open_s"]), "run s": _fmt(r["run_s"]), "total s": _fmt(r["total_s"]),
                   "CPU s": _fmt(r.get("cpu_s")), "load": _fmt(r.get("load_1min")), "cells/s": _fmt(r["cells_per_s"], 0), "peak GiB": _fmt(r["peak_gib"], 2),
                   "step peak GiB": _fmt(r["step_peak_gib"], 2)}
            if step == "proba":
                pred = table[(table["step"] == "predict") & (table["n_cells"] == r["n_cells"])
                             & (table["method"] == r["method"]) & (table["format"] == r["format"])
                             & (table["threads"] == r["threads"])]
                att = pred["run_s"].iloc[0] - r["run_s"] if len(pred) else np.nan
                out["attribution s"] = _fmt(float(att))
            if step == "train-disk":
                out.update({"set-up s": _fmt(r["setup_s"]), "model init s": _fmt(r["init_s"]),
                            "1 epoch s": _fmt(r["train_s"]),
                            "under 4 GiB": "" if pd.isna(r["peak_gib"]) else
                            ("yes" if r["peak_gib"] < RSS_LINE_GIB else "no")})
            else:
                out["agreement"] = _fmt(r["agreement"], 3)
            out["status"] = r["status"] if not r.get("note") or pd.isna(r["note"]) or r["status"] == "ok" \
                else f"{r['status']}: {str(r['note']).split('; log')[0]}"
            rows.append(out)
        lines.append(f"\n## {titles[step]}\n\n{markdown_table(pd.DataFrame(rows))}")
    reads = table.dropna(subset=["reads"]).drop_duplicates(["method", "step", "format"])
    lines.append("\n## How each method read the file\n")
    lines += [f"- {r['method']} ({r['step']}, {r['format']}): {r['reads']}" for _, r in reads.iterrows()]
    path.write_text("\n".join(lines) + "\n")


def plot(table: pd.DataFrame, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"]
    threads = sorted(pd.to_numeric(table["threads"], errors="coerce").dropna().astype(int).unique()) or [0]
    fig, grid = plt.subplots(len(threads), 2, figsize=(12, 4.8 * len(threads)), squeeze=False)
    styles = {("predict", "h5ad"): ("-", "o", ""), ("predict", "zarr"): (":", "D", " (zarr)"),
              ("train-disk", "h5ad"): ("--", "s", " train 1 epoch")}
    sizes = sorted(table["n_cells"].unique())
    seen = {}
    for axes, n_threads in zip(grid, threads, strict=True):
        rows = ok[pd.to_numeric(ok["threads"], errors="coerce") == n_threads] if len(threads) > 1 else ok
        for (method, step, fmt), part in rows.groupby(["method", "step", "format"], sort=False):
            if (step, fmt) not in styles:
                continue
            ls, marker, suffix = styles[step, fmt]
            part = part.sort_values("n_cells")
            kw = dict(ls=ls, marker=marker, color=COLOURS.get(method, "grey"), label=f"{method}{suffix}", lw=1.6, ms=5)
            (line,) = axes[0].plot(part["n_cells"], part["cells_per_s"], **kw)
            axes[1].plot(part["n_cells"], part["peak_gib"], **kw)
            seen.setdefault(kw["label"], line)
        axes[1].axhline(RSS_LINE_GIB, color="black", lw=1, ls="-.")
        axes[1].text(0.01, RSS_LINE_GIB, " 4 GiB", transform=axes[1].get_yaxis_transform(), va="bottom", fontsize=9)
        for ax, label in zip(axes, ("cells per second (open + predict; train: 1 epoch)",
                                    "peak RSS of the process (GiB)"), strict=True):
            ax.set_xscale("log")
            ax.set_xticks(sizes)
            ax.set_xticklabels([size_label(int(n)) for n in sizes])
            ax.minorticks_off()
            ax.set_xlabel("cells (Kang 2018 resampled)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if n_threads:
                ax.set_title(f"{n_threads} thread(s) per process", fontsize=9)
        axes[0].set_yscale("log")
        axes[1].set_ylim(bottom=0)
    bad = table[table["status"] != "ok"]
    if len(bad):
        notes = "; ".join(f"{r['method']} {r['step']} {r['size']}: {r['status']}" for _, r in bad.iterrows())
        fig.text(0.01, 0.01, f"not measured: {notes}", fontsize=7, wrap=True)
    fig.legend(list(seen.values()), list(seen), loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 / len(threads) if len(bad) else 0, 0.86, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the command ----------------------------------------------------------------------------------
def _prepare_data(sizes, formats, out_dir: Path, *, quick: bool, seed: int, in_process: bool) -> None:
    zarr = "zarr" in formats
    todo = [n for n in sizes if not data_path(out_dir, n).exists()
            or (zarr and not data_path(out_dir, n, "zarr").exists())]
    if not todo and (out_dir / SOURCE).exists():
        return
    argv = ["--out-dir", str(out_dir), "--seed", str(seed), "--n-cells", *map(str, todo or sizes[:1])]
    if zarr:
        argv.append("--zarr")
    if quick:
        argv += ["--source-cells", str(QUICK_SOURCE_CELLS), "--chunk-size", "1500"]
    _run_module("benchmarks.scale.make_data", argv, in_process)


def _run_module(module: str, argv: list[str], in_process: bool) -> None:
    if in_process:
        import importlib

        importlib.import_module(module).main(argv)
        return
    print(f"$ python -m {module} {' '.join(argv)}", flush=True)
    subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT.parent, check=True)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2k and 5k cells, small source and training set")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="cells per file (default 10k 100k 1M)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--formats", nargs="+", default=["h5ad"], choices=("h5ad", "zarr"),
                        help="zarr: also predict from the zarr store (scattn models, predict step)")
    parser.add_argument("--n-train", type=int, default=None, help="training cells (default 4000; --quick 600)")
    parser.add_argument("--max-epochs", type=int, default=None, help="one epoch cap for every model's training")
    parser.add_argument("--threads", type=int, default=None, help="threads per process (default $OMP_NUM_THREADS or 1)")
    parser.add_argument("--timeout-min", type=float, default=None, help="kill a measurement after this long")
    parser.add_argument("--mem-limit-gib", type=float, default=None,
                        help="skip a measurement whose estimated peak is above this (default: 80%% of RAM)")
    parser.add_argument("--out", default=None, help="results prefix (default benchmarks/results/scale)")
    parser.add_argument("--out-dir", default=None, help="data and models (default benchmarks/output/scale)")
    parser.add_argument("--fresh", action="store_true", help="start a new CSV instead of updating it")
    parser.add_argument("--retrain", action="store_true", help="train the models again")
    parser.add_argument("--in-process", action="store_true",
                        help="everything in this process (tests, debugging): peak RSS is then not per method")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    mode = "quick" if args.quick else "default"
    sizes = sorted(args.sizes or SIZES[mode])
    out = Path(args.out or RESULTS / ("scale_quick" if args.quick else "scale"))
    out_dir = Path(args.out_dir or (OUTPUT.parent / ("scale_quick" if args.quick else "scale")))
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or 1)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the in-process pieces follow it too
    mem_limit = args.mem_limit_gib
    if mem_limit is None:
        try:
            mem_limit = 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError, AttributeError):
            mem_limit = 16.0
    out.parent.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    _prepare_data(sizes, args.formats, out_dir, quick=args.quick, seed=args.seed, in_process=args.in_process)
    needed = [m for m in args.methods if any(s in ("predict", "proba") for s in args.steps)]
    n_train = args.n_train or (QUICK_TRAIN if args.quick else 4000)
    train_argv = ["--out-dir", str(out_dir), "--n-train", str(n_train), "--seed", str(args.seed),
                  "--methods", *needed]
    if args.max_epochs is not None:
        train_argv += ["--max-epochs", str(args.max_epochs)]
    elif args.quick:
        train_argv += ["--max-epochs", "2"]
    if args.retrain:
        train_argv.append("--retrain")
    if needed:
        _run_module("benchmarks.scale.train", train_argv, args.in_process)
    info_path = out_dir / "models" / "train_info.json"
    train_info = json.loads(info_path.read_text()) if info_path.exists() else {}

    csv = Path(f"{out}.csv")
    table = pd.read_csv(csv) if csv.exists() and not args.fresh else pd.DataFrame(columns=COLUMNS)
    host, today = machine(), datetime.date.today().isoformat()
    header = _header(train_info, host, threads, args, out_dir)
    for n in sizes:
        h5 = data_path(out_dir, n)
        for step in STEPS:
            if step not in args.steps:
                continue
            for method in args.methods:
                for fmt in args.formats:
                    if not applies(method, step, fmt):
                        continue
                    if step in ("predict", "proba") and method not in train_info:
                        continue
                    path = data_path(out_dir, n, fmt)
                    base = {"n_cells": n, "size": size_label(n), "method": method, "step": step, "format": fmt,
                            "threads": threads, "machine": host, "date": today}
                    est = estimate_gib(method, step, n, 2000)
                    if est > mem_limit:
                        row = {"status": "skipped", "note": f"estimated peak {est:.0f} GiB > --mem-limit-gib "
                               f"{mem_limit:.0f} (dense float64 scaling of cells x genes)"}
                    else:
                        print(f"[{size_label(n)}] {method} {step} ({fmt}) ...", flush=True)
                        row = _child(method, step, path if fmt == "zarr" else h5, fmt, out_dir, threads=threads,
                                     timeout_min=args.timeout_min, in_process=args.in_process)
                    row = {**row, **base}
                    table = _merge(table, row)
                    table.to_csv(csv, index=False)
                    write_markdown(table, Path(f"{out}.md"), header=header)
                    plot(table, Path(f"{out}.png"), title=_plot_title(host))
                    print(f"    {row['status']}: " + (f"total {row['total_s']:.1f} s, {row['cells_per_s']:,.0f} "
                          f"cells/s, peak {row['peak_gib']:.2f} GiB" if row["status"] == "ok" else row["note"]),
                          flush=True)
    print(f"scale: {(time.perf_counter() - t_start) / 60:.1f} min; wrote {out}.csv/.md/.png", flush=True)
    return table


def _plot_title(host: str) -> str:
    return f"Kang 2018 PBMCs resampled (2,000 genes); one process per method; {host}"


def _header(train_info: dict, host: str, threads: int, args, out_dir: Path) -> str:
    lines = ["# Scale: prediction speed and peak memory, 10k to 1M cells\n",
             f"Machine: {host}; `threads`: threads per process (`--threads`, `OMP_NUM_THREADS`); every "
             "measurement in a "
             "fresh process (`python -m benchmarks.scale.child`), peak RSS = that process' "
             "`ru_maxrss` (imports and model included; `step peak` = above the RSS just before the data "
             "were opened). `CPU s`: the process' user + system CPU seconds over open + run (with one thread "
             "about the wall time on an idle machine); `load`: the machine's 1-minute load average when the "
             "measurement started (on a shared machine other work slows the wall times: compare `CPU s`). "
             "Command: `python -m benchmarks --scale` (`benchmarks/scale/`).\n",
             "**Data**: not real 1M-cell data: the 13,999 Kang 2018 PBMCs (control + IFN-beta stimulated, "
             "`../shared/data`) on their 2,000 HVGs, **resampled with replacement and binomially thinned** "
             "(each count c -> Binomial(c, p), p ~ U(0.7, 1) per cell) to each size, raw counts, CSR float32, "
             "written chunk by chunk (`benchmarks/scale/make_data.py`). `agreement`: fraction of cells whose "
             "prediction equals their source cell's marker label (a sanity check that the models predict "
             "something sensible, not an accuracy: training cells are among the sources).\n"]
    if train_info:
        parts = []
        for m, r in train_info.items():
            parts.append(f"{m} ({r.get('train_args')}, {r.get('epochs')} epochs, {r.get('n_model_genes')} genes, "
                         f"{float(r.get('train_s', np.nan)):.0f} s)")
        first = next(iter(train_info.values()))
        lines.append(f"**Models** (as of the last run, {threads} thread(s)): trained once on "
                     f"{first.get('n_train')} marker-labelled Kang cells "
                     f"({len(first.get('classes', []))} classes; `benchmarks/scale/train.py`): "
                     + "; ".join(parts) + ".\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
