"""SIMS module (pure torch): a TabNet classifier over log-normalised genes, with masked pretraining.

Math (SIMS thesis, sections 0.2.5-0.2.6; TabNet, Arik & Pfister 2021). A cell's expression is
normalised (10,000 counts per cell, log1p) over the model's genes, giving ``f`` (D genes), and
read by the TabNet encoder (:class:`~scattn.nn.TabNetEncoder`): ``N_steps`` decision steps,
each choosing genes with a sparsemax mask ``M_i`` under the prior scale ``P_i = prod (gamma -
M_j)``. The decision outputs ``z = sum_i ReLU(d_i)`` (``n_d`` dims, the cell embedding) go
through one fully connected layer to the class logits.

Loss: cross-entropy over the labelled cells, each weighted by ``w_c = n / (C n_c)`` (inverse
class frequency, the thesis' default; 1 when disabled), plus ``lambda_sparse`` times the mean
entropy of the masks (the sparsity regulariser).

Attribution (the "explain matrix"): ``sum_i M_i * sum_c ReLU(d_i)_c`` per cell, a mask weighted
by how much its step contributes to the decision, normalised to sum to 1 over genes.

Self-supervised pretraining (TabNet section 5; thesis section 0.2.4): each gene of each cell is
hidden with probability ``mask_ratio`` (``S = 1``); the encoder reads ``(1 - S) * f`` with the
initial prior ``P_0 = 1 - S`` (a hidden gene's mask logit is 0, so the masks favour the genes
it can see), and the TabNet decoder
reconstructs ``f``. The loss is the squared error on the hidden entries, each gene's error
divided by its variance in the minibatch, averaged over the hidden genes of a cell.
"""

from __future__ import annotations

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import LossOutput, auto_move_data
from torch import nn

from scattn._docs import scattn_dsp
from scattn.nn import TabNetDecoder, TabNetEncoder

from ._base import PanelModule, classification_loss
from ._constants import MODULE_KEYS, OBJECTIVES


