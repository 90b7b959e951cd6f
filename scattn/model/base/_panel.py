"""The composition shared by scattn's cell type classifiers over a gene panel."""

from __future__ import annotations

from ._attention import AttentionMixin
from ._base import ScattnModel
from ._classifier import ClassifierMixin
from ._latent import LatentMixin
from ._query import QueryMixin


class GenePanelClassifier(QueryMixin, AttentionMixin, LatentMixin, ClassifierMixin, ScattnModel):
    """A cell type classifier over a panel of genes, with attribution and transfer (CGRAN, CFAN).

    What it is, mixin by mixin: a :class:`ScattnModel` (set-up, genes, fitted state,
    save/load) that is a classifier (:class:`ClassifierMixin`), has a cell embedding
    (:class:`LatentMixin`) and a per-cell gene attribution (:class:`AttentionMixin`), and
    transfers to query data (:class:`QueryMixin`). Labels are required at set-up.
    """

    _labels = "required"
