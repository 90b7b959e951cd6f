"""What a task family gives the runner (see :mod:`benchmarks.suite.tasks`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..._common import markdown_table


@dataclass(frozen=True)
class RunSettings:
    """What one ``python -m benchmarks`` run asks of every family."""

    mode: str  # "default", "quick" or "full"
    seeds: list[int]
    budget: dict[str, dict]  # training arguments per method (empty: the method's defaults)
    max_cells: int | None  # subsample larger datasets to this many cells
    k: int  # markers scored per cell type
    out: str  # output prefix (``--out``)


@dataclass(frozen=True)
class Family:
    """One task family: its tasks, methods, how one problem is run and how a run is reported."""

    name: str
    tasks: tuple[str, ...]  # the default (and --full) run's tasks
    quick_tasks: tuple[str, ...]  # --quick
    extra_tasks: tuple[str, ...]  # accepted by --tasks, left out by default
    methods: Mapping[str, Callable]
    problems: Callable[[list[str], RunSettings], Iterable[tuple[Any, str]]]
    run: Callable[[Any, str, list[str], RunSettings], tuple[list[dict], list[dict]]]
    report: Callable[[list[dict], list[dict], RunSettings, str], pd.DataFrame]
    suffix: str = ""  # appended to --out for this family's files

    @property
    def all_tasks(self) -> tuple[str, ...]:
        return self.tasks + self.extra_tasks

    def prefix(self, out: str) -> str:
        """Where this family's files go: ``<out><suffix>`` (``_runs.csv``, ``.md``, ...)."""
        return f"{out}{self.suffix}"


def write_runs_and_summary(family: Family, rows: list[dict], settings: RunSettings, header: str,
                           summarize: Callable[[pd.DataFrame], pd.DataFrame], note: str = "") -> pd.DataFrame:
    """A family's report: its runs (``<out><suffix>_runs.csv``), their summary (`summarize`:
    ``.csv``) and the summary under `header` and `note` (``.md``); the summary is printed and
    returned (empty without runs)."""
    out = family.prefix(settings.out)
    runs = pd.DataFrame(rows)
    runs.to_csv(f"{out}_runs.csv", index=False)
    table = summarize(runs) if len(runs) else pd.DataFrame()
    table.to_csv(f"{out}.csv", index=False)
    Path(f"{out}.md").write_text(header + note + markdown_table(table) if len(table) else header)
    if len(table):
        print(table.to_string(index=False))
    return table
