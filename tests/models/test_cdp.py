"""Cross-modal Dynamic Perception: window sampling, gradients, masks, fixed-window equivalence."""

import pytest
import torch

from avel.models.cdp import (
    CdpConfig,
    CrossModalDynamicPyramid,
    DynamicWindowAttention,
    base_window_positions,
    sample_rows,
    target_window_positions,
)

torch.set_num_threads(1)


def test_zero_size_and_offset_reproduce_base_window_keys():
    B, H, N, W, Dh = 2, 3, 4, 8, 5
    torch.manual_seed(0)
    k = torch.randn(B, H, N * W, Dh)
    pos = target_window_positions(torch.zeros(B, H, N), torch.zeros(B, H, N), W)  # B x H x N x W
    torch.testing.assert_close(pos, base_window_positions(N, W).expand(B, H, N, W))
    mask = torch.ones(B, N * W, dtype=torch.bool)
    sampled, valid = sample_rows(k, pos.reshape(B, H, N * W), mask)
    assert valid.all()
    # exactly the keys plain (fixed) local window attention would use
    torch.testing.assert_close(sampled.view(B, H, N, W, Dh), k.view(B, H, N, W, Dh), rtol=0, atol=1e-6)


def test_target_window_geometry():
    W = 4
    # size P = log 2 doubles the window around the same centre; offset 1 shifts by one window
    pos = target_window_positions(torch.tensor([[0.6931471805599453, 0.0]]), torch.tensor([[0.0, 1.0]]), W)
    torch.testing.assert_close(pos[0, 0], torch.tensor([-1.5, 0.5, 2.5, 4.5]))
    torch.testing.assert_close(pos[0, 1], torch.tensor([8.0, 9.0, 10.0, 11.0]))
    rows = target_window_positions(torch.zeros(1, 1), torch.tensor([[0.5]]), W, offset_unit="row")
    torch.testing.assert_close(rows[0, 0], torch.tensor([0.5, 1.5, 2.5, 3.5]))


def test_linear_interpolation_and_borders():
    x = torch.arange(6, dtype=torch.float32).view(1, 1, 6, 1) * 10  # rows 0, 10, ..., 50
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.bool)  # rows 4, 5 padded
    pos = torch.tensor([[[1.25, -3.0, 2.5, 3.5, 3.2]]])
    out, valid = sample_rows(x, pos, mask, border="clamp")
    # clamp keeps positions inside the valid rows 0..3
    torch.testing.assert_close(out[0, 0, :, 0], torch.tensor([12.5, 0.0, 25.0, 30.0, 30.0]))
    assert valid.all()
    out, valid = sample_rows(x, pos, mask, border="zeros")
    # 3.5: half the weight on padded row 4 (contributes nothing); 3.2: 80% on row 3 -> valid
    torch.testing.assert_close(out[0, 0, :, 0], torch.tensor([12.5, 0.0, 25.0, 15.0, 24.0]))
    assert valid.tolist() == [[[True, False, True, True, True]]]
    out, _ = sample_rows(x, torch.tensor([[[1.4, 1.6]]]), mask, interpolation="nearest")
    torch.testing.assert_close(out[0, 0, :, 0], torch.tensor([10.0, 20.0]))


def test_gradients_flow_to_window_size_and_offset():
    torch.manual_seed(0)
    B, H, N, W, Dh = 1, 2, 3, 4, 3
    size = torch.full((B, H, N), 0.1, requires_grad=True)
    offset = torch.full((B, H, N), 0.05, requires_grad=True)
    k = torch.randn(B, H, N * W, Dh)
    pos = target_window_positions(size, offset, W)
    sampled, _ = sample_rows(k, pos.reshape(B, H, N * W), torch.ones(B, N * W, dtype=torch.bool))
    (sampled * torch.randn_like(sampled)).sum().backward()
    assert size.grad.abs().min() > 0 and offset.grad.abs().min() > 0


def _attn(mode="cdp", **kw):
    torch.manual_seed(0)
    cfg = CdpConfig(mode=mode, num_heads=2, window_size=4, attn_pdrop=0.0, proj_pdrop=0.0, **kw)
    return DynamicWindowAttention(16, cfg).eval()


