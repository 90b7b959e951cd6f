"""CGRAN module (pure torch): Cell-Gene Representation Attention Network.

Math (Wang, Fan & Ma, section 3.2). For a cell with normalised expression ``x`` over the
model's genes, its embedding is ``A_i = x P`` (the SVD fold-in, see
:mod:`scattn.data._embed`) and the token sequence is ``s_0 = A_i``, ``s_j = B_j + s_0``.
Two local attention blocks (:class:`~scattn.nn.LocalAttentionBlock`) renew the tokens; the
renewed cell token goes through a linear classifier whose logits are scaled by a learned
temperature (the token is L2-normalised, which otherwise bounds the logits). The loss is
cross-entropy over the labelled cells of the minibatch; cells with the unlabelled code do not
enter it. The first block's queries and keys can start on the SVD axes
(``attention_init="svd"``), so attention starts on the genes a cell expresses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from scvi.module.base import auto_move_data
from torch import nn

from scattn._docs import scattn_dsp
from scattn.nn import GeneGroups, LocalAttentionBlock, project_tokens, split_heads

from ._base import PanelModule
from ._constants import MODULE_KEYS


@scattn_dsp.dedent
class CGRANModule(PanelModule):
    """Pure-torch CGRAN.

    Parameters
    ----------
    %(module_panel)s
    gene_embedding
        ``(n_genes, m)`` gene embeddings ``B``.
    projection
        ``(n_genes, m)`` cell fold-in ``P``: cell embedding ``A = x P``.
    group_index
        ``(n_groups, group_size)`` padded gene groups for local attention.
    n_heads
        Heads per block (paper: 10).
    head_dims
        Head dimension of each block (paper: 8 then 4).
    dropout
        Dropout rate on every layer (paper: 0.1).
    attention_init
        ``"svd"``: first-block queries and keys start on the SVD axes (see
        :meth:`_init_attention_on_svd_axes`); ``"random"``: PyTorch's default initialisation.
    """

    fitted_buffers = {"gene_embedding": "gene_embedding", "projection": "projection",
                      "group_index": "groups.group_index"}

    def __init__(
        self,
        n_input: int,
        n_labels: int | None,
        gene_index: torch.Tensor,
        gene_embedding: torch.Tensor,
        projection: torch.Tensor,
        group_index: torch.Tensor,
        *,
        normalize_counts: bool = True,
        n_heads: int = 10,
        head_dims: Sequence[int] = (8, 4),
        dropout: float = 0.1,
        attention_init: str = "svd",
    ) -> None:
        super().__init__(n_input, gene_index, normalize_counts=normalize_counts)
        self.register_buffer("gene_embedding", torch.as_tensor(gene_embedding, dtype=torch.float32))
        self.register_buffer("projection", torch.as_tensor(projection, dtype=torch.float32))
        self.groups = GeneGroups(torch.as_tensor(group_index))
        n_embedding = self.gene_embedding.shape[1]
        blocks, dim = [], n_embedding
        for head_dim in head_dims:
            blocks.append(LocalAttentionBlock(dim, n_heads, head_dim, dropout))
            dim = blocks[-1].n_output
        self.blocks = nn.ModuleList(blocks)
        self.n_latent = dim
        self.dropout = nn.Dropout(dropout)
        if n_labels is not None:
            self.add_head(n_labels)
        if attention_init == "svd":
            self._init_attention_on_svd_axes()
        elif attention_init != "random":
            raise ValueError(f"attention_init must be 'svd' or 'random', got {attention_init!r}.")

    def _make_head(self, n_labels: int) -> nn.Module:
        return ScaledLinear(self.n_latent, n_labels)

    @torch.no_grad()
    def _init_attention_on_svd_axes(self) -> None:
        """Start the first block's queries and keys on the SVD axes.

        Head h reads components ``h*d .. h*d + d - 1`` (d = head dim) of both tokens, so its score
        for gene j is ``sum_c A_ic (B_jc + A_ic) / sqrt(d)``: the cell's reconstruction of its
        expression of gene j from those components, plus a constant. Attention thus starts on
        "the genes this cell expresses, component by component", and training refines it.
        Components beyond ``n_heads * d`` and values stay randomly initialised.
        """
        att = self.blocks[0].attention
        inner = att.n_output
        w = att.qkv.weight  # (3 * inner, m): queries, keys, values
        n = min(inner, w.shape[1])
        eye = torch.zeros(inner, w.shape[1])
        eye[torch.arange(n), torch.arange(n)] = 1.0
        w[:inner] = eye + 0.01 * w[:inner]
        w[inner : 2 * inner] = eye + 0.01 * w[inner : 2 * inner]
        att.qkv.bias[: 2 * inner] = 0.0

    # -- forward -----------------------------------------------------------------------------
    def cell_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The factorisation's cell embedding ``A_i = x P`` of raw input `x`."""
        return self.genes(x) @ self.projection

    @auto_move_data
    def inference(self, x: torch.Tensor, return_attention: bool = False) -> dict[str, torch.Tensor]:
        """Run both blocks; return logits, the renewed cell token and optionally attention.

        ``attention`` is the cell token's attention to the gene tokens in the first block,
        summed over heads: ``(B, g)`` (the cell's weight on itself is dropped).
        """
        cell = self.cell_embedding(x)
        genes, weights = None, None
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            cell, genes, w = block(
                cell,
                genes,
                gene_base=self.gene_embedding if i == 0 else None,
                groups=self.groups,
                cell_only=i == last,
                return_attention=return_attention and i == 0,
            )
            if w is not None:
                weights = w[..., 1:].sum(dim=1)
        out = {MODULE_KEYS.Z: cell}
        if self.has_head:
            out[MODULE_KEYS.LOGITS] = self.classifier(self.dropout(cell))
        if weights is not None:
            out[MODULE_KEYS.ATTENTION] = weights
        return out

    # -- interpretation -------------------------------------------------------------------
    @torch.inference_mode()
    def gene_gene_attention(self, x: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
        """First-block attention among a chosen set of gene tokens, summed over heads.

        For each cell, the tokens ``[s_0, s_j for j in genes]`` attend to one another with the
        first block's queries and keys (no group mask, so genes from different groups can be
        compared). Returns ``(B, k, k)``: row j is how much gene j attends to each gene,
        renormalised over the k genes.
        """
        block = self.blocks[0].attention
        cell = self.cell_embedding(x)
        _, qkv = project_tokens(block.qkv, cell, gene_base=self.gene_embedding[genes])
        q, k, _ = (split_heads(t, block.n_heads) for t in qkv.chunk(3, dim=-1))
        w = ((q @ k.transpose(-1, -2)) / math.sqrt(block.head_dim)).softmax(-1)
        return w.sum(dim=1)


class ScaledLinear(nn.Module):
    """A linear classifier whose logits are scaled by a learned temperature.

    CGRAN's cell token is L2-normalised, which bounds logits by the classifier's weight norm;
    the temperature (NormFace-style, starting at ``2 sqrt(d)``) lets cross-entropy reach
    confident logits without thousands of steps at the paper's small learning rate.
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(math.sqrt(n_in) * 2.0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled logits."""
        return self.linear(x) * self.logit_scale.exp()
