"""Geneformer-style module (pure torch): rank-value gene tokens through a BERT encoder.

Math (Theodoris et al. 2023). A cell's expression ``x`` over the model's genes is divided
by each gene's non-zero median over the pretraining corpus, ``v_g = x_g / m_g`` (the per-cell
library-size scale cancels within a cell; computed in float64, as Geneformer's tokeniser), and
its expressed genes become the token sequence ``[<cls>,] g_(1), g_(2), ... [, <eos>]`` in
decreasing order of ``v`` (ties by token id), truncated to ``max_length`` tokens (specials
included). Token and position embeddings pass through post-norm transformer blocks (BERT's
encoder).

* **Masked pretraining**: 15% of the gene tokens are chosen; of those, 80% are replaced by
  ``<mask>``, 10% by a random gene and 10% kept; the loss is the cross-entropy of the original
  gene at the chosen positions only (the output projection runs only there).
* **Cell embedding** ``z``: the ``<cls>`` state (``pooling="cls"``) or the mean of the gene
  tokens' states (``"mean"``; ``<cls>``, ``<eos>`` and padding left out) of the layer
  ``emb_layer`` counts back from the last (Geneformer's ``EmbExtractor(emb_layer=...)``: 0 the
  last layer, -1 the one before). A cell with no gene token gets NaN.
* **Classification**: a linear head on the last layer's pooled state (``z`` when
  ``emb_layer=0``).
* **Attribution**: the attention the gene tokens receive in the last layer, averaged over
  heads, from ``<cls>`` (``pooling="cls"``) or averaged over every token (``"mean"``),
  written back to each token's gene.
* **In-silico perturbation**: ``delete`` removes a gene's token (its value is set to zero),
  ``overexpress`` moves it to the front (its value above every other), before ranking.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from scvi.module.base import LossOutput, auto_move_data
from torch import nn

from scattn._docs import scattn_dsp
from scattn.nn import (
    MaskedTokenHead,
    TokenEncoder,
    padding_mask,
    pool_tokens,
    rank_tokens,
    received_attention,
    run_blocks,
    tokens_to_genes,
)

from ._base import PanelModule
from ._constants import MODULE_KEYS, OBJECTIVES

Perturbation = Literal["delete", "overexpress"]


@scattn_dsp.dedent
class GeneformerModule(PanelModule):
    """Pure-torch Geneformer-style transformer.

    Parameters
    ----------
    %(module_panel)s
    gene_medians
        ``(n_genes,)`` each model gene's non-zero median (the tokeniser's normalisation; kept
        to float64 precision, ``inf`` leaves a gene out of the tokens).
    special_tokens
        Names of the special tokens; their ids come first, the model's genes follow in order
        (gene ``i`` is token ``len(special_tokens) + i``). Needs ``<pad>`` and ``<mask>``;
        ``<cls>`` is put first and ``<eos>`` after the genes of every sequence when present
        (Geneformer V2).
    n_layers, d_model, n_heads, d_ff
        Encoder depth, width, heads and feed-forward width.
    max_length
        Tokens per cell at most (``<cls>`` included); also the number of positions.
    dropout
        Dropout on embeddings and sub-layers.
    attention_dropout
        Dropout on the attention weights.
    activation
        Feed-forward activation (Geneformer V1: ``"relu"``).
    pooling
        Cell embedding: ``"cls"`` (the ``<cls>`` token's state) or ``"mean"`` (mean of the
        gene tokens' states); `None`: ``"cls"`` when there is a ``<cls>`` token.
    emb_layer
        Layer of the cell embedding, counted back from the last as Geneformer's
        ``EmbExtractor`` does: 0 the last layer, -1 the one before, ..., ``-n_layers`` the
        embedding layer's output. The classifier head reads the last layer whatever it is.
    layer_norm_eps
        Layer norm epsilon (BERT: 1e-12).
    """

    objectives = (OBJECTIVES.CLASSIFICATION, OBJECTIVES.MASKED)
    fitted_buffers = {"gene_medians": "gene_medians"}

    def __init__(
        self,
        n_input: int,
        n_labels: int | None,
        gene_index: torch.Tensor,
        gene_medians: torch.Tensor,
        *,
        normalize_counts: bool = True,
        special_tokens: Sequence[str] = ("<pad>", "<mask>", "<cls>"),
        n_layers: int = 4,
        d_model: int = 128,
        n_heads: int = 4,
        d_ff: int = 256,
        max_length: int = 256,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation: Literal["relu", "gelu"] = "relu",
        pooling: Literal["cls", "mean"] | None = None,
        emb_layer: int = 0,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__(n_input, gene_index, normalize_counts=normalize_counts)
        special_tokens = tuple(special_tokens)
        for needed in ("<pad>", "<mask>"):
            if needed not in special_tokens:
                raise ValueError(f"The vocabulary needs a {needed} token; it has {list(special_tokens)}.")
        self.special_tokens = special_tokens
        self.pad_id = special_tokens.index("<pad>")
        self.mask_id = special_tokens.index("<mask>")
        self.cls_id = special_tokens.index("<cls>") if "<cls>" in special_tokens else None
        self.eos_id = special_tokens.index("<eos>") if "<eos>" in special_tokens else None
        n_framing = (self.cls_id is not None) + (self.eos_id is not None)
        if max_length <= n_framing:
            raise ValueError(f"max_length must be > {n_framing} (<cls>/<eos> take {n_framing} "
                             f"tokens), got {max_length}.")
        self.n_layers = n_layers
        self.emb_layer = self._checked_emb_layer(emb_layer)
        pooling = pooling or ("cls" if self.cls_id is not None else "mean")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}.")
        if pooling == "cls" and self.cls_id is None:
            raise ValueError("pooling='cls' needs a <cls> token in the vocabulary.")
        self.pooling = pooling
        medians = torch.as_tensor(gene_medians, dtype=torch.float64)
        if medians.shape != (self.genes.n_genes,) or not bool((medians > 0).all()):
            raise ValueError("gene_medians needs one positive value per model gene.")
        # float32 buffer (saved in the weights) plus its float32 residual: together the
        # float64 medians, which the ranking divides by (devices without float64 use the first)
        hi = medians.to(torch.float32)
        residual = torch.where(torch.isfinite(medians), medians - hi.double(), 0.0)
        self.register_buffer("gene_medians", hi)
        self.register_buffer("gene_medians_residual", residual.to(torch.float32), persistent=False)
        n_special = len(special_tokens)
        self.register_buffer("gene_token_ids", torch.arange(self.genes.n_genes) + n_special,
                             persistent=False)
        self.vocab_size = n_special + self.genes.n_genes
        self.max_length = max_length
        self.n_latent = d_model
        self.encoder = TokenEncoder(self.vocab_size, max_length, d_model, n_layers, n_heads, d_ff,
                                    dropout=dropout, attention_dropout=attention_dropout,
                                    activation=activation, eps=layer_norm_eps,
                                    pad_id=self.pad_id)
        self.mlm_head = MaskedTokenHead(d_model, self.encoder.token_embedding, activation=activation,
                                        eps=layer_norm_eps)
        self.head_dropout = nn.Dropout(dropout)
        if n_labels is not None:
            self.add_head(n_labels)

    def _checked_emb_layer(self, emb_layer: int) -> int:
        try:
            layer = operator.index(emb_layer) if not isinstance(emb_layer, bool) else None
        except TypeError:
            layer = None
        if layer is None or not -self.n_layers <= layer <= 0:
            raise ValueError(f"emb_layer must be an integer from -{self.n_layers} (the embedding "
                             f"layer) to 0 (the last layer), got {emb_layer!r}; Geneformer's "
                             "default -1 is the layer before the last.")
        return int(layer)

    def medians_float64(self) -> torch.Tensor:
        """``(n_genes,)`` float64 gene medians (on the buffers' device)."""
        return self.gene_medians.double() + self.gene_medians_residual.double()

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """The fitted buffers, the medians in float64."""
        return {"gene_medians": self.medians_float64().detach().cpu().clone()}

    def _make_head(self, n_labels: int) -> nn.Module:
        head = nn.Linear(self.n_latent, n_labels)
        nn.init.normal_(head.weight, 0.0, 0.02)
        nn.init.zeros_(head.bias)
        return head

    # -- tokens ------------------------------------------------------------------------------
    def tokenize(self, x: torch.Tensor, *, perturb: torch.Tensor | None = None,
                 perturb_mode: Perturbation = "delete") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, n_input)`` delivered input -> token ids, lengths and each token's model gene
        (-1 for ``<cls>``, ``<eos>`` and padding), see :func:`scattn.nn.rank_tokens`.

        Values are ranked in float64 (Geneformer's tokeniser divides by its float64 medians;
        float32 can swap two nearly equal genes), in float32 on devices without float64 (MPS).
        `perturb`: positions (among the model's genes) to delete or overexpress first.
        """
        raw = self.genes.read(x).raw
        if raw.device.type == "mps":  # no float64 there
            values, medians = raw.float(), self.gene_medians
        else:
            values, medians = raw.double(), self.medians_float64()
        values = values if self.genes.normalize_counts else torch.expm1(values)
        values = values / medians
        if perturb is not None and perturb.numel():
            perturb = perturb.to(values.device)
            if perturb_mode == "delete":
                values[:, perturb] = 0.0
            elif perturb_mode == "overexpress":
                # above every value, in the order given (the first gene first)
                top = values.max(dim=1, keepdim=True).values.clamp_min(1.0)
                rank = torch.arange(perturb.numel(), 0, -1, device=values.device, dtype=values.dtype)
                values[:, perturb] = top * 2.0 * (1 + rank)
            else:
                raise ValueError(f"perturb_mode must be 'delete' or 'overexpress', got {perturb_mode!r}.")
        return rank_tokens(values, self.gene_token_ids, max_length=self.max_length,
                           pad_id=self.pad_id, cls_id=self.cls_id, eos_id=self.eos_id)

    def _mask_tokens(self, ids: torch.Tensor, genes: torch.Tensor, mask_ratio: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's corruption of the gene tokens: return the corrupted ids and the chosen positions."""
        is_gene = genes >= 0
        chosen = (torch.rand(ids.shape, device=ids.device) < mask_ratio) & is_gene
        if not bool(chosen.any()):  # at least one scored token per minibatch
            first = is_gene.flatten().nonzero()[:1]
            chosen.view(-1)[first] = True
        r = torch.rand(ids.shape, device=ids.device)
        corrupted = ids.masked_fill(chosen & (r < 0.8), self.mask_id)
        n_special = len(self.special_tokens)
        random_ids = torch.randint(n_special, self.vocab_size, ids.shape, device=ids.device)
        swap = chosen & (r >= 0.8) & (r < 0.9)
        corrupted = torch.where(swap, random_ids, corrupted)
        return corrupted, chosen

    def pool(self, h: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
        """``(B, T, d)`` hidden states -> ``(B, d)`` cell embedding (:func:`scattn.nn.pool_tokens`)."""
        return pool_tokens(h, genes, self.pooling)

    def _received(self, weights: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, heads, T, T)`` attention -> ``(B, heads, T)`` attention each token receives:
        from ``<cls>`` (``pooling="cls"``) or averaged over the real query tokens."""
        return received_attention(weights, lengths, self.pooling)

    # -- forward -----------------------------------------------------------------------------
    def _encode(self, ids: torch.Tensor, lengths: torch.Tensor, *, attention: str, emb_layer: int,
                need_last: bool) -> tuple[torch.Tensor | None, torch.Tensor, list[torch.Tensor]]:
        """The last layer's states (`None` when not `need_last` and `emb_layer` stops earlier),
        the states of layer `emb_layer` and the attention weights asked for."""
        if emb_layer == 0:
            h, weights = self.encoder(ids, lengths, attention=attention)
            return h, h, weights
        enc = self.encoder
        k = len(enc.blocks) + emb_layer  # blocks before the embedding's layer: hidden_states[k]
        mask = padding_mask(lengths, ids.shape[1])
        h_emb, _ = run_blocks(enc.blocks[:k], enc.embed(ids), mask, "none")
        if not need_last:
            return None, h_emb, []
        h, weights = run_blocks(enc.blocks[k:], h_emb, mask, attention)
        return h, h_emb, weights

    @auto_move_data
    def inference(self, x: torch.Tensor, return_attention: bool = False, mask_ratio: float | None = None,
                  perturb: torch.Tensor | None = None, perturb_mode: Perturbation = "delete",
                  emb_layer: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenise `x`, encode, pool; with `mask_ratio`, corrupt and score masked tokens.

        Returns ``z`` (cell embedding of layer `emb_layer`, `None`: the module's; NaN for a
        cell with no gene token), ``logits`` (with a head; from the last layer), ``attention``
        ``(B, g)`` (with `return_attention`) and, with `mask_ratio`, ``reconstruction``
        (scores of the chosen positions over the vocabulary) and ``target`` (their true token
        ids).
        """
        layer = self.emb_layer if emb_layer is None else self._checked_emb_layer(emb_layer)
        ids, lengths, genes = self.tokenize(x, perturb=perturb, perturb_mode=perturb_mode)
        out: dict[str, torch.Tensor] = {}
        if mask_ratio is not None:
            ids_in, chosen = self._mask_tokens(ids, genes, mask_ratio)
        else:
            ids_in, chosen = ids, None
        need_last = self.has_head or chosen is not None or return_attention
        h, h_emb, weights = self._encode(ids_in, lengths, attention="last" if return_attention else "none",
                                         emb_layer=layer, need_last=need_last)
        z = self.pool(h_emb, genes)
        if self.has_head:
            z_last = z if h is h_emb else self.pool(h, genes)
            out[MODULE_KEYS.LOGITS] = self.classifier(self.head_dropout(z_last))
        # a cell with no gene token has no embedding (its <cls> state would be the same for all)
        out[MODULE_KEYS.Z] = z.masked_fill(~(genes >= 0).any(dim=1, keepdim=True), float("nan"))
        if chosen is not None:
            out[MODULE_KEYS.RECONSTRUCTION] = self.mlm_head(h[chosen])
            out[MODULE_KEYS.TARGET] = ids[chosen]
        if weights:
            received = self._received(weights[-1], lengths).mean(1)
            out[MODULE_KEYS.ATTENTION] = tokens_to_genes(received, genes, self.genes.n_genes)
        return out

    @torch.no_grad()
    def masked_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, vocab)`` masked-LM scores of every position of given token ids (for
        comparisons with other implementations; training scores only masked positions)."""
        h, _ = self.encoder(ids, lengths)
        return self.mlm_head(h)

    # -- objectives --------------------------------------------------------------------------
    def masked_loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Cross-entropy of the true gene at the chosen (masked) positions."""
        logits = inference_outputs.get(MODULE_KEYS.RECONSTRUCTION)
        if logits is None:
            raise ValueError("masked_loss needs inference(..., mask_ratio=...).")
        target = inference_outputs[MODULE_KEYS.TARGET]
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(-1) == target).float().mean()
        return LossOutput(loss=loss, n_obs_minibatch=int(target.numel()),
                          extra_metrics={"masked_accuracy": acc})

    # -- interpretation ----------------------------------------------------------------------
    @torch.no_grad()
    def attention_statistics(self, x: torch.Tensor, n_ranks: int) -> dict[str, torch.Tensor]:
        """Per layer and head, summed over the minibatch's cells.

        Returns ``received`` ``(layers, heads, n_ranks)``: the attention the gene token at each
        rank receives (see ``pooling``); ``count`` ``(n_ranks,)``: cells with a gene at that
        rank; ``norms`` ``(layers, heads)``: each cell's mean over its tokens of
        ``||sum_j a_ij f_h(x_j)||`` (Kobayashi et al. 2020).
        """
        ids, lengths, genes = self.tokenize(x)
        enc = self.encoder
        h = enc.embed(ids)
        mask = padding_mask(lengths, ids.shape[1])
        offset = 0 if self.cls_id is None else 1
        n = min(n_ranks, ids.shape[1] - offset)
        received, norms = [], []
        real = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).float()
        for block in enc.blocks:
            block_in = h
            h, w = block(h, attn_mask=mask, return_attention=True)
            r = self._received(w, lengths)[:, :, offset : offset + n]  # (B, H, n)
            r = r * (genes[:, None, offset : offset + n] >= 0)
            received.append(F.pad(r.sum(0), (0, n_ranks - n)))
            hn = block.head_norms(block_in, w)  # (B, H, T)
            norms.append(((hn * real[:, None, :]).sum(2) / lengths[:, None].float()).sum(0))
        count = F.pad((genes[:, offset : offset + n] >= 0).sum(0), (0, n_ranks - n))
        return {"received": torch.stack(received), "count": count, "norms": torch.stack(norms)}
