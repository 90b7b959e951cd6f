"""Multi-head *local* attention over one cell token and g gene tokens (CGRAN, eq. 5-7).

The cell token attends to every gene and every gene attends to the cell token; a gene
attends to other genes only inside its group. The attention is computed group by group:
gene tokens are gathered into an ``(n_groups, group_size)`` layout and each group attends
to ``[cell token, its own genes]``. The cost is ``O(g * group_size)``, linear in the number of
genes, and no ``(g+1) x (g+1)`` matrix is ever built. :func:`dense_masked_attention` is the
paper's literal masked form, kept as the reference for tests and benchmarks.

Departure from the paper, on purpose: eq. 7 writes ``H ⊙ softmax(QK^T/√d)``, masking *after*
a softmax over all g+1 tokens. Here the mask is applied *before* the softmax, so each row is
a proper distribution over the tokens it may see (the usual definition of local attention).
Masking after a full softmax would need the whole (g+1)^2 score matrix, which is exactly the
cost local attention is there to avoid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GeneGroups(nn.Module):
    """The gene groups of a local attention layer, as buffers that travel with the model.

    Parameters
    ----------
    group_index
        ``(n_groups, max_group_size)`` gene positions, padded with -1.
    """

    def __init__(self, group_index: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("group_index", torch.as_tensor(group_index, dtype=torch.long))
        self._derive()

    def _derive(self) -> None:
        idx = self.group_index
        valid = idx >= 0
        n_genes = int(valid.sum())
        flat = idx.flatten()
        self.n_genes = n_genes
        # gene j sits at flat position positions[j] of the padded layout
        positions = torch.empty(n_genes, dtype=torch.long, device=idx.device)
        flat_pos = torch.arange(flat.numel(), device=idx.device)
        positions[flat[flat >= 0]] = flat_pos[flat >= 0]
        self.register_buffer("positions", positions, persistent=False)
        self.register_buffer("gather_index", torch.where(valid, idx, n_genes).flatten(), persistent=False)
        self.padded = bool((~valid).any())
        self.contiguous = (not self.padded) and torch.equal(flat, torch.arange(n_genes, device=idx.device))
        # key mask per group: the cell key (always visible) then the group's genes
        key_mask = torch.cat([torch.ones(idx.shape[0], 1, dtype=torch.bool, device=idx.device), valid], 1)
        self.register_buffer("key_mask", key_mask[:, None, :], persistent=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_groups, max_group_size)``."""
        return tuple(self.group_index.shape)

    def to_groups(self, t: torch.Tensor) -> torch.Tensor:
        """``(..., g, d) -> (..., n_groups, group_size, d)``, padding slots zero."""
        n_groups, size = self.shape
        if self.contiguous:
            return t.unflatten(-2, (n_groups, size))
        padded = torch.cat([t, t.new_zeros(*t.shape[:-2], 1, t.shape[-1])], dim=-2)
        return padded.index_select(-2, self.gather_index).unflatten(-2, (n_groups, size))

    def from_groups(self, t: torch.Tensor) -> torch.Tensor:
        """``(..., n_groups, group_size, d) -> (..., g, d)`` in gene order."""
        flat = t.flatten(-3, -2)
        if self.contiguous:
            return flat
        return flat.index_select(-2, self.positions)


def _split_heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(..., L, H*d) -> (..., H, L, d)``."""
    t = t.unflatten(-1, (n_heads, -1))
    return t.movedim(-2, -3)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """``(..., H, L, d) -> (..., L, H*d)``."""
    return t.movedim(-3, -2).flatten(-2)


def project_tokens(
    linear: nn.Linear,
    cell: torch.Tensor,
    genes: torch.Tensor | None = None,
    gene_base: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply `linear` to the cell token and to the gene tokens.

    When the gene tokens are ``s_j = B_j + s_0`` (CGRAN's first block), pass `gene_base` = B
    instead of `genes`: by linearity ``W(B_j + s_0) + b = (W B_j + b) + W s_0``, so the big
    ``cells x genes x dims`` product is replaced by one ``genes x dims`` product and a broadcast
    add. The result is identical.
    """
    cell_out = linear(cell)
    if genes is not None:
        return cell_out, linear(genes)
    if gene_base is None:
        raise ValueError("Pass either `genes` or `gene_base`.")
    base = linear(gene_base)  # (g, out), bias included once
    return cell_out, base.unsqueeze(0) + (cell_out - (linear.bias if linear.bias is not None else 0)).unsqueeze(1)


