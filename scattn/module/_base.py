"""Pieces every classifier module shares: reading its gene panel, and the classification loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput
from torch import nn

from scattn.data import TARGET_SUM


class GenePanel(nn.Module):
    """Log-normalise a minibatch (if counts) and keep the model's genes.

    Parameters
    ----------
    n_input
        Number of genes the data loader delivers (all registered genes; library sizes are
        taken over all of them).
    gene_index
        Position of each model gene among the ``n_input`` genes. A position equal to
        ``n_input`` means the gene is absent from the registered data (a query dataset that
        lacks it) and reads as zero.
    normalize_counts
        Whether input is counts to library-size normalise and log1p (else log-normalised).
    """

    def __init__(self, n_input: int, gene_index: torch.Tensor, *, normalize_counts: bool = True) -> None:
        super().__init__()
        gene_index = torch.as_tensor(gene_index, dtype=torch.long)
        if gene_index.numel() == 0:
            raise ValueError("The model needs at least one gene.")
        if int(gene_index.min()) < 0 or int(gene_index.max()) > n_input:
            raise ValueError(f"gene_index must lie in [0, {n_input}].")
        self.n_input = n_input
        self.normalize_counts = normalize_counts
        self.register_buffer("gene_index", gene_index)
        self.has_missing = bool((gene_index == n_input).any())

    @property
    def n_genes(self) -> int:
        """Number of model genes."""
        return self.gene_index.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_input)`` raw input -> ``(B, n_genes)`` log-normalised model genes."""
        x = x.float()
        if self.normalize_counts:
            lib = x.sum(dim=-1, keepdim=True).clamp_min(1e-8)
            x = torch.log1p(x / lib * TARGET_SUM)
        if self.has_missing:
            x = F.pad(x, (0, 1))
        return x.index_select(-1, self.gene_index)


def classification_loss(logits: torch.Tensor, y: torch.Tensor, n_labels: int,
                        weight: torch.Tensor | None = None) -> LossOutput:
    """Cross-entropy over the labelled cells (codes below `n_labels`) of a minibatch.

    Cells with the unlabelled code (``n_labels``) do not enter the loss. A minibatch without
    labelled cells gives a zero loss that keeps the graph. `weight` (one per class) weights
    each cell's term by its class (the weighted mean of :func:`torch.nn.functional.cross_entropy`).
    Reports ``accuracy`` as an extra metric (``model.history["accuracy_train"]`` /
    ``["accuracy_validation"]``).
    """
    y = y.view(-1).long()
    labelled = y < n_labels
    n_lab = int(labelled.sum())
    if n_lab:
        ce = F.cross_entropy(logits[labelled], y[labelled], weight=weight)
        acc = (logits[labelled].argmax(-1) == y[labelled]).float().mean()
    else:
        ce = logits.sum() * 0.0
        acc = torch.zeros((), device=logits.device)
    return LossOutput(loss=ce, n_obs_minibatch=max(n_lab, 1), extra_metrics={"accuracy": acc})


class ClassifierModule(BaseModuleClass):
    """What every classifier module shares: its gene panel, the scvi-tools plumbing, the loss.

    A subclass builds its network after ``super().__init__`` and implements ``inference(x,
    ...)`` returning at least ``logits``.

    Parameters
    ----------
    n_input, gene_index, normalize_counts
        See :class:`GenePanel`.
    n_labels
        Number of known classes (at least two).
    """

    def __init__(self, n_input: int, n_labels: int, gene_index: torch.Tensor, *,
                 normalize_counts: bool = True) -> None:
        super().__init__()
        if n_labels < 2:
            raise ValueError(f"{type(self).__name__.removesuffix('Module')} needs at least two "
                             f"classes, got {n_labels}.")
        self.n_input = n_input
        self.n_labels = n_labels
        self.genes = GenePanel(n_input, gene_index, normalize_counts=normalize_counts)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    def _get_generative_input(self, tensors, inference_outputs) -> dict:
        return {}

    def generative(self, **kwargs) -> dict:
        """A classifier is discriminative: nothing to generate."""
        return {}

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Cross-entropy over the labelled cells of the minibatch."""
        return classification_loss(inference_outputs["logits"], tensors[REGISTRY_KEYS.LABELS_KEY], self.n_labels)
