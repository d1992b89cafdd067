"""I3D: SAME padding, architecture size, key layouts, converters, preprocessing and tiny shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import avel.extractors as E
from avel.extractors.i3d import MaxPool3dSame, Unit3D, max_pool_3d_same, same_pad_amounts
from avel.extractors.preprocess import flow_to_i3d
from avel.extractors.weights import i3d_hassony_to_piergiaj, i3d_piergiaj_to_hassony

# Inception blocks from the I3D paper / piergiaj code: (name, in_channels, [b0, b1a, b1b, b2a, b2b, b3b])
BLOCKS = [
    ("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]),
    ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
    ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]),
    ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]),
    ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128]),
]
STEM = [("Conv3d_1a_7x7", None, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]


def official_piergiaj_shapes(in_channels: int, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a piergiaj InceptionI3d checkpoint, written from the architecture table."""
    shapes: dict[str, tuple[int, ...]] = {}

    def unit(prefix: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{prefix}.conv3d.weight"] = (cout, cin, k, k, k)
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{s}"] = (cout,)

    for name, cin, cout, k in STEM:
        unit(name, cin or in_channels, cout, k)
    for name, cin, c in BLOCKS:
        assert c[0] + c[2] + c[4] + c[5] in (256, 480, 512, 528, 832, 1024)
        unit(f"{name}.b0", cin, c[0], 1)
        unit(f"{name}.b1a", cin, c[1], 1)
        unit(f"{name}.b1b", c[1], c[2], 3)
        unit(f"{name}.b2a", cin, c[3], 1)
        unit(f"{name}.b2b", c[3], c[4], 3)
        unit(f"{name}.b3b", cin, c[5], 1)
    shapes["logits.conv3d.weight"] = (num_classes, 1024, 1, 1, 1)
    shapes["logits.conv3d.bias"] = (num_classes,)
    return shapes


def param_count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for k, s in shapes.items() if "running" not in k)


@pytest.mark.parametrize(
    "size,k,s", [(224, 7, 2), (225, 7, 2), (24, 7, 2), (13, 3, 2), (7, 3, 1), (6, 2, 2), (5, 1, 1), (3, 3, 2)]
)
def test_same_padding_matches_tf_rule(size, k, s):
    front, back = same_pad_amounts(size, k, s)
    out_tf = math.ceil(size / s)  # TF SAME output size
    total = max((out_tf - 1) * s + k - size, 0)  # TF's definition of total padding
    assert (front, back) == (total // 2, total - total // 2)
    assert (size + front + back - k) // s + 1 == out_tf


def test_unit3d_equals_conv_on_explicitly_padded_input():
    torch.manual_seed(0)
    unit = Unit3D(2, 3, (3, 7, 5), (2, 2, 1), batch_norm=False, relu=False).eval()
    x = torch.randn(1, 2, 9, 12, 7)
    # by hand: T 9 s2 k3 -> pad 2 (1,1); H 12 s2 k7 -> pad 5 (2,3); W 7 s1 k5 -> pad 4 (2,2)
    ref = F.conv3d(F.pad(x, (2, 2, 2, 3, 1, 1)), unit.conv3d.weight, stride=(2, 2, 1))
    out = unit(x)
    assert out.shape == (1, 3, 5, 6, 7)
    torch.testing.assert_close(out, ref)
    pool = MaxPool3dSame((1, 3, 3), (1, 2, 2))
    y = torch.rand(1, 1, 2, 5, 6)
    # H 5 s2 k3 -> 5 % 2 = 1 -> pad 2 (1,1); W 6 s2 k3 -> pad 1 (0,1)
    torch.testing.assert_close(pool(y), F.max_pool3d(F.pad(y, (0, 1, 1, 1)), (1, 3, 3), (1, 2, 2)))


@pytest.mark.parametrize(
    "kernel,stride",
    [
        ((1, 3, 3), (1, 2, 2)),
        ((3, 3, 3), (1, 1, 1)),
        ((3, 3, 3), (2, 2, 2)),
        ((2, 2, 2), (2, 2, 2)),
        ((2, 3, 1), (1, 3, 2)),
        ((1, 4, 5), (1, 3, 1)),
    ],
)
def test_same_max_pool_is_bitwise_max_pool3d_of_the_inf_padded_input(kernel, stride):
    """Axis maxima without a padded copy: bitwise max_pool3d of the -inf padded input (TF SAME),
    on signed inputs (where zero padding would differ) and with NaNs propagated."""
    g = torch.Generator().manual_seed(1)
    for shape in ((2, 5, 7, 9, 11), (1, 3, 4, 8, 6), (1, 2, 1, 2, 3)):
        x = torch.randn(*shape, generator=g)
        x[0, 0, 0, 1, 2] = float("nan")  # NaN propagates as in max_pool3d
        before = x.clone()
        pads = []
        for d in (2, 1, 0):
            pads.extend(same_pad_amounts(shape[2 + d], kernel[d], stride[d]))
        want = F.max_pool3d(F.pad(x, pads, value=float("-inf")), kernel, stride)
        got = max_pool_3d_same(x, kernel, stride)
        assert got.shape == want.shape
        assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0)) and torch.equal(got.isnan(), want.isnan())
        assert torch.equal(x.nan_to_num(7.0), before.nan_to_num(7.0))  # the input is not written


