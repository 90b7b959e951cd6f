"""The package's import rules, read from its source: no cycles, layers import downwards only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "scattn"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """scattn module -> the scattn modules it imports (anywhere in the file, lazy ones too)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("scattn"):
                    found.add(target)
                    found.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("scattn"))
        graph[name] = found
    modules = set(graph)
    return {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_layers_import_downwards_only():
    forbidden = {"model": {"tl", "pl"}, "module": {"data", "model", "tl", "pl", "train"},
                 "nn": {"data", "model", "module", "tl", "pl", "train"},
                 "data": {"model", "module", "tl", "pl", "train"}, "train": {"model", "tl", "pl"}}
    bad = [(m, t) for m, targets in _imports().items() for t in targets
           if _layer(t) in forbidden.get(_layer(m), set())]
    assert not bad, f"imports against the layering: {bad}"


def test_no_import_cycles_between_files():
    graph = {m: {t for t in ts if not PACKAGE.joinpath(*t.split(".")[1:], "__init__.py").exists()}
             for m, ts in _imports().items()
             if not PACKAGE.joinpath(*m.split(".")[1:], "__init__.py").exists()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_imports():
    graph = _imports()
    assert "scattn.module._base" in graph["scattn.module._cfan"]
    assert "scattn.nn" in graph["scattn.module._base"]


#: the package's shared internals: top-level private modules any subpackage may import
SHARED_INTERNALS = {"_settings", "_docs", "_quiet", "_write", "_read", "_constants", "_progress",
                    "_attribution", "_compat", "_version"}


def _private_imports_across_subpackages() -> list[tuple[str, str, list[str]]]:
    """(file, imported module, names) for every import of a private module or name of another
    scattn subpackage (relative imports resolved)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        mine = _layer(name) if path.parent != PACKAGE else ""
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            parts = target.split(".")
            if parts[0] != "scattn" or len(parts) < 2 or parts[1] == mine:
                continue
            names = [a.name for a in node.names]
            private_names = any(n.startswith("_") and not n.startswith("__") and n not in SHARED_INTERNALS
                                for n in names)
            if parts[1] in SHARED_INTERNALS and not private_names:
                continue
            if any(p.startswith("_") for p in parts[2:]) or private_names:
                found.append((str(path.relative_to(PACKAGE.parent)), target, names))
    return found


def test_private_names_stay_in_their_subpackage():
    """A subpackage uses another's public names only (re-exported in its ``__init__``); what
    several share lives in a top-level internal module (``scattn._read``, ``scattn._write``...)."""
    bad = _private_imports_across_subpackages()
    assert not bad, f"private names imported across subpackages: {bad}"
