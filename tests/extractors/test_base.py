"""Extractor interface: registry, configs/presets, windows, weight marking and checkpoint errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import avel.extractors as E
from avel.datasets.sampling import SamplingPlan
from avel.extractors.base import cut_audio_windows, cut_video_windows
from avel.extractors.weights import CheckpointMismatch

OURS = ["i3d", "i3d_rgb", "i3d_flow", "vggish", "vgg19"]


def test_registry_lists_and_resolves_our_extractors():
    names = E.list_extractors()
    for name in OURS:
        assert name in names
        cls = E.get(name)
        assert issubclass(cls, E.Extractor) and cls.name == name
        assert set(cls.presets) >= {"full", "tiny"}
        assert cls.checkpoint_files
    with pytest.raises(KeyError, match="unknown extractor 'nope'"):
        E.get("nope")


def test_register_rejects_duplicates_and_non_extractors():
    with pytest.raises(TypeError):
        E.register(int)
    cls = type("Dup", (E.get("vgg19"),), {"name": "vgg19"})
    with pytest.raises(ValueError, match="already registered"):
        E.register(cls)


@pytest.mark.parametrize("name", OURS)
def test_random_init_is_marked_and_reproducible(name):
    cls = E.get(name)
    a = cls.random_init(preset="tiny", seed=3)
    b = cls.random_init(preset="tiny", seed=3)
    assert a.weights_sha256 == E.RANDOM_WEIGHTS
    assert not a.training
    assert a.config.preset == "tiny"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert cls.build(device="meta", preset="tiny").weights_sha256 == E.NO_WEIGHTS


def test_config_overrides_and_unknown_keys():
    cls = E.get("vggish")
    assert cls.make_config(hop_s=0.32).hop_s == 0.32
    with pytest.raises(TypeError, match="unknown config keys \\['hopp_s'\\]"):
        cls.make_config(hopp_s=0.32)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        cls.make_config("huge")


def test_video_windows_follow_plan_and_pad_short_videos(make_frames):
    plan = SamplingPlan.video(fps=25, window_frames=24, stride_frames=8)
    frames = make_frames(50, 4, 5)
    w = cut_video_windows(frames, plan)
    # rows start every 8 frames while a full 24-frame window fits: 0, 8, 16, 24
    assert w.num_rows == 4 and not w.padded
    assert w.bounds.tolist() == [[0, 24], [8, 32], [16, 40], [24, 48]]
    assert torch.equal(w.data[2], frames[16:40])
    start, end = plan.row_times(w.num_rows)
    np.testing.assert_allclose(start, [0.0, 0.32, 0.64, 0.96])
    np.testing.assert_allclose(end - start, 0.96)
    # context frame past the end of the video repeats the last frame
    wc = cut_video_windows(frames, plan, context_frames=1)
    assert wc.data.shape[1] == 25
    assert torch.equal(wc.data[3, 24], frames[48])
    short = cut_video_windows(frames[:5], plan, context_frames=1)
    assert short.padded and short.num_rows == 1 and short.data.shape[1] == 25
    assert torch.equal(short.data[0, :5], frames[:5])
    assert all(torch.equal(short.data[0, i], frames[4]) for i in range(5, 25))


def test_audio_windows_hop_context_and_zero_padding():
    plan = SamplingPlan.audio(sample_rate=100, window_s=0.96, hop_s=0.32)
    wave = torch.arange(1, 289, dtype=torch.float32)  # 2.88 s: the last window ends exactly at the end
    w = cut_audio_windows(wave, plan, context_samples=2)
    assert w.bounds[:, 0].tolist() == [0, 32, 64, 96, 128, 160, 192]
    assert w.data.shape == (7, 98)
    assert torch.equal(w.data[1], wave[32:130])
    assert torch.equal(w.data[-1, 96:], torch.zeros(2))  # context past the end is zero
    short = cut_audio_windows(wave[:10], plan)
    assert short.padded and short.data.shape == (1, 96)
    assert torch.equal(short.data[0, :10], wave[:10]) and not short.data[0, 10:].any()


def test_audio_windows_as_a_view_share_the_waveform():
    plan = SamplingPlan.audio(sample_rate=100, window_s=0.96, hop_s=0.32)
    wave = torch.arange(1, 290, dtype=torch.float32)  # 2.89 s: the last window's context runs 1 sample past the end
    copied = cut_audio_windows(wave, plan, context_samples=2)
    view = cut_audio_windows(wave, plan, context_samples=2, copy=False)
    assert torch.equal(view.data, copied.data) and view.padded == copied.padded
    assert np.array_equal(view.bounds, copied.bounds) and view.data[-1, -1] == 0  # the zero-padded sample
    # overlapping windows over one buffer: the view holds the padded waveform, not N windows
    assert view.data.untyped_storage().nbytes() < copied.data.untyped_storage().nbytes() / 2
    assert view.data[0].data_ptr() + 32 * 4 == view.data[1].data_ptr()


def test_windows_reject_bad_layouts():
    plan = SamplingPlan.video(fps=25, window_frames=4, stride_frames=2)
    with pytest.raises(ValueError, match="T x H x W x 3"):
        cut_video_windows(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), plan)
    with pytest.raises(ValueError, match="uint8"):
        cut_video_windows(torch.zeros(4, 8, 8, 3), plan)
    with pytest.raises(ValueError, match="1-D mono"):
        cut_audio_windows(torch.zeros(2, 100), SamplingPlan.audio(sample_rate=10, window_s=1, hop_s=1))


@pytest.mark.parametrize("name", OURS)
def test_describe_reports_plan_and_shape(name):
    m = E.get(name).build(device="meta", preset="tiny")
    d = m.describe()
    assert d["name"] == name and d["modality"] == m.modality
    assert SamplingPlan.from_dict(d["plan"]) == m.plan
    assert d["decode"]["modality"] == m.modality


def test_from_checkpoint_roundtrip_records_sha256(tmp_path):
    cls = E.get("vgg19")
    src = cls.random_init(preset="tiny", seed=1)
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(src.state_dict(), path)
    m = cls.from_checkpoint(path, preset="tiny")
    import hashlib

    assert m.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_from_checkpoint_mismatch_lists_keys_and_names_official_file(tmp_path):
    cls = E.get("vgg19")
    state = cls.random_init(preset="tiny").state_dict()
    state.pop("features.0.bias")
    state["features.99.weight"] = torch.zeros(1)
    state["features.2.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatch) as err:
        cls.from_checkpoint(path, preset="tiny")
    msg = str(err.value)
    assert "vgg19-dcbb9e9d.pth" in msg and "features.0.bias" in msg and "features.99.weight" in msg
    assert "features.2.weight" in msg and str(path) in msg
    assert err.value.missing == ["features.0.bias"] and err.value.unexpected == ["features.99.weight"]
    with pytest.raises(FileNotFoundError, match="vgg19-dcbb9e9d.pth"):
        cls.from_checkpoint(tmp_path / "absent", preset="tiny")


def test_multi_file_checkpoint_from_directory_and_mapping(tmp_path):
    cls = E.get("i3d")
    src = cls.random_init(preset="tiny", seed=2)
    sd = src.state_dict()
    for role, fname in cls.checkpoint_files.items():
        prefix = "raft.raft." if role == "raft" else f"{role}."
        torch.save({k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}, tmp_path / fname)
    m = cls.from_checkpoint(tmp_path, preset="tiny")
    assert m.weights_sha256.count("=") == 3 and m.weights_sha256.startswith("rgb=")
    assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    with pytest.raises(ValueError, match="pass a directory"):
        cls.from_checkpoint(tmp_path / "rgb_imagenet.pt", preset="tiny")
    (tmp_path / "flow_imagenet.pt").unlink()
    with pytest.raises(FileNotFoundError, match="flow_imagenet.pt"):
        cls.from_checkpoint(tmp_path, preset="tiny")
    rgb_only = E.get("i3d_rgb").from_checkpoint({"rgb": tmp_path / "rgb_imagenet.pt"}, preset="tiny")
    assert torch.equal(rgb_only.rgb.Conv3d_1a_7x7.conv3d.weight, src.rgb.Conv3d_1a_7x7.conv3d.weight)


def test_meta_builds_skip_random_init_but_keep_every_parameter():
    """``on_meta_device('meta')`` turns nn.init's random fills into no-ops on meta tensors (they
    hold no values): same keys, shapes and dtypes as a CPU build; CPU builds still initialise."""
    import torch.nn as nn

    from avel.extractors.base import on_meta_device

    cls = E.get("i3d_rgb")
    cfg = cls.make_config("tiny")
    with on_meta_device("meta"):
        meta = cls(cfg)
    cpu = cls(cfg)
    assert {k: (v.shape, v.dtype) for k, v in meta.state_dict().items()} == {
        k: (v.shape, v.dtype) for k, v in cpu.state_dict().items()
    }
    assert all(v.is_meta for v in meta.state_dict().values())
    with on_meta_device("cpu"):
        conv = nn.Conv3d(3, 4, 3)
    assert not conv.weight.is_meta and float(conv.weight.abs().sum()) > 0  # initialised
    with on_meta_device("meta"):
        assert nn.init.kaiming_uniform_(torch.empty(4, 3, device="meta")).is_meta
        assert nn.init.normal_(tensor=torch.empty(2, device="meta")).is_meta  # by keyword too


@pytest.mark.parametrize("name", ["vgg19", "vggish"])
def test_from_checkpoint_keeps_computed_buffers_and_loads_every_value(name, tmp_path):
    """from_checkpoint skips the random initialisers (the strict load overwrites them): the
    buffers computed at build time (VGGish's window and mel matrix, VGG-19's mean / std) and
    every loaded value must equal a normally built module's."""
    cls = E.get(name)
    src = cls.random_init(preset="tiny", seed=3)
    state = src.state_dict()
    if name == "vggish":  # the official layout: the network's file and the PCA file
        src = cls.random_init(preset="tiny", seed=3, postprocess=True)
        state = src.state_dict()
        files = {"model": tmp_path / "model.pth", "pca": tmp_path / "pca.pth"}
        torch.save({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}, files["model"])
        pca = {"pca_eigen_vectors": state["pca_eigen_vectors"], "pca_means": state["pca_means"].reshape(-1)}
        torch.save(pca, files["pca"])
        m = cls.from_checkpoint(files, preset="tiny", postprocess=True)
    else:
        path = tmp_path / cls.checkpoint_files["model"]
        torch.save(state, path)
        m = cls.from_checkpoint(path, preset="tiny")
    ref = dict(src.named_buffers())
    for k, v in m.named_buffers():
        assert torch.equal(v, ref[k]), k
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_checkpoint_sha256_is_read_again_when_the_file_changes(tmp_path):
    import hashlib
    import os

    from avel.extractors.weights import checkpoint_sha256

    p = tmp_path / "w.pth"
    p.write_bytes(b"first")
    assert checkpoint_sha256(p) == hashlib.sha256(b"first").hexdigest()
    st = p.stat()
    p.write_bytes(b"other")  # same size; the mtime is moved on explicitly (coarse clocks)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert checkpoint_sha256(p) == hashlib.sha256(b"other").hexdigest()
