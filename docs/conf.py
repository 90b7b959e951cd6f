"""Sphinx configuration for scattn."""

from __future__ import annotations

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
intersphinx_mapping = {
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
    "torch": ("https://pytorch.org/docs/stable/", None),
}
html_theme = "sphinx_book_theme"
html_title = "scattn"