class LocalMultiheadAttention(nn.Module):
    """Multi-head attention of a cell token and gene tokens with gene groups.

    Parameters
    ----------
    n_input
        Token dimension.
    n_heads
        Number of heads.
    head_dim
        Dimension of each head's queries, keys and values.

    Notes
    -----
    Dropout is applied to the block's outputs (:class:`LocalAttentionBlock`), not to the
    attention weights: dropout on a ``(B, H, g, group_size)`` weight tensor would force the
    slow unfused attention path and costs more than the rest of the layer.
    """

    def __init__(self, n_input: int, n_heads: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.qkv = nn.Linear(n_input, 3 * n_heads * head_dim)

    @property
    def n_output(self) -> int:
        """Output dimension (heads x head_dim)."""
        return self.n_heads * self.head_dim

    def forward(
        self,
        cell: torch.Tensor,
        genes: torch.Tensor | None = None,
        *,
        gene_base: torch.Tensor | None = None,
        groups: GeneGroups,
        cell_only: bool = False,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Attend.

        Parameters
        ----------
        cell
            ``(B, n_input)`` cell tokens.
        genes
            ``(B, g, n_input)`` gene tokens, or `None` with `gene_base`.
        gene_base
            ``(g, n_input)`` gene embeddings; gene tokens are ``gene_base + cell``.
        groups
            The gene groups.
        cell_only
            Only compute the cell token's output (the gene tokens' outputs are not needed
            after the last block).
        return_attention
            Also return the cell token's attention weights ``(B, H, 1 + g)`` (explicit softmax
            path; the fast path is used otherwise).

        Returns
        -------
        Cell output ``(B, H*d)``, gene outputs ``(B, g, H*d)`` (or `None` with `cell_only`),
        and the cell token's attention weights (or `None`).
        """
        H = self.n_heads
        qkv_c, qkv_g = project_tokens(self.qkv, cell, genes, gene_base)
        q_c, k_c, v_c = (_split_heads(t.unsqueeze(1), H) for t in qkv_c.chunk(3, dim=-1))  # (B,H,1,d)
        q_g, k_g, v_g = (_split_heads(t, H) for t in qkv_g.chunk(3, dim=-1))  # (B,H,g,d)

        keys = torch.cat([k_c, k_g], dim=-2)
        values = torch.cat([v_c, v_g], dim=-2)
        weights = None
        if return_attention:
            scores = (q_c @ keys.transpose(-1, -2)) / math.sqrt(self.head_dim)
            weights = scores.softmax(dim=-1)
            cell_out = weights @ values
            weights = weights.squeeze(-2)
        else:
            cell_out = F.scaled_dot_product_attention(q_c, keys, values)
        cell_out = _merge_heads(cell_out).squeeze(1)
        if cell_only:
            return cell_out, None, weights

        # groups fold into the heads axis: (B, H*G, S, d) keeps SDPA on its fused 4-d kernel
        n_groups, size = groups.shape
        q = groups.to_groups(q_g).flatten(1, 2)
        k = torch.cat([k_c.unsqueeze(2).expand(-1, -1, n_groups, -1, -1), groups.to_groups(k_g)], dim=-2)
        v = torch.cat([v_c.unsqueeze(2).expand(-1, -1, n_groups, -1, -1), groups.to_groups(v_g)], dim=-2)
        mask = groups.key_mask.repeat(H, 1, 1).unsqueeze(0) if groups.padded else None
        gene_out = F.scaled_dot_product_attention(q, k.flatten(1, 2), v.flatten(1, 2), attn_mask=mask)
        gene_out = _merge_heads(groups.from_groups(gene_out.unflatten(1, (H, n_groups))))
        return cell_out, gene_out, weights


def dense_masked_attention(
    attention: LocalMultiheadAttention,
    cell: torch.Tensor,
    genes: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's literal form: one ``(g+1) x (g+1)`` masked attention over all tokens.

    Uses the same weights as `attention`; only for tests (equivalence) and benchmarks (cost).
    `mask` is the boolean H of eq. 6 (True where attention is allowed).
    """
    tokens = torch.cat([cell.unsqueeze(1), genes], dim=1)
    q, k, v = (_split_heads(t, attention.n_heads) for t in attention.qkv(tokens).chunk(3, dim=-1))
    out = _merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    return out[:, 0], out[:, 1:]


class LocalAttentionBlock(nn.Module):
    """CGRAN attention block: local multi-head attention + residual FC, then L2 normalisation.

    ``out = L2norm(dropout(attention(x)) + W_r x + b_r)``: the residual goes through a fully
    connected layer because the block changes the token dimension.
    """

    def __init__(self, n_input: int, n_heads: int, head_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attention = LocalMultiheadAttention(n_input, n_heads, head_dim)
        self.residual = nn.Linear(n_input, n_heads * head_dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def n_output(self) -> int:
        """Output token dimension."""
        return self.attention.n_output

    def forward(
        self,
        cell: torch.Tensor,
        genes: torch.Tensor | None = None,
        *,
        gene_base: torch.Tensor | None = None,
        groups: GeneGroups,
        cell_only: bool = False,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Same arguments and returns as :meth:`LocalMultiheadAttention.forward`."""
        c_att, g_att, weights = self.attention(
            cell, genes, gene_base=gene_base, groups=groups, cell_only=cell_only,
            return_attention=return_attention,
        )
        if cell_only:
            c_res = self.residual(cell)
            return F.normalize(self.dropout(c_att) + c_res, dim=-1), None, weights
        c_res, g_res = project_tokens(self.residual, cell, genes, gene_base)
        cell_out = F.normalize(self.dropout(c_att) + c_res, dim=-1)
        gene_out = F.normalize(self.dropout(g_att) + g_res, dim=-1)
        return cell_out, gene_out, weights