def test_fixed_windows_equal_explicit_local_attention():
    attn = _attn("fixed", neighbor_windows=0)
    torch.manual_seed(1)
    xkv, xq = torch.randn(1, 16, 8), torch.randn(1, 16, 8)
    mask = torch.ones(1, 1, 8, dtype=torch.bool)
    out, _ = attn(xkv, xq, mask)
    q = attn.query(attn.query_norm(attn.query_conv(xq, mask)[0]))
    k = attn.key(attn.key_norm(attn.key_conv(xkv, mask)[0]))
    v = attn.value(attn.value_norm(attn.value_conv(xkv, mask)[0]))
    expected = torch.zeros(1, 16, 8)
    for h in range(2):
        ch = slice(8 * h, 8 * h + 8)
        for w in range(2):
            rows = slice(4 * w, 4 * w + 4)
            a = torch.softmax(q[0, ch, rows].T @ k[0, ch, rows] / 8**0.5, dim=-1)  # 4 x 4
            expected[0, ch, rows] = (a @ v[0, ch, rows].T).T
    torch.testing.assert_close(out, attn.proj(expected), rtol=1e-5, atol=1e-6)


def test_dynamic_attention_starts_as_fixed_and_learns_windows():
    dyn, fixed = _attn("cdp"), _attn("fixed")
    fixed.load_state_dict(dyn.state_dict(), strict=False)
    torch.manual_seed(2)
    xkv, xq = torch.randn(2, 16, 12), torch.randn(2, 16, 12)
    mask = torch.ones(2, 1, 12, dtype=torch.bool)
    out_dyn, _ = dyn(xkv, xq, mask)
    torch.testing.assert_close(out_dyn, fixed(xkv, xq, mask)[0])  # zero-initialised WA = base windows
    (out_dyn * torch.randn_like(out_dyn)).sum().backward()
    assert dyn.window_adapt.conv.weight.grad.abs().sum() > 0
    assert dyn.window_adapt.conv.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("mode,border", [("cdp", "clamp"), ("cdp", "zeros"), ("fixed", "clamp"), ("global", "clamp")])
def test_padded_rows_do_not_leak(mode, border):
    torch.manual_seed(3)
    attn = _attn(mode, border=border)
    if attn.window_adapt is not None:  # non-trivial windows that reach into the padding
        torch.nn.init.normal_(attn.window_adapt.conv.weight, std=0.5)
        torch.nn.init.constant_(attn.window_adapt.conv.bias, 0.4)
    T, valid_len = 14, 10
    mask = (torch.arange(T) < valid_len).view(1, 1, T)
    xkv, xq = torch.randn(1, 16, T) * mask, torch.randn(1, 16, T) * mask  # padded rows are zero (contract)
    out, out_mask = attn(xkv, xq, mask)
    assert torch.equal(out_mask, mask)
    assert (out[..., valid_len:] == 0).all()
    # padded keys/values (non-zero after the projections' biases) must not change valid rows:
    # same result as the unpadded sequence
    short, _ = attn(xkv[..., :valid_len], xq[..., :valid_len], mask[..., :valid_len])
    torch.testing.assert_close(out[..., :valid_len], short, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["cdp", "fixed", "global", "none"])
def test_pyramid_levels_for_lengths_not_multiple_of_window(mode):
    torch.manual_seed(4)
    cfg = CdpConfig(mode=mode, num_levels=3, num_heads=2, window_size=8)
    pyr = CrossModalDynamicPyramid(dim=16, cfg=cfg)
    mask = (torch.arange(20) < 15).view(1, 1, 20).repeat(2, 1, 1)
    v, a = torch.randn(2, 16, 20) * mask, torch.randn(2, 16, 20) * mask
    feats, masks = pyr(v, a, mask)
    assert [f.shape for f in feats] == [(2, 32, 20), (2, 32, 10), (2, 32, 5)]
    assert [int(m[0].sum()) for m in masks] == [15, 8, 4]
    for f, m in zip(feats, masks):
        assert torch.isfinite(f).all() and (f * ~m == 0).all()
    if mode == "none":
        assert sum(p.numel() for p in pyr.parameters()) == 0


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="cdp.mode"):
        CdpConfig(mode="sparse")
    with pytest.raises(ValueError, match="cdp.border"):
        CdpConfig(border="reflect")


def test_mixed_precision_keeps_positions_in_float32():
    attn = _attn("cdp")
    torch.nn.init.normal_(attn.window_adapt.conv.weight, std=0.3)
    torch.manual_seed(5)
    xkv, xq = torch.randn(1, 16, 24), torch.randn(1, 16, 24)
    mask = torch.ones(1, 1, 24, dtype=torch.bool)
    ref, _ = attn(xkv, xq, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attn(xkv, xq, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
