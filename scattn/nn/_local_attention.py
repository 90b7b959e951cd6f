"""Multi-head *local* attention over one cell token and g gene tokens (CGRAN, eq. 5-7).

The cell token attends to every gene and every gene attends to the cell token; a gene
attends to other genes only inside its group. The attention is computed group by group:
gene tokens are gathered into an ``(n_groups, group_size)`` layout and each group attends
to ``[cell token, its own genes]``. The cost is ``O(g * group_size)``, linear in the number of
genes, and no ``(g+1) x (g+1)`` matrix is ever built. :func:`dense_masked_attention` is the
paper's literal masked form, kept as the reference for tests and benchmarks.

Three ways to compute it, the same attention each time:

* gene tokens ``B_j + s_0`` (CGRAN's first block, `gene_base`): :func:`_shared_base_parts`
  and :class:`_SharedBaseGeneTokens` factorise each gene query's scores into a part shared by
  all cells and a part shared by all queries, so the gene-gene attention becomes one matrix
  product per head and group for the whole minibatch, with a hand-written backward (and, in a
  block, the residual, dropout and L2 norm of the gene tokens fused into it);
* only the cell token's output (`cell_only` with explicit tokens, CGRAN's last block):
  :func:`_cell_query_attention` folds the keys and values into the cell query;
* otherwise per-cell tokens through PyTorch's fused ``scaled_dot_product_attention``, groups
  folded into its heads axis (:meth:`LocalMultiheadAttention._grouped_sdpa`), also the
  fallback should the factorised softmax underflow.

Departure from the paper, on purpose: eq. 7 writes ``H ⊙ softmax(QK^T/√d)``, masking *after*
a softmax over all g+1 tokens. Here the mask is applied *before* the softmax, so each row is
a proper distribution over the tokens it may see (the usual definition of local attention).
Masking after a full softmax would need the whole (g+1)^2 score matrix, which is exactly the
cost local attention is there to avoid.
"""

from __future__ import annotations

import functools
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


