"""scViT: a vision-transformer style variational autoencoder with a ZINB likelihood (pure torch)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.module.base import LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal, kl_divergence

from scattn._compat import scvi_module_keys
from scattn.nn import (
    ConvPatchStem,
    CovariateLinear,
    LinearPatchStem,
    PatchBlock,
    PatchwiseLinear,
    n_patches,
)

from ._base import PanelModule
from ._constants import MODULE_KEYS, OBJECTIVES

#: scvi-tools' module keys (``qz``, ``z``, ``library``, ``px``...): scViT's outputs are scVI's
KEYS = scvi_module_keys()
Stem = Literal["conv", "linear", "shared"]


class SCVITModule(PanelModule):
    """The scViT variational autoencoder.

    Encoder: the model's genes (log-normalised, in the model's gene order) are cut into
    patches by a stem (convolutions, or a linear map per patch), pass `n_blocks`
    :class:`~scattn.nn.PatchBlock` s (patch-wise linear, SELU, attention over patches, dropout,
    batch norm), are flattened and reduced by a fully connected layer to the mean and
    standard deviation of a Gaussian latent. Decoder: the mirror (fully connected layer from the latent
    and the categorical covariates, unflatten to patches, patch blocks, a patch-wise linear
    layer giving every gene of its patch a scale logit and a zero-inflation logit), ending in a
    zero-inflated negative binomial with the cell's observed library size and a dispersion per
    gene, as scVI's.

    Parameters
    ----------
    n_input, gene_index, n_labels
        See :class:`~scattn.module.PanelModule`. `gene_index` must be a permutation of the
        registered genes (scViT reads every gene); the order it gives is the gene order along
        the patches. `n_labels` is ignored (scViT has no classifier).
    n_batch
        Number of batches (1 without a batch key).
    n_cats_per_cov
        Levels of each categorical covariate.
    n_latent
        Latent dimensions.
    n_hidden
        Width of the fully connected layers.
    patch_size
        Genes per patch (a power of two for the convolutional stem).
    d_model
        Width of a patch token.
    n_heads
        Attention heads; ``0``: no attention (an ablation).
    n_blocks
        Patch blocks in the encoder and in the decoder.
    stem
        ``"conv"``: the convolutional stem; ``"linear"``: a linear map per patch, no
        convolution; ``"shared"``: one linear map for all patches (a ViT patch embedding).
    patchwise
        Patch-wise (per patch) linear layers in the blocks; `False`: one shared map.
    dropout
        Dropout in the blocks and the encoder's fully connected layer.
    gene_likelihood
        ``"zinb"`` or ``"nb"``.
    encode_covariates
        Also give the covariates to the encoder (scVI's default: no).
    encoder, decoder
        ``"patch"`` (scViT's) or ``"dense"``: scVI's fully connected structure instead (the
        ablation that tells which half carries a difference).
    """

    objectives = (OBJECTIVES.GENERATIVE,)

    def __init__(
        self,
        n_input: int,
        gene_index: torch.Tensor,
        n_labels: int | None = None,
        *,
        n_batch: int = 1,
        n_cats_per_cov: list[int] | None = None,
        n_latent: int = 10,
        n_hidden: int = 128,
        patch_size: int = 64,
        d_model: int = 32,
        n_heads: int = 2,
        n_blocks: int = 1,
        stem: Stem = "linear",
        patchwise: bool = True,
        dropout: float = 0.1,
        gene_likelihood: Literal["zinb", "nb"] = "zinb",
        encode_covariates: bool = False,
        encoder: Literal["patch", "dense"] = "patch",
        decoder: Literal["patch", "dense"] = "patch",
    ) -> None:
        super().__init__(n_input, gene_index, normalize_counts=True)
        gi = self.genes.gene_index
        if gi.numel() != n_input or not torch.equal(torch.sort(gi).values, torch.arange(n_input)):
            raise ValueError("scViT reads every registered gene: gene_index must be a permutation "
                             f"of the {n_input} registered genes.")
        if gene_likelihood not in ("zinb", "nb"):
            raise ValueError(f"gene_likelihood must be 'zinb' or 'nb', got {gene_likelihood!r}.")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}.")
        if encoder not in ("patch", "dense") or decoder not in ("patch", "dense"):
            raise ValueError("encoder and decoder must be 'patch' or 'dense'.")
        self.encoder_kind, self.decoder_kind = encoder, decoder
        if stem not in ("conv", "linear", "shared"):
            raise ValueError(f"stem must be 'conv', 'linear' or 'shared', got {stem!r}.")
        self.register_buffer("inverse_order", torch.argsort(gi), persistent=False)
        g = n_input
        self.n_batch = n_batch
        self.n_cats_per_cov = list(n_cats_per_cov or [])
        self.n_latent = n_latent
        self.patch_size = patch_size
        self.gene_likelihood = gene_likelihood
        self.encode_covariates = encode_covariates
        p = self.n_patches = n_patches(g, patch_size)
        cats = [n_batch, *self.n_cats_per_cov]
        # encoder
        self.stem = ConvPatchStem(patch_size, d_model) if stem == "conv" else \
            LinearPatchStem(p, patch_size, d_model, shared=stem == "shared")
        self.encoder_blocks = nn.ModuleList(
            PatchBlock(p, d_model, d_model, n_heads=n_heads, dropout=dropout, shared=not patchwise)
            for _ in range(n_blocks)
        )
        if encoder == "dense":  # scVI's encoder (an ablation): no patches
            self.stem, self.encoder_blocks = nn.Identity(), nn.ModuleList()
        self.encoder_fc = CovariateLinear(g if encoder == "dense" else p * d_model, n_hidden,
                                          cats if encode_covariates else ())
        self.encoder_norm = nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3)
        self.encoder_dropout = nn.Dropout(dropout)
        self.z_mean = nn.Linear(n_hidden, n_latent)
        self.z_scale = nn.Linear(n_hidden, n_latent)  # log standard deviation
        # decoder
        self.decoder_fc = CovariateLinear(n_latent, n_hidden, cats)
        self.decoder_norm = nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3)
        self.decoder_expand = nn.Linear(n_hidden, p * d_model)
        self.decoder_blocks = nn.ModuleList(
            PatchBlock(p, d_model, d_model, n_heads=n_heads, dropout=0.0, shared=not patchwise)
            for _ in range(n_blocks)
        )
        self.d_model = d_model
        self.unpatch = PatchwiseLinear(p, d_model, 2 * patch_size, shared=not patchwise)
        if decoder == "dense":  # scVI's decoder (an ablation): straight to the genes
            del self.decoder_expand, self.decoder_blocks, self.unpatch
            self.decoder_out = nn.Linear(n_hidden, 2 * g)
        self.px_r = nn.Parameter(torch.randn(g))

    # -- inputs ------------------------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {KEYS.X_KEY: tensors[REGISTRY_KEYS.X_KEY],
                KEYS.BATCH_INDEX_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
                KEYS.CAT_COVS_KEY: tensors.get(REGISTRY_KEYS.CAT_COVS_KEY)}

    def _get_generative_input(self, tensors, inference_outputs) -> dict:
        return {KEYS.Z_KEY: inference_outputs[KEYS.Z_KEY], KEYS.LIBRARY_KEY: inference_outputs[KEYS.LIBRARY_KEY],
                KEYS.BATCH_INDEX_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
                KEYS.CAT_COVS_KEY: tensors.get(REGISTRY_KEYS.CAT_COVS_KEY)}

    def _cats(self, batch_index, cat_covs) -> list[torch.Tensor]:
        cats = [batch_index]
        if self.n_cats_per_cov:
            cats += list(torch.split(cat_covs, 1, dim=1))
        return cats

    # -- encoder ------------------------------------------------------------------------------
    @auto_move_data
    def inference(self, x, batch_index, cat_covs=None, n_samples: int = 1,
                  return_attention: bool = False) -> dict:
        """Counts -> the posterior ``qz``, a sample ``z``, the log library size; with
        `return_attention`, each cell's attribution over the model's genes (``attention``)."""
        panel = self.genes.read(x)
        h = self.stem(panel.lognorm)
        weights = []
        for block in self.encoder_blocks:
            h, w = block(h, return_attention=return_attention)
            weights.append(w)
        cats = self._cats(batch_index, cat_covs) if self.encode_covariates else ()
        h = self.encoder_dropout(F.relu(self.encoder_norm(self.encoder_fc(h.flatten(1), cats))))
        qz = Normal(self.z_mean(h), self.z_scale(h).exp() + 1e-4)
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        library = torch.log(panel.library.clamp_min(1.0))
        if n_samples > 1:
            library = library.unsqueeze(0).expand(n_samples, *library.shape)
        out = {KEYS.QZ_KEY: qz, KEYS.Z_KEY: z, KEYS.LIBRARY_KEY: library, KEYS.QZM_KEY: qz.loc}
        if return_attention:
            out[MODULE_KEYS.ATTENTION] = self._gene_attribution(weights, panel.lognorm)
        return out

    def _gene_attribution(self, weights: list, lognorm: torch.Tensor) -> torch.Tensor:
        """Attention each patch receives (first encoder block; mean over heads and querying
        patches), shared among the patch's genes by their share of its expression."""
        if not weights or weights[0] is None:
            return torch.zeros_like(lognorm)
        received = weights[0].mean(1).mean(1)  # (B, P)
        b, g = lognorm.shape
        s = self.patch_size
        padded = F.pad(lognorm, (0, self.n_patches * s - g)).view(b, self.n_patches, s)
        share = padded / padded.sum(-1, keepdim=True).clamp_min(1e-8)
        return (share * received.unsqueeze(-1)).reshape(b, -1)[:, :g]

    # -- decoder ------------------------------------------------------------------------------
    @auto_move_data
    def generative(self, z, library, batch_index, cat_covs=None, transform_batch=None) -> dict:
        """Latent -> ``px``, the ZINB (or NB) over the registered genes in their registered order."""
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        lead = z.shape[:-1]
        z2 = z.reshape(-1, z.shape[-1])
        cats = [c.repeat(z2.shape[0] // c.shape[0], 1) for c in self._cats(batch_index, cat_covs)]
        h = F.relu(self.decoder_norm(self.decoder_fc(z2, cats)))
        g = self.n_input
        if self.decoder_kind == "dense":
            out = self.decoder_out(h).view(z2.shape[0], 2, g)
        else:
            h = F.selu(self.decoder_expand(h)).view(z2.shape[0], self.n_patches, self.d_model)
            for block in self.decoder_blocks:
                h, _ = block(h)
            out = self.unpatch(h).view(z2.shape[0], self.n_patches, 2, self.patch_size)
            out = out.transpose(1, 2).reshape(z2.shape[0], 2, -1)
        # (cells, 2, genes in the model's order) -> the registered order, in one gather
        logits = out[..., :g][..., self.inverse_order]
        px_scale = logits[:, 0].softmax(-1).view(*lead, g)
        zi_logits = logits[:, 1].reshape(*lead, g)
        theta = self.px_r[self.inverse_order].exp()
        rate = library.exp() * px_scale
        if self.gene_likelihood == "zinb":
            px = ZeroInflatedNegativeBinomial(mu=rate, theta=theta, zi_logits=zi_logits, scale=px_scale)
        else:
            px = NegativeBinomial(mu=rate, theta=theta, scale=px_scale)
        return {KEYS.PX_KEY: px}

    # -- objective ----------------------------------------------------------------------------
    def loss(self, tensors, inference_outputs, generative_outputs, objective: str | None = None,
             kl_weight: float = 1.0) -> LossOutput:
        """The negative ELBO (`objective` must be the generative one)."""
        if objective not in (None, OBJECTIVES.GENERATIVE):
            super().loss(tensors, inference_outputs, generative_outputs, objective)  # raises
        x = tensors[REGISTRY_KEYS.X_KEY].float()
        rec = -generative_outputs[KEYS.PX_KEY].log_prob(x).sum(-1)
        qz = inference_outputs[KEYS.QZ_KEY]
        kl = kl_divergence(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))).sum(-1)
        return LossOutput(loss=torch.mean(rec + kl_weight * kl), reconstruction_loss=rec, kl_local=kl)

    def generative_loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """The negative ELBO with the full KL term."""
        return self.loss(tensors, inference_outputs, generative_outputs)
