"""The methods the suite runs: scattn's models and the peers a user would pick, one adapter each.

An annotation method is a function ``fit(split, seed, budget) -> Fitted``, `budget` a dict of
training arguments (``max_epochs``, for CGRAN also ``lr``; empty: the method's defaults): it
trains on ``split.train`` (labels in ``split.labels_key``) and returns an object whose ``predict``
labels new cells (``split.test``, labels hidden) and, where the method has them, whose
``markers`` ranks genes per class on the training cells. The runner times ``fit`` and
``predict`` separately (:mod:`benchmarks._measure`).

Inputs, per method (what each one's documentation asks for):

* **CGRAN, CFAN, SIMS, Geneformer** (scattn): the task's matrix as is (``expression="counts"``
  or ``"log1p"``); each model normalises and picks its genes itself (CGRAN, CFAN: 1000
  variable genes; SIMS: all genes; Geneformer: all genes as its vocabulary, each cell's 256
  top-ranked expressed genes as tokens, trained from scratch on the task's cells). Markers: :func:`scattn.tl.marker_genes_from_attention` on the
  attribution layer of the training cells, grouped by their true labels.
* **scANVI** (scvi-tools): counts only; the 2000 ``seurat_v3`` variable genes of the training
  cells, scVI (2 layers, 30 latent dims, NB) then ``SCANVI.from_scvi_model`` 20 epochs with
  100 samples per label, as the scvi-tools tutorial does. The one method not on every gene.
* **CellTypist**: ``celltypist.train`` (logistic regression, its default for small data) on
  log1p(CP10k) of all genes, ``celltypist.annotate`` without majority voting (which needs a
  clustering of the query). Markers: ``Model.extract_top_markers``.
* **pytorch-tabnet**: ``TabNetClassifier`` with SIMS' recipe (SIMS wraps it), log1p(CP10k) of
  all genes. Markers: its explain matrix through the same rule as SIMS'.
* **LogisticRegression**, **LinearSVM** (scikit-learn, C = 1): log1p(CP10k) of all genes.
  Markers: the largest positive coefficients of each class.

Where things are: the adapters in this package (``scattn_models``, ``scanvi``, ``celltypist``,
``tabnet``, ``linear``), what they take and return in ``_base`` (:class:`Split`,
:class:`Fitted`), the peers' training recipes, shared with the studies, in
:mod:`benchmarks._peers`. A new method is one more adapter registered in :data:`METHODS`
(and, if it needs an optional package, in :data:`REQUIRES`). A new task family whose methods
return something else (an embedding, a reconstruction) registers its own adapters beside
these, under its own registry, and names it in its :class:`~benchmarks.suite.tasks.Family`.
"""

from __future__ import annotations

from collections.abc import Callable

from ._base import Fitted, NotApplicable, Split, cp10k, markers_from_layer
from .celltypist import fit_celltypist
from .linear import fit_lr, fit_svm
from .scanvi import fit_scanvi
from .scattn_models import fit_cfan, fit_cgran, fit_geneformer, fit_scgpt, fit_sims
from .tabnet import fit_tabnet

SCATTN_MODELS = ("CGRAN", "CFAN", "SIMS", "Geneformer", "SCGPT")
PEERS = ("scANVI", "CellTypist", "pytorch-tabnet", "LogisticRegression", "LinearSVM")

# the annotation methods: name -> fit(split, seed, budget) -> Fitted
METHODS: dict[str, Callable[[Split, int, dict], Fitted]] = {
    "CGRAN": fit_cgran,
    "CFAN": fit_cfan,
    "SIMS": fit_sims,
    "Geneformer": fit_geneformer,
    "SCGPT": fit_scgpt,
    "scANVI": fit_scanvi,
    "CellTypist": fit_celltypist,
    "pytorch-tabnet": fit_tabnet,
    "LogisticRegression": fit_lr,
    "LinearSVM": fit_svm,
}

# optional packages (the `bench` extra) a method needs; scikit-misc: scanpy's seurat_v3
# variable genes, as scANVI's tutorial picks them
REQUIRES = {"CellTypist": "celltypist", "pytorch-tabnet": "pytorch_tabnet", "scANVI": "skmisc"}


def warm_up(methods) -> None:
    """Import every method's libraries before anything is timed or its memory measured."""
    import scvi  # noqa: F401
    import sklearn.linear_model
    import sklearn.svm  # noqa: F401

    import scattn  # noqa: F401

    if "CellTypist" in methods:
        import celltypist  # noqa: F401
    if "pytorch-tabnet" in methods:
        import pytorch_tabnet.tab_model  # noqa: F401


__all__ = ["METHODS", "PEERS", "REQUIRES", "SCATTN_MODELS", "Fitted", "NotApplicable", "Split",
           "cp10k", "markers_from_layer", "warm_up"]
