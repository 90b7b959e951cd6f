"""Sphinx configuration for scattn."""

from __future__ import annotations

import os
import socket

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
