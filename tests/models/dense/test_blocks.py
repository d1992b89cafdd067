import math

import pytest
import torch
from torch.nn import functional as F

from avel.models.blocks import (
    AffineDropPath,
    ChannelLayerNorm,
    MaskedConv1D,
    MaskedMHCA,
    Scale,
    TemporalGate,
    TransformerBlock,
    drop_path,
    sinusoid_encoding,
)


def _mask(B, T, lengths):
    return (torch.arange(T)[None] < torch.tensor(lengths)[:, None])[:, None]  # B x 1 x T


def test_masked_conv_zeroes_padding_and_strides():
    torch.manual_seed(0)
    conv = MaskedConv1D(3, 5, 3, stride=2)
    x = torch.randn(2, 3, 8)
    mask = _mask(2, 8, [8, 5])
    out, out_mask = conv(x, mask)
    assert out.shape == (2, 5, 4)
    assert out_mask[1, 0].tolist() == [True, True, True, False]
    assert torch.all(out[1, :, 3] == 0)
    with pytest.raises(ValueError, match="odd"):
        MaskedConv1D(3, 5, 4)
    with pytest.raises(ValueError, match="divisible"):
        conv(torch.randn(1, 3, 7), _mask(1, 7, [7]))


def test_channel_layernorm_matches_layer_norm_over_channels():
    torch.manual_seed(0)
    ln = ChannelLayerNorm(6)
    with torch.no_grad():
        ln.weight.uniform_()
        ln.bias.uniform_()
    x = torch.randn(2, 6, 5)
    ref = F.layer_norm(x.transpose(1, 2), (6,), ln.weight.view(-1), ln.bias.view(-1), eps=1e-5).transpose(1, 2)
    assert torch.allclose(ln(x), ref, atol=1e-5)


def test_attention_with_zero_padding_equals_unpadded():
    torch.manual_seed(0)
    attn = MaskedMHCA(8, 2).eval()
    x = torch.randn(1, 8, 6)
    padded = F.pad(x, (0, 4))
    out_short, _ = attn(x, x, _mask(1, 6, [6]))
    out_pad, _ = attn(padded, padded, _mask(1, 10, [6]))
    assert torch.allclose(out_short, out_pad[..., :6], atol=1e-5)
    assert torch.all(out_pad[..., 6:] == 0)
    # without the key mask the padded rows would be attended to
    out_nomask, _ = attn(padded, padded, _mask(1, 10, [10]))
    assert not torch.allclose(out_nomask[..., :6], out_short, atol=1e-3)


def test_transformer_block_downsamples_with_residual_from_kv():
    torch.manual_seed(0)
    block = TransformerBlock(8, 4, stride=2, path_pdrop=0.1).eval()
    x = torch.randn(2, 8, 16)
    q = torch.randn(2, 8, 16)
    out, m = block(x, q, _mask(2, 16, [16, 9]))
    assert out.shape == (2, 8, 8) and m.shape == (2, 1, 8)
    assert int(m[1].sum()) == 5 and torch.all(out[1, :, 5:] == 0)
    # the query only enters through attention: a zero-initialised output projection leaves the max-pooled residual
    with torch.no_grad():
        block.attn.proj.weight.zero_()
        block.attn.proj.bias.zero_()
        for p in block.mlp.parameters():
            p.zero_()
    out, _ = block(x, q, _mask(2, 16, [16, 16]))
    assert torch.allclose(out, F.max_pool1d(x, 3, 2, 1), atol=1e-6)


def test_temporal_gate_range_and_length():
    gate = TemporalGate(8, 2, stride=2)
    g = gate(torch.randn(2, 8, 16), _mask(2, 16, [16, 8]))
    assert g.shape == (2, 1, 8)
    assert torch.all((g > 0) & (g < 1))


def test_sinusoid_encoding_values():
    pe = sinusoid_encoding(5, 4)  # 1 x 4 x 5
    assert pe.shape == (1, 4, 5)
    pos = 3
    expected = [math.sin(pos), math.cos(pos), math.sin(pos / 100), math.cos(pos / 100)]
    assert torch.allclose(pe[0, :, pos], torch.tensor(expected), atol=1e-6)


def test_drop_path_and_scale():
    x = torch.ones(1000, 2, 3)
    assert torch.equal(drop_path(x, 0.3, training=False), x)
    y = drop_path(x, 0.3, training=True)
    dropped = (y[:, 0, 0] == 0).float().mean().item()
    assert 0.2 < dropped < 0.4
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))
    adp = AffineDropPath(2, drop_prob=0.0)
    assert torch.allclose(adp(torch.ones(1, 2, 3)), torch.full((1, 2, 3), 1e-4))
    s = Scale(2.0)
    assert torch.equal(s(torch.ones(3)), torch.full((3,), 2.0))
