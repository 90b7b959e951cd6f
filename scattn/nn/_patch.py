"""Blocks of the vision-transformer autoencoder (scViT): patching, patch-wise linear layers,
attention over patches, covariate injection."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._attention import SelfAttention


def n_patches(n_genes: int, patch_size: int) -> int:
    """Number of patches covering `n_genes` genes (the last one zero-padded)."""
    return math.ceil(n_genes / patch_size)


def _pad_to_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    pad = n_patches(x.shape[-1], patch_size) * patch_size - x.shape[-1]
    return F.pad(x, (0, pad)) if pad else x


class PatchwiseLinear(nn.Module):
    """A linear map per patch: ``(B, P, d_in) -> (B, P, d_out)``, every patch its own weights
    (the scViT report's "patch-wise linear"); with ``shared=True`` one map for all patches (a
    ViT's patch embedding)."""

    def __init__(self, n_patches: int, d_in: int, d_out: int, *, shared: bool = False) -> None:
        super().__init__()
        self.shared = shared
        if shared:
            self.linear = nn.Linear(d_in, d_out)
            return
        bound = 1 / math.sqrt(d_in)  # nn.Linear's initialisation, per patch
        self.weight = nn.Parameter(torch.empty(n_patches, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_patches, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply each patch's map to its patch."""
        if self.shared:
            return self.linear(x)
        return torch.einsum("bpi,pio->bpo", x, self.weight) + self.bias


class ConvPatchStem(nn.Module):
    """Gene vector -> patches by a convolutional stem ("early convolutions", Xiao et al. 2021).

    ``log2(patch_size)`` convolutions of kernel 3 and stride 2 (batch norm, ReLU), channels
    doubling from 8 up to `d_model`, then a 1x1 convolution to `d_model`: patch ``p`` is
    computed from the genes at positions ``p * patch_size ... (p + 1) * patch_size - 1`` of the
    ordered gene vector and the ``patch_size - 1`` genes before them.

    Parameters
    ----------
    patch_size
        Genes per patch, a power of two.
    d_model
        Width of a patch token.
    """

    def __init__(self, patch_size: int, d_model: int) -> None:
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of two >= 2, got {patch_size}.")
        self.patch_size = patch_size
        layers: list[nn.Module] = []
        c_in = 1
        for i in range(int(math.log2(patch_size))):
            c_out = min(d_model, 8 * 2**i)
            layers += [nn.Conv1d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm1d(c_out), nn.ReLU()]
            c_in = c_out
        layers.append(nn.Conv1d(c_in, d_model, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, g)`` -> ``(B, P, d_model)``."""
        x = _pad_to_patches(x, self.patch_size)
        return self.net(x.unsqueeze(1)).transpose(1, 2)


class LinearPatchStem(nn.Module):
    """Gene vector -> patches by cutting it into consecutive runs of `patch_size` genes and a
    linear map per patch (`shared`: one for all patches), the stem without convolutions."""

    def __init__(self, n_patches: int, patch_size: int, d_model: int, *, shared: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.linear = PatchwiseLinear(n_patches, patch_size, d_model, shared=shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, g)`` -> ``(B, P, d_model)``."""
        x = _pad_to_patches(x, self.patch_size)
        return self.linear(x.view(x.shape[0], -1, self.patch_size))


class PatchBlock(nn.Module):
    """One scViT layer: patch-wise linear, SELU, self-attention over the patches (with a residual
    connection), dropout, batch norm.

    Parameters
    ----------
    n_patches, d_in, d_out
        Patches and token widths in and out.
    n_heads
        Attention heads; ``0`` leaves the attention out (an ablation).
    dropout
        Dropout after the attention.
    shared
        One linear map for all patches instead of one per patch (an ablation).
    """

    def __init__(self, n_patches: int, d_in: int, d_out: int, *, n_heads: int = 4,
                 dropout: float = 0.1, shared: bool = False) -> None:
        super().__init__()
        self.linear = PatchwiseLinear(n_patches, d_in, d_out, shared=shared)
        self.attention = SelfAttention(d_out, n_heads) if n_heads else None
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.BatchNorm1d(d_out)

    def forward(self, x: torch.Tensor, *, return_attention: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, P, d_in)`` -> ``(B, P, d_out)`` and, if asked, ``(B, heads, P, P)`` weights."""
        h = F.selu(self.linear(x))
        weights = None
        if self.attention is not None:
            a, weights = self.attention(h, return_attention=return_attention)
            h = h + a
        h = self.dropout(h)
        b, p, d = h.shape  # batch norm per channel over cells and patches
        return self.norm(h.reshape(b * p, d)).view(b, p, d), weights


class CovariateLinear(nn.Module):
    """``Linear(x) + sum_i W_i onehot(c_i)``: a linear layer with categorical covariates
    injected, each covariate's weights in their own matrix (``covariates[i].weight``, one
    column per level) so that a query can add levels (new batches) as new columns.

    Parameters
    ----------
    n_in, n_out
        Widths.
    n_cats
        Number of levels of each covariate.
    """

    def __init__(self, n_in: int, n_out: int, n_cats: Sequence[int] = ()) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.covariates = nn.ModuleList(nn.Linear(n, n_out, bias=False) for n in n_cats)

    def forward(self, x: torch.Tensor, cats: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """`cats`: one ``(B, 1)`` or ``(B,)`` index tensor per covariate."""
        out = self.linear(x)
        for layer, idx in zip(self.covariates, cats, strict=True):
            effect = layer.weight.t()[idx.view(-1).long()]
            out = out + effect  # broadcasts over leading sample dimensions
        return out
