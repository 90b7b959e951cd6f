"""The benchmark scripts' import graph, read from their source (no benchmark is imported): no
cycle between files, and the suite and the scale family do not import each other (only
``benchmarks._cli`` knows both; what they share is in the top-level ``benchmarks._*`` modules)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "benchmarks"


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in ROOT.rglob("*.py"):
        name = _name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("benchmarks"):
                    found |= {target} | {f"{target}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("benchmarks")}
        graph[name] = found
    modules = set(graph)
    return {m: {t for t in ts if t in modules and t != m} for m, ts in graph.items()}


def test_no_import_cycle_between_benchmark_files():
    graph = {m: {t for t in ts if not (ROOT.parent / t.replace(".", "/") / "__init__.py").exists()}
             for m, ts in _graph().items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*stack, nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, [start]):
            break
    assert not cycle, f"import cycle: {' -> '.join(cycle)}"


def _package(module: str) -> str:
    """``suite``, ``scale``, ``studies``, or ``shared`` for the top-level ``benchmarks._*`` modules."""
    part = module.split(".")[1] if module.count(".") else ""
    return "shared" if part.startswith("_") or not part else part


def test_suite_and_scale_do_not_import_each_other():
    """Only ``benchmarks._cli`` (``python -m benchmarks [--scale]``) knows both; what they share
    (budgets, data, time and memory, peers) is in the top-level ``benchmarks._*`` modules, which
    import none of the packages; the studies do not import the suite either."""
    allowed = {"suite": {"suite", "shared"}, "scale": {"scale", "studies", "shared"},
               "studies": {"studies", "shared"}, "shared": {"shared"}}
    wrong = [(m, t) for m, ts in _graph().items() if m not in ("benchmarks._cli", "benchmarks.__main__")
             for t in ts if _package(t) not in allowed[_package(m)]]
    assert not wrong, wrong
    assert {t for t in _graph()["benchmarks._cli"]} == {"benchmarks.scale.run", "benchmarks.suite.run"}


def test_upsert_runs_replaces_only_the_rerun_rows(tmp_path):
    import pandas as pd

    from benchmarks._common import upsert_runs

    path = tmp_path / "runs.csv"
    upsert_runs(path, pd.DataFrame({"task": ["a", "a", "b"], "seed": [0, 1, 0], "v": [1, 2, 3]}), ("task", "seed"))
    out = upsert_runs(path, pd.DataFrame({"task": ["a"], "seed": [1], "v": [9]}), ("task", "seed"))
    assert sorted(map(tuple, out[["task", "seed", "v"]].to_numpy().tolist())) == [("a", 0, 1), ("a", 1, 9), ("b", 0, 3)]
    assert pd.read_csv(path).shape == (3, 3)
