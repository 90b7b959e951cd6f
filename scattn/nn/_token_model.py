"""A token transformer (BERT's encoder): token and position embeddings, encoder blocks, a
masked-token head that scores only the positions asked for."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._transformer import _ACTIVATIONS, TransformerBlock, padding_mask, run_blocks


class TokenEncoder(nn.Module):
    """Token embeddings plus learned position embeddings, layer norm and dropout (BERT's
    embedding layer), then `n_layers` :class:`TransformerBlock` (post-norm).

    Parameters
    ----------
    vocab_size
        Number of token ids.
    max_length
        Longest sequence (number of position embeddings).
    d_model, n_layers, n_heads, d_ff
        Width, depth, heads and feed-forward width.
    dropout
        Dropout on the embeddings and sub-layer outputs.
    attention_dropout
        Dropout on the attention weights (see :class:`TransformerBlock`).
    activation
        Feed-forward activation (``"relu"`` or ``"gelu"``).
    eps
        Layer norm epsilon (BERT: 1e-12).
    pad_id
        The padding token id (its embedding starts at zero and gets no gradient, as in BERT).
    """

    def __init__(self, vocab_size: int, max_length: int, d_model: int, n_layers: int, n_heads: int,
                 d_ff: int, *, dropout: float = 0.0, attention_dropout: float = 0.0, activation: Literal["relu", "gelu"] = "relu",
                 eps: float = 1e-12, pad_id: int = 0) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.position_embedding = nn.Embedding(max_length, d_model)
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout=dropout, attention_dropout=attention_dropout,
                             activation=activation, eps=eps)
            for _ in range(n_layers)
        )
        self.max_length = max_length
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self, std: float = 0.02) -> None:
        """BERT's initialisation: normal(0, 0.02) weights, zero biases, unit layer norms."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                m.weight.normal_(0.0, std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()

    def embed(self, ids: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T)`` ids -> ``(B, T, d)`` embedded tokens (`extra` is added before the norm)."""
        t = ids.shape[1]
        if t > self.max_length:
            raise ValueError(f"Sequences of {t} tokens exceed the model's {self.max_length} positions.")
        h = self.token_embedding(ids) + self.position_embedding.weight[:t]
        if extra is not None:
            h = h + extra
        return self.dropout(self.norm(h))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, *,
                attention: Literal["none", "last", "all"] = "none",
                extra: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode ``(B, T)`` token ids (the first ``lengths[b]`` real, the rest padding).

        Returns the ``(B, T, d)`` last hidden states and the ``(B, heads, T, T)`` attention of
        the last block (``attention="last"``), of every block (``"all"``) or of none.
        """
        h = self.embed(ids, extra)
        mask = padding_mask(lengths, ids.shape[1])
        return run_blocks(self.blocks, h, mask, attention)


class MaskedTokenHead(nn.Module):
    """BERT's masked-LM head: dense, activation, layer norm, then scores over the vocabulary
    with the token embeddings as output weights (tied, as BERT and Geneformer do) plus a bias.

    Call it on the hidden states of the masked positions only: the vocabulary projection is
    the costliest matrix product of pretraining, and the other positions are not scored.
    """

    def __init__(self, d_model: int, embedding: nn.Embedding, *,
                 activation: Literal["relu", "gelu"] = "relu", eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))
        # the embedding module is the encoder's (tied, not a copy): kept out of this module's
        # children so that its weight is saved once, under the encoder
        object.__setattr__(self, "_embedding", embedding)
        self.activation = activation
        nn.init.normal_(self.dense.weight, 0.0, 0.02)
        nn.init.zeros_(self.dense.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` hidden states -> ``(N, vocab)`` scores."""
        h = self.norm(_ACTIVATIONS[self.activation](self.dense(h)))
        return F.linear(h, self._embedding.weight, self.bias)