@scattn_dsp.dedent
class SIMSModule(PanelModule):
    """Pure-torch SIMS: TabNet encoder, linear classifier, pretraining decoder.

    Objectives: ``"classification"`` (weighted cross-entropy + mask entropy) and ``"masked"``
    (reconstruction of hidden genes, :class:`~scattn.train.MaskedPretrainingPlan`).

    Parameters
    ----------
    %(module_panel)s
    n_d, n_a
        Widths of each step's decision and attention outputs (SIMS: 8 and 8).
    n_steps
        Number of decision steps (SIMS: 3).
    gamma
        Prior-scale relaxation (SIMS: 1.3).
    n_independent, n_shared
        Step-specific and shared GLU layers per feature transformer (SIMS: 2 and 2).
    virtual_batch_size, momentum
        Ghost batch norm settings (SIMS: 128, 0.02).
    lambda_sparse
        Weight of the mask entropy in the loss (SIMS: 1e-3).
    class_weights
        One weight per class for the cross-entropy; `None`: all 1.
    """

    objectives = (OBJECTIVES.CLASSIFICATION, OBJECTIVES.MASKED)
    head_name = "head"
    fitted_buffers = {"class_weights": "class_weights"}

    def __init__(
        self,
        n_input: int,
        n_labels: int | None,
        gene_index: torch.Tensor,
        *,
        normalize_counts: bool = True,
        n_d: int = 8,
        n_a: int = 8,
        n_steps: int = 3,
        gamma: float = 1.3,
        n_independent: int = 2,
        n_shared: int = 2,
        virtual_batch_size: int = 128,
        momentum: float = 0.02,
        lambda_sparse: float = 1e-3,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(n_input, gene_index, normalize_counts=normalize_counts)
        if lambda_sparse < 0:
            raise ValueError(f"lambda_sparse must be >= 0, got {lambda_sparse}.")
        n_genes = self.genes.n_genes
        bn = {"virtual_batch_size": virtual_batch_size, "momentum": momentum}
        self.encoder = TabNetEncoder(
            n_genes, n_d=n_d, n_a=n_a, n_steps=n_steps, gamma=gamma, n_independent=n_independent,
            n_shared=n_shared, **bn,
        )
        self.n_latent = n_d
        self.lambda_sparse = lambda_sparse
        self.register_buffer("class_weights", torch.ones(0))
        if n_labels is not None:
            self.add_head(n_labels, class_weights)
        self.decoder = TabNetDecoder(n_genes, n_d=n_d, n_steps=n_steps, **bn)

    def add_head(self, n_labels: int, class_weights: torch.Tensor | None = None) -> None:
        """A fresh classifier head for `n_labels` classes, with its class weights (`None`: 1)."""
        weights = torch.ones(n_labels) if class_weights is None else torch.as_tensor(class_weights).float()
        if weights.shape != (n_labels,) or bool((weights < 0).any()):
            raise ValueError(f"class_weights must be {n_labels} non-negative numbers.")
        super().add_head(n_labels)
        self.class_weights = weights.to(self.class_weights.device)

    def _make_head(self, n_labels: int) -> nn.Module:
        return nn.Linear(self.n_latent, n_labels)


    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        return_attention: bool = False,
        return_masks: bool = False,
        mask_ratio: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Logits, the embedding ``z`` and, on request, attribution and masks.

        ``attention`` (with `return_attention`) is the explain matrix, ``(B, g)``, each row
        summing to 1 (0 for a cell whose decision outputs are all zero). ``masks`` (with
        `return_masks`) is ``(B, n_steps, g)``. With `mask_ratio` (pretraining) the output is
        instead the reconstruction of randomly hidden genes (``reconstruction``, ``target``,
        ``hidden``).
        """
        panel = self.genes.read(x)
        f = panel.lognorm
        if mask_ratio is not None:
            hidden = torch.bernoulli(torch.full_like(f, mask_ratio))
            enc = self.encoder(f * (1 - hidden), prior=1 - hidden)
            # genes the data lack are zero-filled, not observed zeros: never scored
            scored = hidden * panel.observed.to(hidden.dtype)
            return {MODULE_KEYS.RECONSTRUCTION: self.decoder(enc["steps"]), MODULE_KEYS.TARGET: f,
                    MODULE_KEYS.HIDDEN: scored}
        enc = self.encoder(f)
        z = torch.stack(enc["steps"]).sum(0)
        out = {MODULE_KEYS.Z: z, MODULE_KEYS.ENTROPY: enc["entropy"]}
        if self.has_head:
            out[MODULE_KEYS.LOGITS] = self.head(z)
        if return_attention:
            explain = enc["explain"]
            out[MODULE_KEYS.ATTENTION] = explain / explain.sum(-1, keepdim=True).clamp_min(1e-12)
        if return_masks:
            out[MODULE_KEYS.MASKS] = enc["masks"]
        return out

    def classification_loss(self, tensors, inference_outputs, generative_outputs,
                            class_weights: torch.Tensor | None = None) -> LossOutput:
        """Class-weighted cross-entropy + ``lambda_sparse`` x mask entropy (weights: the
        module's ``class_weights`` buffer unless `class_weights` is given)."""
        self._require_head()
        out = classification_loss(
            inference_outputs[MODULE_KEYS.LOGITS], tensors[REGISTRY_KEYS.LABELS_KEY], self.n_labels,
            weight=self.class_weights if class_weights is None else class_weights,
        )
        entropy = inference_outputs[MODULE_KEYS.ENTROPY]
        return LossOutput(
            loss=out.loss + self.lambda_sparse * entropy,
            n_obs_minibatch=out.n_obs_minibatch,
            extra_metrics={**out.extra_metrics, "mask_entropy": entropy.detach()},
        )

    def masked_loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """The variance-normalised reconstruction error of the hidden genes (needs inference
        with `mask_ratio`)."""
        if MODULE_KEYS.RECONSTRUCTION not in inference_outputs:
            raise ValueError("The masked objective needs inference with mask_ratio set "
                             "(scattn.train.MaskedPretrainingPlan does it).")
        return reconstruction_loss(
            inference_outputs[MODULE_KEYS.RECONSTRUCTION], inference_outputs[MODULE_KEYS.TARGET],
            inference_outputs[MODULE_KEYS.HIDDEN],
        )


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> LossOutput:
    """TabNet's pretraining loss: squared error on hidden entries over each gene's batch variance.

    Averaged over a cell's hidden genes, then over cells (cells with nothing hidden count 0).
    """
    var = target.detach().var(dim=0, unbiased=False)
    var = torch.where(var > 0, var, torch.ones_like(var))
    err = ((reconstruction - target) * hidden) ** 2 / var
    per_cell = err.sum(-1) / hidden.sum(-1).clamp_min(1)
    return LossOutput(loss=per_cell.mean(), n_obs_minibatch=target.shape[0])
