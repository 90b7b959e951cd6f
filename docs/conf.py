"""Sphinx configuration for scattn."""

from __future__ import annotations

import os
import socket
import sys

import scattn

project = "scattn"
author = "scattn developers"
release = scattn.__version__
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
]
autosummary_generate = True
autodoc_member_order = "bysource"
napoleon_numpy_docstring = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
nb_execution_mode = "off"
exclude_patterns = ["_build"]
_INVENTORIES = {
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
    "torch": ("https://pytorch.org/docs/stable/", None),
}


def _online(host: str = "anndata.readthedocs.io") -> bool:
    """Whether the inventories can be fetched (offline builds skip them instead of warning)."""
    if os.environ.get("SCATTN_DOCS_OFFLINE"):
        return False
    try:
        socket.create_connection((host, 443), timeout=2).close()
    except OSError:
        return False
    return True


# links to anndata/scanpy/scvi-tools/torch docs where the network allows; an offline build
# renders those names as plain text instead of failing to fetch every inventory
intersphinx_mapping = _INVENTORIES if _online() else {}
html_theme = "sphinx_book_theme"
html_title = "scattn"


def _reexported_data_doc(app, what, name, obj, options, lines) -> None:
    """A constant re-exported by a package (``scattn.data.GENE_ORDERS``) gets the ``#:``
    comment of the module defining it instead of its type's docstring (a tuple's)."""
    if what != "data" or not lines:
        return
    type_doc = getattr(type(obj), "__doc__", None)
    if not isinstance(type_doc, str) or not type_doc.strip() \
            or lines[0].strip() != type_doc.strip().splitlines()[0].strip():
        return
    from sphinx.errors import PycodeError
    from sphinx.pycode import ModuleAnalyzer

    package, _, attr = name.rpartition(".")
    for modname in sorted(m for m in sys.modules if m.startswith(package + ".")):
        if getattr(sys.modules[modname], attr, None) is not obj:
            continue
        try:
            comment = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", attr))
        except PycodeError:
            continue
        if comment:
            lines[:] = list(comment)
            return
    lines.clear()


def setup(app) -> None:
    """Sphinx hooks."""
    app.connect("autodoc-process-docstring", _reexported_data_doc)
