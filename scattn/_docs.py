"""Shared docstring snippets, so the text of common parameters lives in one place."""

from __future__ import annotations

from docrep import DocstringProcessor

doc_adata = """\
adata
    AnnData with the same kind of data the model was set up with (counts or log-normalised,
    in the same layer). Genes are aligned by name to the model's genes; missing genes are
    zero-filled with a warning. If `None`, the AnnData the model was initialised with."""

doc_indices = """\
indices
    Indices of cells in `adata` to use. If `None`, all cells."""

doc_batch_size = """\
batch_size
    Minibatch size for inference. If `None`, :attr:`scattn.settings.batch_size`."""

doc_key_added = """\
key_added
    Prefix of every key written into `adata`."""

doc_show = """\
ax
    A matplotlib axes to draw into. If `None`, a new figure is made.
show
    Show the figure. If `None`, shows unless `return_fig` is `True` or `ax` was given.
return_fig
    Return the :class:`~matplotlib.figure.Figure` instead of the axes."""

doc_copy = """\
copy
    Return a modified copy of `adata` instead of writing into it."""

scattn_dsp = DocstringProcessor(
    adata=doc_adata,
    indices=doc_indices,
    batch_size=doc_batch_size,
    key_added=doc_key_added,
    show=doc_show,
    copy=doc_copy,
)
