"""Every public docstring is filled in: no docrep placeholder left unexpanded."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import scattn

PLACEHOLDER = re.compile(r"%\(\w+\)s")


def _public_objects():
    for info in pkgutil.walk_packages(scattn.__path__, "scattn."):
        module = importlib.import_module(info.name)
        yield info.name, module
        for name, obj in vars(module).items():
            if name.startswith("__") or getattr(obj, "__module__", None) != module.__name__:
                continue
            yield f"{info.name}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("__"):
                        yield f"{info.name}.{name}.{attr}", getattr(member, "__func__", member)


def test_no_unfilled_placeholder():
    seen, bad = 0, []
    for where, obj in _public_objects():
        doc = getattr(obj, "__doc__", None) if not isinstance(obj, str) else None
        if isinstance(doc, str):
            seen += 1
            if PLACEHOLDER.search(doc):
                bad.append(where)
    assert seen > 200  # the walk reached the package
    assert not bad, f"unfilled docstring placeholders in: {bad}"


def test_models_share_parameter_text():
    from scattn._docs import doc_fitted

    first_line = doc_fitted.splitlines()[1].strip()
    for model in (scattn.model.CGRAN, scattn.model.CFAN, scattn.model.SIMS):
        assert first_line in model.__doc__