def test_unit3d_symmetric_padding_path_is_bitwise_explicit_padding():
    """Stride-1 3x3x3 units pass the padding to the convolution: same bits as padding a copy."""
    torch.manual_seed(0)
    unit = Unit3D(16, 8, (3, 3, 3), (1, 1, 1), batch_norm=False, relu=False).eval()
    x = torch.randn(2, 16, 6, 14, 14)
    ref = F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1)), unit.conv3d.weight)
    assert torch.equal(unit(x), ref)


def test_unit3d_batchnorm_hyperparameters():
    u = Unit3D(2, 4)
    assert u.conv3d.bias is None and u.bn.eps == 1e-3 and u.bn.momentum == 0.01
    assert E.get("i3d_rgb").make_config().bn_eps is None  # from the checkpoint layout
    m = E.get("i3d_rgb").build(device="meta", bn_eps=1e-5)  # forced
    assert {b.eps for b in m.modules() if isinstance(b, torch.nn.BatchNorm3d)} == {1e-5}


@pytest.mark.parametrize("name,in_ch", [("i3d_rgb", 3), ("i3d_flow", 2)])
def test_full_stream_param_count_and_official_layout(name, in_ch):
    m = E.get(name).build(device="meta")
    stream = getattr(m, name.split("_")[1])
    shapes = official_piergiaj_shapes(in_ch)
    ours = {k: tuple(v.shape) for k, v in stream.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == shapes
    assert sum(p.numel() for p in stream.parameters()) == param_count(shapes)
    assert 12.2e6 < param_count(official_piergiaj_shapes(3)) - 1024 * 400 - 400 < 12.4e6  # trunk ~12.3M
    assert m.feature_shape == (1024,)


def test_full_two_stream_includes_torchvision_raft_large():
    from torchvision.models.optical_flow import raft_large

    m = E.get("i3d").build(device="meta")
    raft_params = sum(p.numel() for p in raft_large(weights=None).parameters())
    expected = param_count(official_piergiaj_shapes(3)) + param_count(official_piergiaj_shapes(2)) + raft_params
    assert sum(p.numel() for p in m.parameters()) == expected
    assert m.feature_shape == (2048,) and m.context_frames == 1
    assert m.plan.fps == 25 and m.plan.window_frames == 24 and m.plan.stride_frames == 8
    assert m.decode_spec.short_side == 256 and m.decode_spec.center_crop is None


def _synthetic(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.rand(s, generator=g) for k, s in shapes.items()}


def _hassony_keys_for(piergiaj_key: str) -> str:
    """hassony2 naming written independently of the converter (video_features i3d_net)."""
    parts = piergiaj_key.split(".")
    tail = ("batch3d." + parts[-1]) if parts[-2] == "bn" else "conv3d." + parts[-1]
    if parts[0] == "logits":
        return "conv3d_0c_1x1." + tail
    if parts[0].startswith("Conv3d"):
        return parts[0].lower() + "." + tail
    branch = {
        "b0": "branch_0",
        "b1a": "branch_1.0",
        "b1b": "branch_1.1",
        "b2a": "branch_2.0",
        "b2b": "branch_2.1",
        "b3b": "branch_3.1",
    }[parts[1]]
    return f"{parts[0].lower()}.{branch}.{tail}"


def test_hassony_converter_on_synthetic_state_dict():
    pier = _synthetic(official_piergiaj_shapes(3))
    hassony = {_hassony_keys_for(k): v for k, v in pier.items()}
    hassony["conv3d_1a_7x7.batch3d.num_batches_tracked"] = torch.tensor(5)
    converted = i3d_hassony_to_piergiaj(hassony)
    assert set(converted) == set(pier)
    assert all(converted[k] is pier[k] for k in pier)
    assert i3d_piergiaj_to_hassony(pier).keys() == {k for k in hassony if "num_batches" not in k}
    with pytest.raises(KeyError, match="mixed_3b.branch_9"):
        i3d_hassony_to_piergiaj({"mixed_3b.branch_9.conv3d.weight": torch.zeros(1)})


@pytest.mark.parametrize("layout", ["piergiaj", "hassony"])
def test_official_layouts_load_without_missing_or_unexpected(tmp_path, layout):
    pier = _synthetic(official_piergiaj_shapes(3))
    state = pier if layout == "piergiaj" else {_hassony_keys_for(k): v for k, v in pier.items()}
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(state, path)
    m = E.get("i3d_rgb").from_checkpoint(path)
    assert torch.equal(m.rgb.Mixed_4e.b2b.bn.running_var, pier["Mixed_4e.b2b.bn.running_var"])
    assert len(m.weights_sha256) == 64
    # BatchNorm eps from the layout (pytorch-i3d 1e-3, video_features' hassony2 port 1e-5), recorded
    eps, name = (1e-3, "pytorch_i3d") if layout == "piergiaj" else (1e-5, "video_features")
    assert {b.eps for b in m.modules() if isinstance(b, torch.nn.BatchNorm3d)} == {eps}
    assert m.provenance() == {
        "i3d": {"rgb": {"checkpoint_layout": name, "bn_eps": eps, "bn_eps_from": "checkpoint layout"}}
    }
    from avel.pipeline.engine import StreamExtractor

    assert StreamExtractor("i3d_rgb", m).spec().provenance["i3d"]["rgb"]["bn_eps"] == eps
    forced = E.get("i3d_rgb").from_checkpoint(path, bn_eps=1e-4)
    assert {b.eps for b in forced.modules() if isinstance(b, torch.nn.BatchNorm3d)} == {1e-4}
    assert forced.provenance()["i3d"]["rgb"] == {"checkpoint_layout": name, "bn_eps": 1e-4, "bn_eps_from": "config"}


def test_random_weights_record_the_default_eps():
    m = E.get("i3d").random_init(preset="tiny")
    assert m.provenance()["i3d"] == {
        s: {"checkpoint_layout": None, "bn_eps": 1e-3, "bn_eps_from": "default (no checkpoint)"}
        for s in ("rgb", "flow")
    }


def test_ambiguous_or_unknown_layout_is_refused(tmp_path):
    pier = _synthetic(official_piergiaj_shapes(3))
    mixed = dict(pier)
    mixed["mixed_3b.branch_0.conv3d.weight"] = pier["Mixed_3b.b0.conv3d.weight"]
    torch.save(mixed, tmp_path / "both.pt")
    with pytest.raises(
        ValueError,
        match=r"both\.pt: ambiguous I3D checkpoint layout.*Conv3d_1a_7x7.*"
        r"mixed_3b\.branch_0\.conv3d\.weight",
    ):
        E.get("i3d_rgb").from_checkpoint(tmp_path / "both.pt")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not an I3D checkpoint.*features\.0\.weight"):
        E.get("i3d_rgb").check_checkpoint(tmp_path / "other.pt")


def test_flow_mapping_matches_video_features_quantisation():
    flow = torch.tensor([0.0, 20.0, 25.0, -20.0, -30.0, 1.0, 0.1])
    expected_q = torch.tensor([128.0, 256.0, 256.0, 0.0, 0.0, 134.0, 129.0])  # round(128 + 6.375 f) after clamp
    torch.testing.assert_close(flow_to_i3d(flow), expected_q / 127.5 - 1)


def test_tiny_extractors_shapes_and_two_stream_consistency(make_frames):
    frames = make_frames(14, 128, 136)
    rgb = E.get("i3d_rgb").random_init(preset="tiny", seed=1)
    both = E.get("i3d").random_init(preset="tiny", seed=5)
    both.rgb.load_state_dict(rgb.rgb.state_dict())
    w_rgb = rgb.windows(frames)
    w_both = both.windows(frames)
    assert w_rgb.data.shape == (2, 8, 128, 136, 3) and w_both.data.shape == (2, 9, 128, 136, 3)
    inp = both.preprocess(w_both.data)
    assert inp["rgb"].shape == (2, 3, 8, 112, 112) and inp["flow"].shape == (2, 2, 8, 112, 112)
    assert inp["rgb"].min() >= -1 and inp["rgb"].max() <= 1
    # rgb: centre crop (offsets (128-112)//2 = 8 and (136-112)//2 = 12) scaled by x / 127.5 - 1
    crop = w_both.data[0, :8, 8:120, 12:124].permute(3, 0, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(inp["rgb"][0], crop)
    out = both(inp)
    assert out.shape == (2, 256)
    torch.testing.assert_close(out[:, :128], rgb.extract(w_rgb.data))
    with pytest.raises(ValueError, match="expected 9 frames"):
        both.preprocess(w_rgb.data)


def test_full_two_stream_official_files_check_ok(tmp_path):
    from torchvision.models.optical_flow import raft_large

    with torch.device("meta"):
        raft_shapes = {k: tuple(v.shape) for k, v in raft_large(weights=None).state_dict().items()}
    files = {
        "rgb_imagenet.pt": official_piergiaj_shapes(3),
        "flow_imagenet.pt": official_piergiaj_shapes(2),
        "raft_large_C_T_SKHT_V1-0b8c9e55.pth": raft_shapes,
    }
    for fname, shapes in files.items():  # stride-0 views: tiny files with the official keys and shapes
        torch.save({k: torch.zeros(()).expand(s) for k, s in shapes.items()}, tmp_path / fname)
    report = E.get("i3d").check_checkpoint(tmp_path)
    assert report.ok, report.error()
    assert set(report.sha256) == {"rgb", "flow", "raft"} and report.weights_sha256.startswith("rgb=")
    flow_shapes = dict(files["flow_imagenet.pt"])
    flow_shapes["Conv3d_1a_7x7.conv3d.weight"] = (64, 3, 7, 7, 7)  # an RGB stem in the flow file
    torch.save({k: torch.zeros(()).expand(s) for k, s in flow_shapes.items()}, tmp_path / "flow_imagenet.pt")
    report = E.get("i3d").check_checkpoint(tmp_path)
    assert not report.ok and report.mismatched == [
        ("flow.Conv3d_1a_7x7.conv3d.weight", (64, 2, 7, 7, 7), (64, 3, 7, 7, 7))
    ]


def test_distinct_pairs_of_overlapping_windows(make_frames):
    """Windows every 4 frames share 4 of 8 pairs; a repeated window shares all; another video none."""
    from avel.extractors.raft_flow import distinct_pairs

    video, other = make_frames(30, 4, 4, seed=1), make_frames(9, 4, 4, seed=2)
    starts = [0, 4, 8, 12, 16, 20]  # the last window runs past frame 29: clamped, as cut_video_windows
    windows = torch.stack(
        [video[torch.arange(s, s + 9).clamp(max=29)] for s in starts]
        + [video[torch.arange(20, 29).clamp(max=29)], other]
    )  # padding repeat, then a new video
    pairs, index = distinct_pairs(windows, shifts=(4, 0))
    assert index.shape == (8, 8)
    assert len(pairs) == 8 + 5 * 4 + 0 + 8  # first window, 4 new pairs per shifted window, the repeat, the new video
    for b in range(8):
        for t in range(8):
            w, u = pairs[index[b, t]].tolist()
            assert torch.equal(windows[w, u], windows[b, t]) and torch.equal(windows[w, u + 1], windows[b, t + 1])
    no_shift, all_pairs = distinct_pairs(windows, shifts=())
    assert len(no_shift) == 64 and torch.equal(all_pairs.flatten(), torch.arange(64))


def test_flow_pair_dedupe_is_the_same_flow_and_independent_of_batch_neighbours(make_frames):
    """Dedupe computes the flows RAFT gives for every pair (up to float rounding), and a window's
    flow is bitwise the same whichever windows share its batch. Checked on the flow (tiny random
    RAFT gives flows of spread 0.65 px): tiny random I3D rows hardly depend on their input."""
    frames = make_frames(40, 128, 136, seed=3)
    ext = E.get("i3d").random_init(preset="tiny", seed=5)
    assert ext.config.flow_pair_dedupe and ext.config.raft_pair_batch == 8
    win = ext.windows(frames).data  # 9 windows of 9 frames, every 4 frames

    def flow(w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ext.window_flows(w, w.permute(0, 1, 4, 2, 3).float())

    every = ext.raft(win.permute(0, 1, 4, 2, 3).float()).detach()  # all 72 pairs in one call
    deduped = flow(win)  # 8 + 8 x 4 = 40 distinct pairs, 5 calls of 8
    assert every.std() > 0.3 and (every[0] - every[1]).abs().mean() > 0.05
    torch.testing.assert_close(deduped, every, atol=1e-4, rtol=1e-4)
    six = flow(win[:6])
    assert torch.equal(flow(win[2:5]), six[2:5]) and torch.equal(flow(win[5:6]), six[5:6])
    assert torch.equal(flow(torch.cat([win[5:6], win[5:6]]))[1], six[5])  # a padding repeat reuses every pair
    with pytest.raises(ValueError, match="raft_pair_batch must be >= 0"):
        E.get("i3d_flow").random_init(preset="tiny", raft_pair_batch=-1)
