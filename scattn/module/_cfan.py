"""CFAN module (pure torch): Cell Feature Attention Network.

Math (Wang, Fan & Ma, section 3.1). For a cell with log-normalised expression ``e`` over the
model's g genes, u feature extractors give ``f_i = LayerNorm(ReLU(W_i e + b_i))`` (128 dims
each). The u features are tokens of one single-head self-attention,
``F = LayerNorm(softmax(Q K^T / √d) V)`` (u x m, m = 16). A 1D convolution runs along the u
renewed features (channels = the m value dimensions), and its flattened, ReLU-activated
output goes through a fully connected layer to the class logits. Dropout 0.2 on every layer.
The loss is cross-entropy over the labelled cells.

Attribution is input perturbation (paper, section 4.2.1): the negative gradient of the loss
with respect to the cell's log-normalised expression, with the cell's predicted class as the
target, so it reads "which genes, if raised, would make the model more sure of its call".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.module.base import auto_move_data
from torch import nn

from scattn._docs import scattn_dsp
from scattn.nn import FeatureExtractors, FeatureSelfAttention

from ._base import PanelModule
from ._constants import MODULE_KEYS


@scattn_dsp.dedent
class CFANModule(PanelModule):
    """Pure-torch CFAN.

    Parameters
    ----------
    %(module_panel)s
    n_extractors
        Number u of feature extractors (paper: 16).
    n_features
        Dimension of each extracted feature (paper: 128).
    n_qk
        Query/key dimension d of the attention (the paper does not give it; 16).
    n_values
        Value dimension m of the attention (paper: 16).
    conv_channels
        Output channels of the 1D convolution.
    kernel_size
        Width of the 1D convolution along the u features (odd; padded to keep u positions).
    dropout
        Dropout rate on every layer (paper: 0.2).
    """

    def __init__(
        self,
        n_input: int,
        n_labels: int | None,
        gene_index: torch.Tensor,
        *,
        normalize_counts: bool = True,
        n_extractors: int = 16,
        n_features: int = 128,
        n_qk: int = 16,
        n_values: int = 16,
        conv_channels: int = 16,
        kernel_size: int = 3,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(n_input, gene_index, normalize_counts=normalize_counts)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
        if min(n_extractors, n_features, n_qk, n_values, conv_channels) < 1:
            raise ValueError("Every CFAN dimension must be >= 1.")
        self.extractors = FeatureExtractors(self.genes.n_genes, n_extractors, n_features, dropout)
        self.attention = FeatureSelfAttention(n_features, n_qk, n_values)
        self.conv = nn.Conv1d(n_values, conv_channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.n_latent = conv_channels * n_extractors
        if n_labels is not None:
            self.add_head(n_labels)

    def _make_head(self, n_labels: int) -> nn.Module:
        return nn.Linear(self.n_latent, n_labels)

    # -- forward -----------------------------------------------------------------------------
    def forward_expression(self, e: torch.Tensor, return_feature_attention: bool = False) -> dict:
        """The network from log-normalised model-gene expression ``e`` (B, g) to logits."""
        return self.forward_projected(self.extractors.project(e), return_feature_attention)

    def forward_projected(self, pre: torch.Tensor, return_feature_attention: bool = False) -> dict:
        """The network from the extractors' dense layers (:meth:`FeatureExtractors.project
        <scattn.nn.FeatureExtractors.project>`) on."""
        f = self.extractors.features(pre)
        renewed, w = self.attention(f, return_attention=return_feature_attention)
        renewed = self.dropout(renewed)
        z = F.relu(self.conv(renewed.transpose(1, 2))).flatten(1)  # (B, channels * u)
        out = {MODULE_KEYS.Z: z, MODULE_KEYS.FEATURES: renewed}
        if self.has_head:
            out[MODULE_KEYS.LOGITS] = self.classifier(self.dropout(z))
        if w is not None:
            out[MODULE_KEYS.FEATURE_ATTENTION] = w
        return out

    @auto_move_data
    def inference(
        self, x: torch.Tensor, return_attention: bool = False, return_feature_attention: bool = False
    ) -> dict[str, torch.Tensor]:
        """Logits, the embedding ``z`` (the classifier's input) and, on request, attribution.

        ``attention`` (with `return_attention`) is the input perturbation, ``(B, g)``: the
        negative gradient of the cross-entropy for the predicted class with respect to the
        log-normalised expression. ``feature_attention`` is the ``(B, u, u)`` attention among
        the cell's features.
        """
        e = self.genes(x)
        if not return_attention:
            return self.forward_expression(e, return_feature_attention)
        self._require_head()  # the attribution is the gradient of the classifier's loss
        # e enters through one linear map, so the gradient with respect to e is that with respect
        # to the map's output times its weight: the forward pass can skip e's zeros
        with torch.no_grad():
            pre = self.extractors.project(e)
        with torch.enable_grad():
            pre = pre.detach().requires_grad_(True)
            out = self.forward_projected(pre, return_feature_attention)
            logits = out[MODULE_KEYS.LOGITS]
            loss = F.cross_entropy(logits, logits.detach().argmax(-1), reduction="sum")
            (grad,) = torch.autograd.grad(loss, pre)
        out = {k: v.detach() for k, v in out.items()}
        out[MODULE_KEYS.ATTENTION] = -(grad @ self.extractors.dense.weight)
        return out
