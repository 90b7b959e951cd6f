"""Blocks of an expression-value transformer (scGPT's layout): value embeddings, per-token and
cell-level expression decoders, MLP heads and gradient reversal."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CategoryEncoder(nn.Module):
    """An embedding (initialised U(-0.1, 0.1), as scGPT) followed by layer norm (scGPT's gene
    and batch encoders)."""

    def __init__(self, n: int, d_model: int, *, padding_idx: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n, d_model, padding_idx=padding_idx)
        # scGPT's initialisation U(-0.1, 0.1): the layer norm removes the scale from the output,
        # but with PyTorch's N(0, 1) Adam's steps would move the embeddings 17 times more slowly
        # relative to their size
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.enc_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids of any shape -> embeddings with a trailing ``d_model`` axis."""
        return self.enc_norm(self.embedding(ids))


class ValueEncoder(nn.Module):
    """A scalar value per token -> ``d_model`` (scGPT's continuous value encoder):
    ``norm(linear2(relu(linear1(min(v, max_value)))))`` then dropout.

    Parameters
    ----------
    d_model
        Output width.
    dropout
        Dropout on the output.
    max_value
        Values are clipped to it (scGPT: 512).
    """

    def __init__(self, d_model: int, *, dropout: float = 0.0, max_value: float = 512.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.linear1 = nn.Linear(1, d_model)
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.max_value = max_value

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """``(...)`` values -> ``(..., d_model)``."""
        x = values.unsqueeze(-1).clamp(max=self.max_value)
        return self.dropout(self.norm(self.linear2(F.relu(self.linear1(x)))))


class ExpressionDecoder(nn.Module):
    """Each token's state -> its expression value (scGPT's GEP decoder): two LeakyReLU layers
    of width ``d_model`` then a scalar, on ``d_in`` inputs (``2 * d_model`` when the token
    state is concatenated with a condition embedding)."""

    def __init__(self, d_model: int, d_in: int | None = None) -> None:
        super().__init__()
        d_in = d_model if d_in is None else d_in
        self.fc = nn.Sequential(nn.Linear(d_in, d_model), nn.LeakyReLU(), nn.Linear(d_model, d_model),
                                nn.LeakyReLU(), nn.Linear(d_model, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(..., d_in)`` -> ``(...)``."""
        return self.fc(h).squeeze(-1)


class CellExpressionDecoder(nn.Module):
    """A gene's expression from the cell embedding alone (scGPT's GEPC / MVC decoder, inner
    product): ``<W sigmoid(gene2query(e_g)), z>`` for gene embedding ``e_g`` and cell embedding
    ``z`` (``d_in`` wide: ``2 * d_model`` when concatenated with a condition embedding)."""

    def __init__(self, d_model: int, d_in: int | None = None) -> None:
        super().__init__()
        d_in = d_model if d_in is None else d_in
        self.gene2query = nn.Linear(d_model, d_model)
        self.W = nn.Linear(d_model, d_in, bias=False)

    def queries(self, gene_embeddings: torch.Tensor) -> torch.Tensor:
        """``(..., d_model)`` gene embeddings -> ``(..., d_in)`` query vectors."""
        return self.W(torch.sigmoid(self.gene2query(gene_embeddings)))

    def forward(self, z: torch.Tensor, gene_embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, d_in)`` cells and ``(B, T, d_model)`` (per cell) or ``(G, d_model)`` (shared)
        gene embeddings -> ``(B, T)`` or ``(B, G)`` predicted values."""
        q = self.queries(gene_embeddings)
        if q.dim() == 2:
            return z @ q.T
        return torch.bmm(q, z.unsqueeze(2)).squeeze(2)


class MLPHead(nn.Module):
    """``n_layers - 1`` blocks of (linear, activation, layer norm) then a linear output (scGPT's
    cell-type and batch classifiers).

    Parameters
    ----------
    d_model
        Input and hidden width.
    n_out
        Outputs (classes).
    n_layers
        Linear layers in all (scGPT: 3).
    activation
        ``"relu"`` (the cell-type head) or ``"leaky_relu"`` (the adversarial batch head).
    """

    def __init__(self, d_model: int, n_out: int, *, n_layers: int = 3, activation: str = "relu",
                 eps: float = 1e-5) -> None:
        super().__init__()
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}.")
        act = nn.ReLU if activation == "relu" else nn.LeakyReLU
        layers: list[nn.Module] = []
        for _ in range(n_layers - 1):
            layers += [nn.Linear(d_model, d_model), act(), nn.LayerNorm(d_model, eps=eps)]
        self._decoder = nn.ModuleList(layers)
        self.out_layer = nn.Linear(d_model, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_model)`` -> ``(B, n_out)``."""
        for layer in self._decoder:
            x = layer(x)
        return self.out_layer(x)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient multiplied by ``-weight`` backward (Ganin and Lempitsky
    2015): a classifier after it learns to predict, the network before it learns to defeat it."""
    return _ReverseGradient.apply(x, weight)
