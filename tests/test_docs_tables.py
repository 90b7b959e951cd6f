"""The documentation's generated tables (docs/models/index.md) match the code.

Regenerate with ``python -m tests.test_docs_tables``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from scattn.model._overview import MODELS, capabilities_markdown, training_defaults_markdown
from scattn.train import StepBudget

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models" / "index.md"
TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
TABLES = {"capabilities": capabilities_markdown, "training-defaults": training_defaults_markdown}


def _replace(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + table + m.group(2), text)


@pytest.mark.parametrize("name", TABLES)
def test_generated_tables_are_current(name):
    text = PAGE.read_text()
    assert f"<!-- {name} -->" in text
    assert _replace(text, name, TABLES[name]()) == text, (
        f"docs/models/index.md's {name} table is out of date: run `python -m tests.test_docs_tables`")


@pytest.mark.parametrize("name", MODELS)
def test_the_table_shows_the_defaults_the_signatures_use(name):
    cls = MODELS[name]
    for call, attr in (("train", "_train_defaults"), ("pretrain", "_pretrain_defaults")):
        if not hasattr(cls, call):
            continue
        params = inspect.signature(getattr(cls, call)).parameters
        for key, value in getattr(cls, attr).extra.items():
            assert key in params, f"{name}.{call} has no {key}"
            default = params[key].default
            if default is None:
                assert isinstance(value, StepBudget), f"{name}.{call}({key}=None) but the table shows {value}"
            else:
                assert str(default) == str(value), f"{name}.{call}({key}={default!r}), table {value!r}"


def test_every_tutorial_is_in_the_docs():
    index = (PAGE.parents[1] / "index.md").read_text()
    for notebook in sorted(TUTORIALS.glob("*.ipynb")):
        link = PAGE.parents[1] / "tutorials" / notebook.name
        assert link.exists(), f"docs/tutorials/{notebook.name} is missing (a link to tutorials/)"
        assert link.resolve() == notebook.resolve()
        assert f"tutorials/{notebook.stem}" in index, f"{notebook.stem} is not in the docs' toctree"


if __name__ == "__main__":
    text = PAGE.read_text()
    for name, make in TABLES.items():
        text = _replace(text, name, make())
    PAGE.write_text(text)
