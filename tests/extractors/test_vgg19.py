"""VGG-19 pool5: architecture vs torchvision, checkpoint handling, both preprocessings, AVE timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import avel.extractors as E
from avel.extractors.weights import CheckpointMismatch

CFG_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def test_full_param_count_by_formula():
    expected, cin = 0, 3
    for v in CFG_E:
        if v != "M":
            expected += cin * v * 9 + v
            cin = v
    m = E.get("vgg19").build(device="meta")
    assert sum(p.numel() for p in m.parameters()) == expected == 20_024_384
    assert m.feature_shape == (7, 7, 512)
    assert m.plan.fps == 16 and m.plan.window_frames == 16 and m.plan.stride_frames == 16


def test_matches_torchvision_vgg19_features_pool5():
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    tv_features = make_layers(cfgs["E"], batch_norm=False).eval()  # torchvision vgg19().features
    ours = E.get("vgg19").build(image_size=32)
    ours.features.load_state_dict(tv_features.state_dict())
    x = torch.randn(2, 3, 3, 32, 32)  # B x L x 3 x H x W
    with torch.no_grad():
        ref = tv_features(x.flatten(0, 1)).reshape(2, 3, 512, 1, 1).mean(1).permute(0, 2, 3, 1)
        torch.testing.assert_close(ours(x), ref)


def test_full_torchvision_checkpoint_classifier_accepted_and_checked(tmp_path):
    from torchvision.models import vgg19

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in vgg19(weights=None).state_dict().items()}
    state = {k: torch.zeros(1).expand(s) for k, s in shapes.items()}
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    m = E.get("vgg19").from_checkpoint(path)
    assert not any(k.startswith("classifier") for k in m.state_dict())
    state["classifier.6.weight"] = torch.zeros(1).expand(10, 4096)
    torch.save(state, path)
    with pytest.raises(CheckpointMismatch, match="classifier.6.weight"):
        E.get("vgg19").from_checkpoint(path)


def test_preprocessing_variants(make_frames):
    frames = make_frames(4, 64, 64)[None]  # 1 x 4 x 64 x 64 x 3
    keras = E.get("vgg19").random_init(preset="tiny")
    x = keras.preprocess(frames)
    raw = frames[0, 1, 10, 20].double()
    # caffe: BGR order, per-channel mean subtraction, no scaling
    expected = torch.tensor([raw[2] - 103.939, raw[1] - 116.779, raw[0] - 123.68])
    torch.testing.assert_close(x[0, 1, :, 10, 20].double(), expected, atol=1e-4, rtol=0)
    tv = E.get("vgg19").random_init(preset="tiny", preprocessing="torchvision")
    y = tv.preprocess(frames)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(y[0, 1, :, 10, 20], (raw.float() / 255 - mean) / std)
    assert keras.decode_spec.size_hw == (64, 64) and keras.decode_spec.short_side is None
    assert tv.decode_spec.short_side == 72 and tv.decode_spec.center_crop == 64
    with pytest.raises(ValueError, match="preprocessing must be"):
        E.get("vgg19").make_config(preprocessing="caffe")
    with pytest.raises(ValueError, match="uint8 B x L x 64 x 64 x 3"):
        keras.preprocess(make_frames(4, 72, 64)[None])


def test_ave_timing_one_row_per_second():
    m = E.get("vgg19").build(device="meta")
    plan = m.plan
    w = m.windows(torch.zeros(16 * 10 + 5, 2, 2, 3, dtype=torch.uint8))  # 10.3 s at 16 fps
    assert w.num_rows == 10 and not w.padded
    start, end = plan.row_times(10)
    np.testing.assert_allclose(start, np.arange(10.0))
    np.testing.assert_allclose(end, np.arange(1.0, 11.0))
    short = m.windows(torch.zeros(7, 2, 2, 3, dtype=torch.uint8))
    assert short.padded and short.data.shape == (1, 16, 2, 2, 3)


def test_tiny_extract_averages_frames(make_frames):
    m = E.get("vgg19").random_init(preset="tiny")
    frames = make_frames(8, 64, 64)
    w = m.windows(frames)
    out = m.extract(w.data)
    assert out.shape == (2, 2, 2, 32)
    per_frame = torch.stack([m.extract(frames[i : i + 1][None]) for i in range(4)])
    torch.testing.assert_close(out[0], per_frame.mean(0)[0], atol=1e-5, rtol=1e-5)
