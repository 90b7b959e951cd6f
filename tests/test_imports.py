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


#: the package's shared internals: top-level private modules any subpackage may import (their
#: public names only)
SHARED_INTERNALS = {"_settings", "_docs", "_quiet", "_write", "_read", "_constants", "_progress",
                    "_attribution", "_compat", "_version", "_deprecate"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_imports(path: Path, source: str) -> list[tuple[str, str, list[str]]]:
    """(file, imported module, names) for every import in `source` (the file at `path` under
    the package) of a private module or name of another scattn subpackage, relative imports
    resolved. A file directly in ``scattn/`` belongs to no subpackage."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    mine = _layer(name) if path.parent != PACKAGE else ""
    where = str(path.relative_to(PACKAGE.parent))
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):  # import scattn.tl._keys
            for alias in node.names:
                parts = alias.name.split(".")
                if (parts[0] == "scattn" and len(parts) > 1 and parts[1] != mine
                        and (any(_private(p) for p in parts[2:])
                             or (_private(parts[1]) and parts[1] not in SHARED_INTERNALS))):
                    found.append((where, alias.name, []))
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        parts = target.split(".")
        if parts[0] != "scattn" or (len(parts) > 1 and parts[1] == mine):
            continue
        names = [a.name for a in node.names]
        if len(parts) == 1:  # from scattn import _compat: only the shared internals
            if any(_private(n) and n not in SHARED_INTERNALS for n in names):
                found.append((where, target, names))
            continue
        if (_private(parts[1]) and parts[1] not in SHARED_INTERNALS
                or any(_private(p) for p in parts[2:]) or any(_private(n) for n in names)):
            found.append((where, target, names))
    return found


def _private_imports_across_subpackages() -> list[tuple[str, str, list[str]]]:
    return [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_imports(path, path.read_text())]


def test_private_names_stay_in_their_subpackage():
    """A subpackage uses another's public names only (re-exported in its ``__init__``); what
    several share lives in a top-level internal module (``scattn._read``, ``scattn._write``...)."""
    bad = _private_imports_across_subpackages()
    assert not bad, f"private names imported across subpackages: {bad}"


def test_the_private_import_rule_sees_each_case():
    def hits(file: str, source: str) -> list[str]:
        return [target for _, target, _ in _private_imports(PACKAGE / file, source)]

    # across subpackages: a private module, a private name, relative or absolute, or `import`
    assert hits("pl/_x.py", "from scattn.tl._markers import get_markers") == ["scattn.tl._markers"]
    assert hits("pl/_x.py", "from ..tl._markers import get_markers") == ["scattn.tl._markers"]
    assert hits("pl/_x.py", "from scattn.tl import _check_method") == ["scattn.tl"]
    assert hits("model/_x.py", "from scattn.train._callbacks import x") == ["scattn.train._callbacks"]
    assert hits("model/base/_x.py", "from ...module._constants import CONDITION_KEY") == [
        "scattn.module._constants"]
    assert hits("pl/_x.py", "import scattn.tl._markers") == ["scattn.tl._markers"]
    assert hits("cli.py", "from scattn.data._validate import label_strings") == ["scattn.data._validate"]
    # the shared internals, public names only
    assert hits("tl/_x.py", "from scattn._attribution import _bh") == ["scattn._attribution"]
    assert hits("tl/_x.py", "from scattn import _secret") == ["scattn"]
    assert hits("tl/_x.py", "from scattn._private_thing import x") == ["scattn._private_thing"]
    # allowed: within a subpackage, public names, shared internals
    assert not hits("tl/_x.py", "from ._markers import _helper\nfrom scattn.tl._fitted import x")
    assert not hits("model/base/_x.py", "from .._cgran import _y\nfrom scattn.model._scgpt import _z")
    assert not hits("pl/_x.py", "from scattn.data import label_strings\nfrom scattn._read import find_key")
    assert not hits("train/_x.py", "from scattn import _compat\nfrom scattn._quiet import user_stacklevel")
    assert not hits("pl/_x.py", "import scattn.tl\nfrom scattn.model.base import weights_fingerprint")
