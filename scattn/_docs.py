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

doc_model_adata = """\
adata
    AnnData registered with :meth:`setup_anndata`."""

doc_genes = """\
genes
    Explicit list of genes to use instead of the most variable ones."""

doc_fitted = """\
fitted
    Fitted state (the model's genes and its module's fitted buffers) from a saved or source
    model: ``load``, ``load_query_data`` and ``from_pretrained`` pass it. `None` (what a user
    passes) fits it on `adata`."""

doc_module_panel = """\
n_input
    Number of genes the data loader delivers (all registered genes; library sizes are taken
    over all of them).
n_labels
    Number of known classes; `None`: no classifier head yet (see
    :meth:`~scattn.module.PanelModule.add_head`).
gene_index
    Positions (in the ``n_input`` genes) of the genes the model reads; ``n_input`` marks a gene
    absent from the registered data (reads as zero, not observed), see
    :class:`~scattn.nn.GenePanel`.
normalize_counts
    Whether input is counts to library-size normalise and log1p (else log-normalised)."""

doc_train = """\
max_epochs
    Passes through the training cells at most.
lr
    Peak learning rate.
weight_decay
    The optimiser's weight decay.
batch_size
    Cells per minibatch (per process under DDP).
train_size
    Share of the cells trained on; the rest validates (early stopping, history).
validation_size
    Share of the cells validated on; `None`: ``1 - train_size``.
early_stopping
    Stop when the validation loss has not improved for `early_stopping_patience` epochs
    (ignored without validation cells).
early_stopping_patience
    Epochs without a better validation loss before stopping.
restore_best_weights
    At the end, load the weights of the epoch with the lowest validation loss (with
    validation cells, which are then scored every epoch); else the last epoch's are kept.
accelerator, devices
    Passed to Lightning (``"cpu"``, ``"gpu"``, ``"auto"``...). Several devices train with
    Lightning's DDP (``strategy="ddp"``, run from a script): see the "Large data" page.
precision
    Lightning's precision, e.g. ``"bf16-mixed"`` on a GPU; `None`: 32-bit.
plan_kwargs
    Extra arguments of the training plan.
datasplitter_kwargs
    Extra arguments of the data splitter.
**trainer_kwargs
    Passed to :class:`scvi.train.Trainer` (Lightning), e.g. ``enable_progress_bar``,
    ``strategy="ddp"``."""

doc_train_defaults = """\
Every argument left at `None` takes the model's default: its ``_train_defaults`` (for
``pretrain()``: ``_pretrain_defaults``), listed for every model in the documentation's
"Training defaults" table; a budget shown as "N, or S steps" is N epochs, or more where an
epoch has few minibatches, as many as make S optimiser steps."""

scattn_dsp = DocstringProcessor(
    train=doc_train,
    train_defaults=doc_train_defaults,
    model_adata=doc_model_adata,
    genes=doc_genes,
    fitted=doc_fitted,
    module_panel=doc_module_panel,
    adata=doc_adata,
    indices=doc_indices,
    batch_size=doc_batch_size,
    key_added=doc_key_added,
    show=doc_show,
    copy=doc_copy,
)
