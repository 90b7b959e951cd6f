"""scGPT-style module (pure torch): gene tokens plus binned values (and condition tokens)
through a transformer, with scGPT's fine-tuning objectives.

Math (Cui et al. 2024). A cell's expressed genes (at most ``max_length - 1``: the most expressed, or with
``sample_tokens`` a random subset while training, scGPT's recipe) become tokens after a ``<cls>`` token. Each
token's input is ``h_0 = emb_g(gene) + emb_x(bin) [+ emb_c(condition)]``: the gene embedding
(embedding, layer norm), the value embedding of its per-cell quantile bin (0 for zero, ``1 ..
n_bins - 1`` for the cell's expressed values, :func:`scattn.nn.bin_values`; MLP, layer norm) and,
with a registered condition, the cell's condition embedding repeated over its tokens. No
position embeddings: a cell is a set of genes. Post-norm transformer blocks (ReLU) follow;
the cell embedding ``z`` is ``<cls>``'s last state (``pooling="cls"``, scGPT's ``cell_emb_style="cls"``)
or the mean of the gene tokens' last states (``"mean"``, scGPT's ``"avg-pool"``).

Tasks (each switchable; the training plan weights them):

* **GEP**: a share of the gene tokens is masked (value input -1); an MLP on each masked
  token's last state (concatenated with the batch and condition embedding ``c`` when the model
  has them) predicts its log-normalised expression; mean squared error.
* **Generative attention mask** (``generative=True``): masked ("unknown") tokens attend to the
  known tokens and to themselves only; known tokens never see unknown ones.
* **GEPC**: every model gene's expression from the cell embedding alone,
  ``<W sigmoid(A e_g), [z; c]> + b_g`` with ``e_g`` the gene embedding and ``b_g`` a per-gene
  offset (zeros included); mean squared error.
* **ECS**: ``mean(1 - (relu(cos(z_i, z_j)) - beta)^2)`` over pairs of cells of a minibatch.
* **DAR**: an MLP predicts each cell's batch from ``z`` through gradient reversal.
* **CLS**: an MLP (3 layers) predicts the cell type from ``z``.

Attribution: the attention gene tokens receive in the last layer from ``<cls>``
(``pooling="cls"``) or averaged over every token (``"mean"``), averaged over heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import LossOutput, auto_move_data
from torch import nn

from scattn._docs import scattn_dsp
from scattn.nn import (
    POOLINGS,
    CategoryEncoder,
    CellExpressionDecoder,
    ExpressionDecoder,
    MLPHead,
    TransformerBlock,
    ValueEncoder,
    bin_values,
    expressed_tokens,
    padding_mask,
    pool_tokens,
    received_attention,
    reverse_gradient,
    run_blocks,
    tokens_to_genes,
)

from ._base import PanelModule, classification_loss
from ._constants import CONDITION_KEY, MODULE_KEYS, OBJECTIVES

#: the tasks a training plan can weight
TASKS = ("gep", "gepc", "ecs", "dar", "cls")


@scattn_dsp.dedent
class SCGPTModule(PanelModule):
    """Pure-torch scGPT-style transformer.

    Parameters
    ----------
    %(module_panel)s
    n_batch
        Registered batches (0: none). With batches, the expression decoders read the batch
        embedding beside the token or cell state, and DAR can be trained.
    n_conditions
        Registered conditions (0: none): a condition embedding added to every token's input
        and read by the expression decoders.
    special_tokens
        Names of the special tokens; their ids come first, the model's genes follow in order.
        Needs ``<pad>`` and ``<cls>``.
    n_layers, d_model, n_heads, d_ff
        Transformer depth, width, heads and feed-forward width.
    max_length
        Tokens per cell at most, ``<cls>`` included.
    dropout
        Dropout in the transformer and on the value embedding.
    n_bins
        Value bins, bin 0 (not expressed) included (scGPT: 51).
    n_cls_layers
        Linear layers of the cell-type head (scGPT: 3).
    ecs_threshold
        ECS's ``beta`` (scGPT: 0.8).
    pooling
        Cell embedding: ``"cls"`` (the ``<cls>`` token's last state) or ``"mean"`` (the mean of
        the gene tokens' last states).
    sample_tokens
        Of a cell expressing more than ``max_length - 1`` genes, train on a random subset
        (scGPT's recipe) instead of the most expressed ones, which inference always reads.
    mask_value, pad_value, cls_value
        Value input of masked tokens, of padding and of ``<cls>`` (scGPT: -1, -2, and 0 in its
        fine-tuning tutorials, the pad value in its pretraining and ``embed_data``).
    """

    objectives = (OBJECTIVES.MULTITASK, OBJECTIVES.CLASSIFICATION)
    tasks = TASKS

    def __init__(
        self,
        n_input: int,
        n_labels: int | None,
        gene_index: torch.Tensor,
        *,
        normalize_counts: bool = True,
        n_batch: int = 0,
        n_conditions: int = 0,
        special_tokens: Sequence[str] = ("<pad>", "<cls>", "<eoc>"),
        n_layers: int = 4,
        d_model: int = 128,
        n_heads: int = 4,
        d_ff: int = 128,
        max_length: int = 512,
        dropout: float = 0.0,
        n_bins: int = 51,
        n_cls_layers: int = 3,
        ecs_threshold: float = 0.8,
        pooling: str = "cls",
        sample_tokens: bool = False,
        mask_value: float = -1.0,
        pad_value: float = -2.0,
        cls_value: float = 0.0,
    ) -> None:
        super().__init__(n_input, gene_index, normalize_counts=normalize_counts)
        special_tokens = tuple(special_tokens)
        for needed in ("<pad>", "<cls>"):
            if needed not in special_tokens:
                raise ValueError(f"The vocabulary needs a {needed} token; it has {list(special_tokens)}.")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}.")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        self.pooling = pooling
        self.sample_tokens = bool(sample_tokens)
        self.special_tokens = special_tokens
        self.pad_id = special_tokens.index("<pad>")
        self.cls_id = special_tokens.index("<cls>")
        n_special = len(special_tokens)
        self.register_buffer("gene_token_ids", torch.arange(self.genes.n_genes) + n_special, persistent=False)
        self.vocab_size = n_special + self.genes.n_genes
        self.max_length = max_length
        self.n_bins = n_bins
        self.n_latent = d_model
        self.n_batch = n_batch
        self.n_conditions = n_conditions
        self.ecs_threshold = ecs_threshold
        self.mask_value = mask_value
        self.pad_value = pad_value
        self.cls_value = cls_value
        self.n_cls_layers = n_cls_layers
        self.gene_encoder = CategoryEncoder(self.vocab_size, d_model, padding_idx=self.pad_id)
        self.value_encoder = ValueEncoder(d_model, dropout=dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout=dropout, activation="relu", eps=1e-5)
            for _ in range(n_layers)
        )
        d_in = 2 * d_model if (n_batch or n_conditions) else d_model
        self.expression_decoder = ExpressionDecoder(d_model, d_in)
        self.cell_decoder = CellExpressionDecoder(d_model, d_in)
        # each gene's offset in GEPC over all genes (not in scGPT, whose inner-product decoder
        # has none; 0 in a loaded checkpoint, so its outputs are unchanged)
        self.gene_bias = nn.Parameter(torch.zeros(self.genes.n_genes))
        if n_batch:
            self.batch_encoder = CategoryEncoder(n_batch, d_model)
            self.batch_discriminator = MLPHead(d_model, n_batch, activation="leaky_relu")
        if n_conditions:
            self.condition_encoder = CategoryEncoder(n_conditions, d_model)
            nn.init.zeros_(self.condition_encoder.embedding.weight)  # a new condition changes nothing yet
        if n_labels is not None:
            self.add_head(n_labels)

    def _make_head(self, n_labels: int) -> nn.Module:
        return MLPHead(self.n_latent, n_labels, n_layers=self.n_cls_layers)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"x": tensors[REGISTRY_KEYS.X_KEY]}
        if self.n_batch:
            out["batch_index"] = tensors[REGISTRY_KEYS.BATCH_KEY]
        if self.n_conditions:
            if CONDITION_KEY not in tensors:
                raise KeyError("SCGPTModule needs the registered condition; set up with condition_key.")
            out["condition"] = tensors[CONDITION_KEY]
        return out

    # -- tokens ------------------------------------------------------------------------------
    def tokenize(self, x: torch.Tensor, *, sample: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, n_input)`` delivered input -> token ids, lengths, columns (each token's model
        gene, -1 for ``<cls>`` and padding), binned values (``<cls>`` 0, padding ``pad_value``)
        and each token's log-normalised expression (the regression target)."""
        panel = self.genes.read(x)
        raw = panel.raw
        ids, lengths, columns = expressed_tokens(raw, self.gene_token_ids, max_length=self.max_length,
                                                 pad_id=self.pad_id, cls_id=self.cls_id, sample=sample)
        bins = bin_values(raw, self.n_bins).to(raw.dtype)
        at = columns.clamp_min(0)
        is_gene = columns >= 0
        values = torch.gather(bins, 1, at).masked_fill(~is_gene, self.pad_value)
        values[:, 0] = self.cls_value
        target = torch.gather(panel.lognorm, 1, at).masked_fill(~is_gene, 0.0)
        return ids, lengths, columns, values, target

    def _condition_vector(self, batch_index: torch.Tensor | None, condition: torch.Tensor | None
                          ) -> torch.Tensor | None:
        """``(B, d)`` the embedding the expression decoders read beside a state (batch plus
        condition), `None` for a model with neither."""
        c = None
        if self.n_batch and batch_index is not None:
            c = self.batch_encoder(batch_index.view(-1).long())
        if self.n_conditions and condition is not None:
            e = self.condition_encoder(condition.view(-1).long())
            c = e if c is None else c + e
        return c

    def _with_condition(self, h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Concatenate the condition vector to states ``(B, d)`` or ``(B, T, d)``."""
        if not (self.n_batch or self.n_conditions):
            return h
        if c is None:
            c = torch.zeros(h.shape[0], h.shape[-1], device=h.device, dtype=h.dtype)
        if h.dim() == 3:
            c = c.unsqueeze(1).expand(-1, h.shape[1], -1)
        return torch.cat([h, c], dim=-1)

    def encode(self, ids: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor, *,
               condition: torch.Tensor | None = None, unknown: torch.Tensor | None = None,
               attention: str = "none") -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Token ids and values -> ``(B, T, d)`` last states and the attention asked for
        (``"none"``, ``"last"`` or ``"all"`` blocks, each ``(B, heads, T, T)``).

        `unknown`: ``(B, T)`` tokens under the generative attention mask (they attend to the
        known tokens and themselves; known tokens do not attend to them).
        """
        h = self.gene_encoder(ids) + self.value_encoder(values)
        if self.n_conditions and condition is not None:
            h = h + self.condition_encoder(condition.view(-1).long()).unsqueeze(1)
        t = ids.shape[1]
        mask = padding_mask(lengths, t)  # (B, 1, 1, T)
        if unknown is not None:
            # one boolean (B, 1, T, T) mask: the fused attention kernels take it as it is
            eye = torch.eye(t, dtype=torch.bool, device=ids.device)
            mask = mask & (~unknown[:, None, None, :] | eye)
        return run_blocks(self.blocks, h, mask, attention)

    def _choose_masked(self, columns: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        """Gene tokens to mask, each with probability `mask_ratio` (at least one per minibatch)."""
        is_gene = columns >= 0
        chosen = (torch.rand(columns.shape, device=columns.device) < mask_ratio) & is_gene
        if not bool(chosen.any()) and bool(is_gene.any()):
            chosen.view(-1)[is_gene.flatten().nonzero()[:1]] = True
        return chosen

    def all_gene_embeddings(self) -> torch.Tensor:
        """``(n_genes, d)`` the gene embeddings (after their layer norm) of every model gene."""
        return self.gene_encoder(self.gene_token_ids)

    # -- forward -----------------------------------------------------------------------------
    @auto_move_data
    def inference(self, x: torch.Tensor, batch_index: torch.Tensor | None = None,
                  condition: torch.Tensor | None = None, *, return_attention: bool = False,
                  mask_ratio: float | None = None, generative: bool = False,
                  tasks: Sequence[str] = (), return_expression: bool = False,
                  condition_override: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenise `x`, encode, pool; compute what `tasks` need.

        Returns ``z`` (cell embedding), ``logits`` (with a head), ``attention`` ``(B, g)``
        (with `return_attention`), ``expression`` ``(B, g)`` (GEPC's prediction of every model
        gene, with `return_expression` or the ``"gepc"`` task), and for the tasks' losses
        the predictions and targets they score. `mask_ratio`: share of gene tokens masked
        (GEP); `generative`: masked tokens under the generative attention mask;
        `condition_override`: every cell's condition code replaced by this one (response
        prediction).
        """
        if condition_override is not None:
            if not self.n_conditions:
                raise ValueError("condition_override needs a model with conditions.")
            condition = torch.full((x.shape[0], 1), int(condition_override), device=x.device)
        ids, lengths, columns, values, target = self.tokenize(x, sample=self.training and self.sample_tokens)
        out: dict[str, torch.Tensor] = {}
        unknown = None
        if mask_ratio is not None:
            unknown = self._choose_masked(columns, mask_ratio)
            values = values.masked_fill(unknown, self.mask_value)
        h, weights = self.encode(ids, values, lengths, condition=condition,
                                 unknown=unknown if generative else None,
                                 attention="last" if return_attention else "none")
        z = pool_tokens(h, columns, self.pooling)
        out[MODULE_KEYS.Z] = z
        c = self._condition_vector(batch_index, condition)
        if self.has_head:
            out[MODULE_KEYS.LOGITS] = self.classifier(z)
        if "gep" in tasks:
            if unknown is None:
                raise ValueError("GEP needs masked tokens: pass mask_ratio.")
            out["gep_pred"] = self.expression_decoder(self._with_condition(h, c)[unknown])
            out["gep_target"] = target[unknown]
        if "gepc" in tasks or return_expression:
            expression = self.cell_decoder(self._with_condition(z, c), self.all_gene_embeddings()) + self.gene_bias
            out[MODULE_KEYS.EXPRESSION] = expression
            if "gepc" in tasks:
                out["gepc_target"] = self.genes.read(x).lognorm
        if "dar" in tasks:
            if not self.n_batch:
                raise ValueError("DAR needs batches: set the model up with batch_key.")
            out["dar_logits"] = self.batch_discriminator(reverse_gradient(z))
        if weights:
            received = received_attention(weights[-1], lengths, self.pooling).mean(1)
            out[MODULE_KEYS.ATTENTION] = tokens_to_genes(received, columns, self.genes.n_genes)
        return out

    # -- objectives --------------------------------------------------------------------------
    def loss(self, tensors, inference_outputs, generative_outputs, objective: str | None = None,
             weights: Mapping[str, float] | None = None, **loss_kwargs) -> LossOutput:
        """The loss of `objective`; ``"multitask"`` takes the task `weights`."""
        if objective == OBJECTIVES.MULTITASK:
            return self.multitask_loss(tensors, inference_outputs, generative_outputs, weights=weights,
                                       **loss_kwargs)
        return super().loss(tensors, inference_outputs, generative_outputs, objective=objective, **loss_kwargs)

    def multitask_loss(self, tensors, inference_outputs, generative_outputs,
                       weights: Mapping[str, float] | None = None,
                       class_weights: torch.Tensor | None = None) -> LossOutput:
        """``sum_k w_k L_k`` over the tasks with a positive weight; each ``L_k`` is reported
        as an extra metric (``history["gep_train"]``...). `class_weights` weight the CLS
        cross-entropy per class."""
        weights = {k: float(w) for k, w in (weights or {"gep": 1.0, "gepc": 1.0}).items() if w}
        unknown = set(weights) - set(self.tasks)
        if unknown:
            raise ValueError(f"Unknown tasks {sorted(unknown)}; choose among {', '.join(self.tasks)}.")
        out = inference_outputs
        terms: dict[str, torch.Tensor] = {}
        if "gep" in weights:
            terms["gep"] = F.mse_loss(out["gep_pred"], out["gep_target"])
        if "gepc" in weights:
            terms["gepc"] = F.mse_loss(out[MODULE_KEYS.EXPRESSION], out["gepc_target"])
        if "ecs" in weights:
            z = F.normalize(out[MODULE_KEYS.Z], dim=1)
            sim = F.relu(z @ z.T)
            off = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
            terms["ecs"] = (1 - (sim[off] - self.ecs_threshold) ** 2).mean() if off.any() \
                else sim.sum() * 0.0
        if "dar" in weights:
            terms["dar"] = F.cross_entropy(out["dar_logits"], tensors[REGISTRY_KEYS.BATCH_KEY].view(-1).long())
        extra: dict[str, torch.Tensor] = {}
        if "cls" in weights:
            self._require_head()
            cls = classification_loss(out[MODULE_KEYS.LOGITS], tensors[REGISTRY_KEYS.LABELS_KEY], self.n_labels,
                                      weight=class_weights)
            terms["cls"] = cls.loss
            extra["accuracy"] = cls.extra_metrics["accuracy"]
        loss = sum(weights[k] * v for k, v in terms.items())
        extra.update({k: v.detach() for k, v in terms.items()})
        return LossOutput(loss=loss, n_obs_minibatch=int(out[MODULE_KEYS.Z].shape[0]), extra_metrics=extra)

    # -- interpretation ----------------------------------------------------------------------
    @torch.no_grad()
    def gene_attention(self, x: torch.Tensor, condition: torch.Tensor | None = None,
                       genes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention among gene tokens, summed over the minibatch: ``(k, k)`` total attention
        from gene i (query) to gene j (key), last layer, mean over heads, and ``(k, k)`` the
        number of cells where both are tokens, for the model genes at positions `genes`
        (`None`: all)."""
        ids, lengths, columns, values, _ = self.tokenize(x)
        _, weights = self.encode(ids, values, lengths, condition=condition, attention="last")
        w = weights[-1].mean(1)[:, 1:, 1:]  # gene tokens only
        cols = columns[:, 1:]
        if genes is not None:  # model gene -> its row among `genes`, -1 elsewhere
            lookup = torch.full((self.genes.n_genes + 1,), -1, dtype=torch.long, device=x.device)
            lookup[genes.to(x.device)] = torch.arange(genes.numel(), device=x.device)
            cols = lookup[cols.masked_fill(cols < 0, self.genes.n_genes)]
        k = self.genes.n_genes if genes is None else genes.numel()
        valid = (cols[:, :, None] >= 0) & (cols[:, None, :] >= 0)
        flat = (cols.clamp_min(0)[:, :, None] * k + cols.clamp_min(0)[:, None, :])[valid]
        total = torch.zeros(k * k, dtype=torch.float64, device=x.device)
        total.index_add_(0, flat, w[valid].double())
        count = torch.zeros(k * k, dtype=torch.float64, device=x.device)
        count.index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))
        return total.view(k, k), count.view(k, k)
