"""The transformer block: PyTorch's own encoder layer as the reference, both attention paths."""

import pytest
import torch
from torch import nn

from scattn.nn import SelfAttention, TransformerBlock, padding_mask


def _copy_into_torch_layer(block: TransformerBlock, ref: nn.TransformerEncoderLayer) -> None:
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attention.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.attention.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(block.attention.out.weight)
        ref.self_attn.out_proj.bias.copy_(block.attention.out.bias)
        ref.linear1.load_state_dict(block.ff_in.state_dict())
        ref.linear2.load_state_dict(block.ff_out.state_dict())
        ref.norm1.load_state_dict(block.norm1.state_dict())
        ref.norm2.load_state_dict(block.norm2.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_block_matches_pytorch_encoder_layer(norm_first, activation):
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32, activation=activation, norm_first=norm_first, eps=1e-12).eval()
    ref = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation=activation, batch_first=True,
                                     norm_first=norm_first, layer_norm_eps=1e-12).eval()
    _copy_into_torch_layer(block, ref)
    x = torch.randn(3, 7, 16)
    lengths = torch.tensor([7, 4, 1])
    mask = padding_mask(lengths, 7)
    with torch.no_grad():
        ours, _ = block(x, attn_mask=mask)
        theirs = ref(x, src_key_padding_mask=~mask[:, 0, 0])
        explicit, weights = block(x, attn_mask=mask, return_attention=True)
    for b, n in enumerate(lengths.tolist()):  # padded positions' outputs are not compared
        torch.testing.assert_close(ours[b, :n], theirs[b, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit, ours, atol=1e-5, rtol=1e-5)
    assert weights.shape == (3, 4, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 7))
    assert float(weights[1, :, :, 4:].abs().max()) == 0.0  # nothing attends to padding


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(10, 3)
    with pytest.raises(ValueError, match="activation"):
        TransformerBlock(8, 2, 16, activation="tanh")