def split_heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
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
    attention weights, which the fast paths never form (a ``(B, H, g, group_size)`` tensor).
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
            Also return the cell token's attention weights ``(B, H, 1 + g)``.

        Returns
        -------
        Cell output ``(B, H*d)``, gene outputs ``(B, g, H*d)`` (or `None` with `cell_only`),
        and the cell token's attention weights (or `None`).
        """
        if genes is None:
            if gene_base is None:
                raise ValueError("Pass either `genes` or `gene_base`.")
            cell_out, weights, parts = _shared_base_parts(self, cell, gene_base, groups, cell_only,
                                                          return_attention)
            if parts is None:
                return cell_out, None, weights
            try:
                return cell_out, _SharedBaseGeneTokens.apply(*parts, None, None, 0.0, False), weights
            except _Underflow:
                pass
        elif cell_only:
            return (*_cell_query_attention(self, cell, genes, return_attention),)
        return self._grouped_sdpa(cell, genes, gene_base, groups, cell_only, return_attention)

    def _grouped_sdpa(self, cell, genes, gene_base, groups, cell_only, return_attention):
        """The general path: per-cell gene tokens, groups folded into SDPA's heads axis.

        Used for gene tokens that are not ``B_j + s_0`` (a second block that needs the genes'
        outputs) and as the fallback of :func:`_shared_base_parts`.
        """
        H = self.n_heads
        qkv_c, qkv_g = project_tokens(self.qkv, cell, genes, gene_base)
        q_c, k_c, v_c = (split_heads(t.unsqueeze(1), H) for t in qkv_c.chunk(3, dim=-1))  # (B,H,1,d)
        q_g, k_g, v_g = (split_heads(t, H) for t in qkv_g.chunk(3, dim=-1))  # (B,H,g,d)

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


# below exp(-69) ~ 1e-30 a softmax denominator is taken to have underflowed (float32 stays
# normal down to 1e-38): the shared-base path then hands the minibatch to the general path
_UNDERFLOW = 1e-30
_NORM_EPS = 1e-12  # F.normalize's
# cells per chunk of the shared-base path are chosen so that one chunk's (H, G, S, cells, d+1)
# product stays in a core's cache (see _SharedBaseGeneTokens)
_CHUNK_BYTES = 3 << 20


def _full_precision(fn):
    """Run a custom Function's forward or backward outside autocast, on tensors of one
    floating type (at least float32): exponentials and their sums are not safe in 16 bits."""

    @functools.wraps(fn)
    def wrapper(ctx, *args):
        floats = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
        dtype = functools.reduce(torch.promote_types, [a.dtype for a in floats], torch.float32)
        device = floats[0].device.type if floats else "cpu"
        args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        with torch.autocast(device_type=device, enabled=False):
            return fn(ctx, *args)

    return wrapper


class _Underflow(ArithmeticError):
    """A softmax denominator underflowed in :class:`_SharedBaseGeneTokens`."""


def _dropout_level(p: float) -> tuple[int, float]:
    """Dropout on 16-bit uniforms: drop below ``level - 2^15``; `scale` = ``1 / (1 - p')``.

    ``p`` is rounded to a multiple of 2^-16 (``p'``), which the scale uses, so the expectation
    of a kept-and-scaled element is unchanged.
    """
    level = round(p * 65536)
    return level - 32768, 65536 / (65536 - level)


def _uniform16(n: int, device) -> torch.Tensor:
    """`n` uniform 16-bit integers, four from each 64-bit draw.

    ``bernoulli_`` draws one random number per element; on a CPU that costs more than the rest
    of a block's elementwise work on its ``(B, g, d)`` gene tokens.
    """
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    return words.view(torch.int16)[:n]


class _SharedBaseGeneTokens(torch.autograd.Function):
    """The gene queries' side of :func:`_shared_base_parts`, with a hand-written backward.

    Inputs: ``e_gene`` ``(H, G, S, S)`` = exp of the shifted gene-gene scores (0 at padded
    keys), ``e_key`` ``(B, H, G, S)`` = exp of the shifted cell-query scores u, ``vg``
    ``(H, G, S, d)`` the genes' value parts, ``cell_term`` ``(H, G, S, B)`` the cell key's term
    of each denominator (no gradient: it depends on the shifts only), ``va`` ``(B, H, d)`` the
    cell token's value, ``positions`` the gene -> grouped-slot map (`None` when the groups are
    consecutive genes without padding). The attention output of gene j is
    ``a_j = va + num_j / (cell_term_j + den_j)`` with ``[num, den] = e_gene @ (e_key [V, 1])``.

    With `r_gene` ``(g, H*d)`` and `r_cell` ``(B, H*d)`` (the residual
    ``W_r (B_j + s_0) + b_r`` in its gene and cell parts) the output is the block's gene token
    ``L2norm(dropout(a_j) + r_gene_j + r_cell)``; without them, ``a``. Output ``(B, g, H*d)``.

    Cells are processed in chunks whose ``(H, G, S, cells, d+1)`` product fits a core's cache:
    moving the product from the matrix-product layout to the ``(B, g, H*d)`` token layout is then
    a copy inside the cache instead of a strided pass over memory, and the residual, dropout and
    normalisation run on the chunk while it is there. This (and writing each step's result
    where it belongs) is what makes the layer several times cheaper than autograd through the
    same operations on a CPU.
    """

    @staticmethod
    @_full_precision
    def forward(ctx, e_gene, e_key, vg, cell_term, va, positions, r_gene, r_cell, p, training):
        H, G, S, d = vg.shape
        B, k = e_key.shape[0], H * d
        g = G * S if positions is None else positions.numel()
        kw = {"dtype": vg.dtype, "device": vg.device}
        emat = e_gene.reshape(H * G, S, S)
        vg1 = F.pad(vg, (0, 1), value=1.0).unsqueeze(-2)  # (H, G, S, 1, d+1)
        e_cols = e_key.permute(1, 2, 3, 0)  # (H, G, S, B)
        # without a backward to come (inference), a, the inverse denominators and the matrix
        # products' right sides are not kept: a goes through one chunk-sized buffer that stays in
        # cache (a fresh (B, g, H*d) tensor costs a page fault per 4 KiB written)
        backward = any(ctx.needs_input_grad)
        step = _chunk_cells(H * G * S * (d + 1) * vg.element_size(), vg.device)
        inv = torch.empty(H, G, S, B, **kw) if backward else None
        att = torch.empty(B, g, k, **kw) if backward or r_gene is None else None  # a, in gene order
        att_chunk = torch.empty(min(B, step), g, k, **kw) if att is None else None
        tokens = torch.empty(B, g, k, **kw) if r_gene is not None else None
        norm = torch.empty(B, g, 1, **kw) if r_gene is not None else None
        drop = r_gene is not None and training and p > 0
        keep = torch.empty(B, g, k, dtype=torch.bool, device=vg.device) if drop else None
        threshold, scale = _dropout_level(p) if drop else (0, 1.0)
        uniform = _uniform16(B * g * k, vg.device).view(B, g, k) if drop else None
        saved_rhs = []
        for b0 in range(0, B, step):
            b1 = min(B, b0 + step)
            n = b1 - b0
            rhs = torch.empty(H, G, S, n, d + 1, **kw)
            torch.mul(e_cols[..., b0:b1].unsqueeze(-1), vg1, out=rhs)
            if backward:
                saved_rhs.append(rhs)
            prod = torch.bmm(emat, rhs.view(H * G, S, n * (d + 1))).view(H, G, S, n, d + 1)
            total = cell_term[..., b0:b1] + prod[..., d]
            if not bool((total >= _UNDERFLOW).all()):  # NaN included
                raise _Underflow
            inv_c = torch.reciprocal(total)
            if backward:
                inv[..., b0:b1] = inv_c
            a_c = att[b0:b1] if att is not None else att_chunk[:n]
            grouped = a_c if positions is None else torch.empty(n, G * S, k, **kw)
            torch.addcmul(va[b0:b1].permute(1, 0, 2)[:, None, None], prod[..., :d], inv_c.unsqueeze(-1),
                          out=grouped.view(n, G, S, H, d).permute(3, 1, 2, 0, 4))
            if positions is not None:
                torch.index_select(grouped, 1, positions, out=a_c)
            if r_gene is None:
                continue
            z = tokens[b0:b1]
            if drop:
                keep_c = torch.ge(uniform[b0:b1], threshold, out=keep[b0:b1])
                torch.addcmul(r_gene, a_c, keep_c, value=scale, out=z)
            else:
                torch.add(a_c, r_gene, out=z)
            z += r_cell[b0:b1, None]
            nrm = torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min_(_NORM_EPS)
            norm[b0:b1] = nrm
            z /= nrm
        ctx.p, ctx.scale, ctx.chunk, ctx.rhs = p, scale, step, saved_rhs
        ctx.has_residual = r_gene is not None
        ctx.save_for_backward(e_gene, e_key, vg, va, positions, inv, att, tokens, norm, keep)
        return att if r_gene is None else tokens

    @staticmethod
    @_full_precision
    def backward(ctx, grad_out):
        e_gene, e_key, vg, va, positions, inv, att, tokens, norm, keep = ctx.saved_tensors
        H, G, S, d = vg.shape
        B, k = e_key.shape[0], H * d
        g = att.shape[1]
        kw = {"dtype": vg.dtype, "device": vg.device}
        grad_out = grad_out.contiguous()
        emat_t = e_gene.reshape(H * G, S, S).transpose(1, 2)
        vg1 = F.pad(vg, (0, 1), value=1.0).unsqueeze(-2)  # (H, G, S, 1, d+1)
        e_cols = e_key.permute(1, 2, 3, 0)  # (H, G, S, B)
        grad_e = torch.zeros(H * G, S, S, **kw)
        grad_key = torch.empty(H, G, S, B, **kw)
        grad_vg = torch.zeros(H, G, S, 1, d + 1, **kw)
        grad_va = torch.empty(B, k, **kw)
        grad_r_gene = torch.zeros(g, k, **kw) if ctx.has_residual else None
        grad_r_cell = torch.empty(B, k, **kw) if ctx.has_residual else None
        for i, b0 in enumerate(range(0, B, ctx.chunk)):
            b1 = min(B, b0 + ctx.chunk)
            n = b1 - b0
            scale = 1.0
            if ctx.has_residual:  # through L2norm(dropout(a) + r): d a (times the dropout scale)
                t = tokens[b0:b1]
                gt = grad_out[b0:b1]
                s = torch.linalg.vecdot(t, gt).unsqueeze(-1)
                s.masked_fill_(norm[b0:b1] <= _NORM_EPS, 0.0)  # clamped norms: t = z / eps
                ga = torch.addcmul(gt, t, s, value=-1.0).div_(norm[b0:b1])
                grad_r_gene += ga.sum(0)
                torch.sum(ga, 1, out=grad_r_cell[b0:b1])
                if keep is not None:
                    ga.mul_(keep[b0:b1])
                    scale = ctx.scale
            else:
                ga = grad_out[b0:b1]
            torch.sum(ga, 1, out=grad_va[b0:b1])
            if scale != 1.0:
                grad_va[b0:b1] *= scale
            # d a / d den = -(a - va) * inv: one number per (cell, gene, head)
            gden = torch.linalg.vecdot(ga.view(n, g, H, d), att[b0:b1].view(n, g, H, d) - va[b0:b1, None])
            if positions is not None:  # back to the grouped slots (padding: zero gradient)
                ga = ga.new_zeros(n, G * S, k).index_copy_(1, positions, ga)
                gden = gden.new_zeros(n, G * S, H).index_copy_(1, positions, gden)
            inv_c = inv[..., b0:b1] * scale
            gprod = torch.empty(H, G, S, n, d + 1, **kw)
            torch.mul(ga.view(n, G, S, H, d).permute(3, 1, 2, 0, 4), inv_c.unsqueeze(-1), out=gprod[..., :d])
            torch.mul(gden.view(n, G, S, H).permute(3, 1, 2, 0), inv_c, out=gprod[..., d])
            gprod[..., d].neg_()
            gprod_m = gprod.view(H * G, S, n * (d + 1))
            grad_e.baddbmm_(gprod_m, ctx.rhs[i].view(H * G, S, n * (d + 1)).transpose(1, 2))
            grhs = torch.bmm(emat_t, gprod_m).view(H, G, S, n, d + 1)
            torch.linalg.vecdot(grhs, vg1, out=grad_key[..., b0:b1])
            grad_vg += torch.matmul(e_cols[..., b0:b1].unsqueeze(-2), grhs)
        return (grad_e.view(H, G, S, S), grad_key.permute(3, 0, 1, 2), grad_vg[..., 0, :d], None,
                grad_va.view(B, H, d), None, grad_r_gene, grad_r_cell, None, None)


def _chunk_cells(bytes_per_cell: int, device: torch.device) -> int:
    """Cells per chunk of the CPU kernels (at least one); on an accelerator, all at once."""
    if device.type != "cpu":
        return 1 << 62
    return max(1, _CHUNK_BYTES // max(1, bytes_per_cell))


def _shared_base_parts(
    att: LocalMultiheadAttention,
    cell: torch.Tensor,
    gene_base: torch.Tensor,
    groups: GeneGroups,
    cell_only: bool,
    return_attention: bool,
):
    """Local attention of the tokens ``[s_0, B_j + s_0]`` without per-cell gene tokens.

    Per head, write the projections of gene j as ``q_j = Q_j + q``, ``k_j = K_j + k``,
    ``v_j = V_j + v`` (``Q = B W_q^T`` etc. without bias; ``q, k, v`` the cell token's, with
    bias). Every query sees the cell key, so its scores can be shifted by its score for the cell
    key; what is left for gene key l is

        query = cell:    u_l = q . K_l / sqrt(d)
        query = gene j:  G_jl + u_l,   G_jl = Q_j . K_l / sqrt(d),

    the cell key scoring 0. ``G`` does not depend on the cell and ``u`` not on the query, so
    ``exp(G_jl + u_l) = exp(G_jl) exp(u_l)``, and since the weights sum to one and every value
    holds ``v``, gene j's output is

        v + sum_l exp(G_jl) exp(u_l) V_l / (1 + sum_l exp(G_jl) exp(u_l)),

    one ``(S x S) @ (S x B(d+1))`` matrix product per head and group (S = group size, the
    ``+1`` column gives the denominator). This is the same attention, masked before the
    softmax as :class:`LocalMultiheadAttention` defines it, computed without the
    ``(B, H, g, S)`` score tensor or any ``(B, g, d)`` query/key/value tensor. ``G`` and ``u``
    are shifted by their maxima over the keys for a stable exponential; should a
    denominator still underflow (scores spread by more than ~70 within a group),
    :class:`_SharedBaseGeneTokens` raises :class:`_Underflow` and the caller takes the general
    path.

    Returns the cell token's output ``(B, H*d)``, its attention weights (or `None`) and, unless
    `cell_only`, the inputs of :class:`_SharedBaseGeneTokens` (else `None`).
    """
    H, d = att.n_heads, att.head_dim
    scale = d**-0.5
    base = F.linear(gene_base, att.qkv.weight)  # (g, 3Hd): the gene parts, no bias
    qb, kb, vb = (t.unflatten(-1, (H, d)).transpose(0, 1) for t in base.chunk(3, dim=-1))  # (H, g, d)
    qa, _, va = (t.unflatten(-1, (H, d)) for t in att.qkv(cell).chunk(3, dim=-1))  # (B, H, d)

    # the cell token's query against every gene key, relative to the cell key
    u = torch.einsum("bhd,hld->bhl", qa * scale, kb)  # (B, H, g)
    top = u.detach().amax(-1, keepdim=True).clamp_min(0.0)
    eu = torch.exp(u - top)
    e0 = torch.exp(-top)
    den = e0 + eu.sum(-1, keepdim=True)
    cell_out = (va + torch.einsum("bhl,hld->bhd", eu, vb) / den).flatten(1)  # (B, H*d)
    weights = torch.cat([e0, eu], dim=-1) / den if return_attention else None
    if cell_only:
        return cell_out, weights, None

    qg, kg, vg = (groups.to_groups(t) for t in (qb, kb, vb))  # (H, G, S, d), padding zero
    scores = (qg * scale) @ kg.transpose(-1, -2)  # (H, G, S, S): gene-gene, the same for every cell
    ug = groups.to_groups(u.unsqueeze(-1)).squeeze(-1)  # (B, H, G, S)
    if groups.padded:
        valid = groups.key_mask[:, 0, 1:]  # (G, S)
        scores = scores.masked_fill(~valid.unsqueeze(1), float("-inf"))
        # padded slots hold u = 0: exp(0 - max) overflows once a group's real scores are all
        # below about -88, and 0 * inf is NaN; as -inf they weigh exactly nothing
        ug = ug.masked_fill(~valid, float("-inf"))
        ug_max = ug.detach().amax(-1, keepdim=True)
    else:
        ug_max = ug.detach().amax(-1, keepdim=True)  # (B, H, G, 1)
    row_max = scores.detach().amax(-1, keepdim=True)  # (H, G, S, 1)
    e_gene = torch.exp(scores - row_max)  # (H, G, S, S); padded keys 0
    e_key = torch.exp(ug - ug_max)  # (B, H, G, S)
    # the cell key's term of each softmax denominator, on the same shifted scale
    cell_term = torch.exp(-(row_max + ug_max.permute(1, 2, 3, 0)).clamp_min(-80.0))  # (H, G, S, B)
    positions = None if groups.contiguous else groups.positions
    return cell_out, weights, (e_gene, e_key, vg, cell_term, va, positions)


class _CellQueryGenes(torch.autograd.Function):
    """The cell query's softmax over ``[cell, genes]`` and its weighted sum of gene tokens.

    Inputs: gene tokens `t` ``(B, g, n)``, per-head folded keys `r` ``(B, H, n)`` with bias
    term `c` ``(B, H, 1)``, the cell key's score `s_cell` ``(B, H, 1)`` and the score scale.
    Returns the weights ``(B, H, 1 + g)`` and ``sum_j w_j t_j`` ``(B, H, n)``. Cells are taken
    in chunks that stay in cache, and the backward writes the tokens' gradient with one product
    (autograd writes two and adds them).
    """

    @staticmethod
    @_full_precision
    def forward(ctx, t, r, c, s_cell, scale):
        B, g, n_in = t.shape
        weights = torch.empty(B, r.shape[1], g + 1, dtype=t.dtype, device=t.device)
        mix = torch.empty_like(r)
        step = _chunk_cells(g * n_in * t.element_size(), t.device)
        for b0 in range(0, B, step):
            b1 = min(B, b0 + step)
            scores = torch.baddbmm(c[b0:b1], r[b0:b1], t[b0:b1].transpose(1, 2))
            logits = torch.cat([s_cell[b0:b1], scores], dim=-1).mul_(scale)
            torch.softmax(logits, dim=-1, out=weights[b0:b1])
            torch.bmm(weights[b0:b1, :, 1:], t[b0:b1], out=mix[b0:b1])
        ctx.scale, ctx.step = scale, step
        ctx.save_for_backward(t, r, weights)
        return weights, mix

    @staticmethod
    @_full_precision
    def backward(ctx, grad_w, grad_mix):
        t, r, weights = ctx.saved_tensors
        B, g, _ = t.shape
        grad_t, grad_r = torch.empty_like(t), torch.empty_like(r)
        grad_c = torch.empty(B, r.shape[1], 1, dtype=t.dtype, device=t.device)
        grad_s_cell = torch.empty_like(grad_c)
        if grad_mix is None:
            grad_mix = torch.zeros_like(r)
        for b0 in range(0, B, ctx.step):
            b1 = min(B, b0 + ctx.step)
            w, tc = weights[b0:b1], t[b0:b1]
            gw = torch.cat([torch.zeros_like(w[..., :1]), torch.bmm(grad_mix[b0:b1], tc.transpose(1, 2))], -1)
            if grad_w is not None:
                gw += grad_w[b0:b1]
            glog = w * (gw - (w * gw).sum(-1, keepdim=True)) * ctx.scale
            grad_s_cell[b0:b1] = glog[..., :1]
            gs = glog[..., 1:]
            torch.sum(gs, -1, keepdim=True, out=grad_c[b0:b1])
            torch.bmm(gs, tc, out=grad_r[b0:b1])
            torch.bmm(torch.cat([w[..., 1:], gs], 1).transpose(1, 2), torch.cat([grad_mix[b0:b1], r[b0:b1]], 1),
                      out=grad_t[b0:b1])
        return grad_t, grad_r, grad_c, grad_s_cell, None


def _cell_query_attention(
    att: LocalMultiheadAttention,
    cell: torch.Tensor,
    genes: torch.Tensor,
    return_attention: bool,
) -> tuple[torch.Tensor, None, torch.Tensor | None]:
    """The cell token's output only, its keys and values folded into the projections.

    Per head, the score of token t is ``q . (W_k t + b_k) = (W_k^T q) . t + q . b_k``, and as
    the weights sum to one, ``sum_t w_t (W_v t + b_v) = W_v (sum_t w_t t) + b_v``. So no key or
    value of a gene token is computed: two ``(B, g, n_input) x (n_input, H)`` products replace the
    ``(B, g, n_input) x (n_input, 3 H d)`` projection of every gene token.
    """
    H, d = att.n_heads, att.head_dim
    n_in = cell.shape[-1]
    _, w_k, w_v = att.qkv.weight.chunk(3, dim=0)  # (Hd, n_in) each
    b_k, b_v = (att.qkv.bias.chunk(3)[i].view(H, d) for i in (1, 2))
    qa, ka, _ = (t.unflatten(-1, (H, d)) for t in att.qkv(cell).chunk(3, dim=-1))  # (B, H, d)
    r = torch.einsum("bhd,hdn->bhn", qa, w_k.view(H, d, n_in))  # (B, H, n_in)
    bias = (qa * b_k).sum(-1, keepdim=True)  # (B, H, 1)
    s_cell = (qa * ka).sum(-1, keepdim=True)  # (B, H, 1)
    weights, mix = _CellQueryGenes.apply(genes.contiguous(), r, bias, s_cell, d**-0.5)
    mix = weights[..., :1] * cell.unsqueeze(1) + mix  # (B, H, n_in)
    out = torch.einsum("bhn,hdn->bhd", mix, w_v.view(H, d, n_in)) + b_v
    return out.flatten(1), None, weights if return_attention else None


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
    q, k, v = (split_heads(t, attention.n_heads) for t in attention.qkv(tokens).chunk(3, dim=-1))
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
        if gene_base is not None and genes is None and not cell_only:
            out = self._shared_base_forward(cell, gene_base, groups, return_attention)
            if out is not None:
                return out
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

    def _shared_base_forward(self, cell, gene_base, groups, return_attention):
        """Gene tokens ``B_j + s_0``: attention, residual, dropout and L2 norm of the gene tokens
        in one pass over cell chunks (:class:`_SharedBaseGeneTokens`); `None` on underflow."""
        c_att, weights, parts = _shared_base_parts(self.attention, cell, gene_base, groups, False,
                                                   return_attention)
        # residual W_r (B_j + s_0) + b_r = (W_r B_j + b_r) + W_r s_0, never stored per cell
        r_gene = self.residual(gene_base)
        r_cell = F.linear(cell, self.residual.weight)
        try:
            gene_out = _SharedBaseGeneTokens.apply(*parts, r_gene, r_cell, self.dropout.p, self.training)
        except _Underflow:
            return None
        cell_out = F.normalize(self.dropout(c_att) + r_cell + self.residual.bias, dim=-1)
        return cell_out, gene_out, weights
