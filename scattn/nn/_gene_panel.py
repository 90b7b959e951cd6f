"""The input block of every scattn module: the model's genes read from a minibatch."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from scattn._constants import TARGET_SUM


@dataclass
class PanelInput:
    """A minibatch read through a :class:`GenePanel`, every view over the model's genes.

    Attributes
    ----------
    raw
        ``(B, g)`` the input values of the model's genes as delivered (counts, or
        log-normalised values); genes the data lack are 0.
    library
        ``(B, 1)`` library size: the sum of the input over *all* delivered genes (counts), or
        `None` for log-normalised input.
    observed
        ``(g,)`` bool: the genes the data actually hold. A gene zero-filled because the data
        lack it is not an observed zero; reconstruction losses must skip it.
    """

    raw: torch.Tensor
    library: torch.Tensor | None
    observed: torch.Tensor
    _normalize: bool = True

    @cached_property
    def lognorm(self) -> torch.Tensor:
        """``(B, g)`` log1p of the counts scaled to 10,000 per cell (or the input as given)."""
        if not self._normalize:
            return self.raw
        return torch.log1p(self.raw / self.library.clamp_min(1e-8) * TARGET_SUM)

    @property
    def counts(self) -> torch.Tensor:
        """``(B, g)`` counts of the model's genes (only for count input)."""
        if not self._normalize:
            raise ValueError("The model reads log-normalised data; it has no counts.")
        return self.raw


class GenePanel(nn.Module):
    """The model's genes out of every delivered gene: counts, library size, log-normalised values.

    Parameters
    ----------
    n_input
        Number of genes the data loader delivers (all registered genes; library sizes are
        taken over all of them).
    gene_index
        Position of each model gene among the ``n_input`` genes. A position equal to
        ``n_input`` means the gene is absent from the registered data (a query dataset that
        lacks it): it reads as zero and is not observed.
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
        self._unobserved: torch.Tensor | None = None

    @property
    def n_genes(self) -> int:
        """Number of model genes."""
        return self.gene_index.numel()

    @property
    def observed(self) -> torch.Tensor:
        """``(g,)`` bool: model genes present in the registered data (and not hidden by
        :meth:`set_unobserved`)."""
        observed = self.gene_index < self.n_input
        if self._unobserved is not None:
            observed = observed & ~self._unobserved.to(observed.device)
        return observed

    def set_unobserved(self, unobserved: torch.Tensor | None) -> None:
        """Mark model genes as not observed (e.g. genes zero-filled by gene alignment of other
        data); `None` clears the mark."""
        if unobserved is not None:
            unobserved = torch.as_tensor(unobserved, dtype=torch.bool)
            if unobserved.shape != (self.n_genes,):
                raise ValueError(f"unobserved must have one entry per model gene ({self.n_genes}).")
        self._unobserved = unobserved

    def read(self, x: torch.Tensor) -> PanelInput:
        """``(B, n_input)`` delivered input -> a :class:`PanelInput` over the model genes."""
        x = x.float()
        library = x.sum(dim=-1, keepdim=True) if self.normalize_counts else None
        if self.has_missing:
            x = F.pad(x, (0, 1))
        return PanelInput(x.index_select(-1, self.gene_index), library, self.observed,
                          self.normalize_counts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_input)`` raw input -> ``(B, g)`` log-normalised model genes."""
        return self.read(x).lognorm
