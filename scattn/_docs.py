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
    At the end, load the weights of the best validation epoch (with validation cells, which
    are then scored every epoch): a classifier's highest validation accuracy, ties going to
    the lower validation loss; a model without accuracy, the lowest loss. Else the last
    epoch's weights are kept.
accelerator, devices
    Passed to Lightning (``"cpu"``, ``"gpu"``, ``"auto"``...). Several devices train with
    Lightning's DDP (``strategy="ddp"``, run from a script): see the "Large data" page.
precision
    Lightning's precision, e.g. ``"bf16-mixed"`` on a GPU; `None`: 32-bit.
plan_kwargs
    Extra arguments of the training plan. A classifier weights each class's cells by
    ``n / (C n_c)`` in the loss (``class_weights``, see
    :func:`~scattn.data.balanced_class_weights`); ``plan_kwargs={"class_weights": None}``
    trains unweighted, an array gives your own weights.
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

doc_setup_core = """\
adata
    Cells x genes AnnData.
labels_key
    Column of ``adata.obs`` with cell types. Cells whose label is `unlabeled_category` or NaN
    are kept out of the loss and predicted. A classifier (CFAN, CGRAN) needs it; a model that
    can be pretrained first takes it optionally.
layer
    Layer with the expression; `None` uses ``adata.X``.
expression
    ``"counts"``: raw counts; the model normalises to 10,000 per cell and takes log1p.
    ``"log1p"``: data already log-normalised (e.g. ``adata.raw``), used as given.
unlabeled_category
    Label value meaning "unlabelled".
classes
    The known classes, in the classifier's output order; every label must be one of them.
    `None`: the sorted labels found. Fixing them shares one label encoding across datasets
    (``load_query_data`` uses it)."""

doc_setup_gene_id_key = """\
gene_id_key
    The ``adata.var`` column holding the gene IDs the vocabulary uses (e.g. Ensembl IDs);
    `None`: ``adata.var_names``. New data is matched through the same column."""

doc_setup_batch_key = """\
batch_key
    Column of ``adata.obs`` with each cell's batch."""

doc_setup_condition_key = """\
condition_key
    Column of ``adata.obs`` with each cell's condition (e.g. control vs stimulated, a
    perturbation), given to the model as a condition token."""

doc_setup_notes = """\
Everything is checked before anything is written. As in scvi-tools, registration adds
``adata.obs["_scvi_labels"]`` (with labels; ``"_scvi_batch"`` with a batch) and
``adata.uns["_scvi_uuid"]``, ``adata.uns["_scvi_manager_uuid"]``; nothing else in `adata`
changes."""

scattn_dsp = DocstringProcessor(
    setup_core=doc_setup_core,
    setup_gene_id_key=doc_setup_gene_id_key,
    setup_batch_key=doc_setup_batch_key,
    setup_condition_key=doc_setup_condition_key,
    setup_notes=doc_setup_notes,
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
