"""The private scvi-tools and Lightning names scattn uses: all in scattn/_compat.py, each still
there in the installed versions (an upgrade that removes one fails here, by name)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from scvi.model.base import BaseModelClass

from scattn import _compat

PACKAGE = Path(__file__).resolve().parents[1] / "scattn"
DEPENDENCIES = ("scvi", "lightning", "pytorch_lightning", "anndata", "scanpy", "torch")


@pytest.mark.parametrize("name", sorted(_compat.PRIVATE_NAMES))
def test_every_private_name_resolves(name):
    module, attr = _compat.PRIVATE_NAMES[name]
    assert _compat.private(name) is not None, f"{module}.{attr} is gone: see scattn/_compat.py"


@pytest.mark.parametrize("attr", _compat.PRIVATE_ATTRIBUTES)
def test_every_private_attribute_exists(attr):
    assert hasattr(BaseModelClass, attr), f"scvi-tools' BaseModelClass has no {attr} any more"


def test_a_missing_name_says_which_and_the_supported_versions(monkeypatch):
    monkeypatch.setitem(_compat.PRIVATE_NAMES, "gone", ("scvi.model._utils", "_no_such_name"))
    with pytest.raises(ImportError, match=r"scvi\.model\._utils\._no_such_name.*supports scvi-tools"):
        _compat.private("gone")


def test_helpers_work_here():
    assert _compat.lightning_device_count("cpu", 1) == 1
    assert isinstance(_compat.is_interactive(), bool)
    assert _compat.get_max_epochs_heuristic(20_000) == 400
    assert _compat.validate_data_split(100, 0.9, None, None, False, False)[0] == 90


def _private_dependency_imports(path: Path) -> list[str]:
    """``import``/``from`` statements of `path` naming a private module or name of a dependency."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            parts = node.module.split(".")
            if parts[0] not in DEPENDENCIES:
                continue
            if any(p.startswith("_") for p in parts[1:]) or any(a.name.startswith("_") for a in node.names):
                found.append(f"from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in DEPENDENCIES and any(p.startswith("_") for p in parts[1:]):
                    found.append(f"import {alias.name}")
    return found


def test_private_dependency_names_live_in_compat_only():
    bad = {str(p.relative_to(PACKAGE)): imports for p in sorted(PACKAGE.rglob("*.py"))
           if p.name != "_compat.py" and (imports := _private_dependency_imports(p))}
    assert not bad, f"private scvi-tools/Lightning names outside scattn/_compat.py: {bad}"
