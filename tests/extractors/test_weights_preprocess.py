"""Checkpoint helpers and shared preprocessing (resize, crop, padding, RAFT flow wrapper)."""

from __future__ import annotations

import hashlib

import pytest
import torch

from avel.extractors.base import DecodeSpec
from avel.extractors.preprocess import apply_decode_spec, center_crop, pad_to_multiple, short_side_size
from avel.extractors.raft_flow import RaftFlow, RaftFlowConfig
from avel.extractors.weights import add_num_batches_tracked, compare_state_dicts, load_state_file, sha256_file


def test_sha256_and_state_file_wrappers(tmp_path):
    p = tmp_path / "x.pth"
    torch.save({"state_dict": {"module.a": torch.ones(2), "module.b": torch.zeros(1)}}, p)
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    assert set(load_state_file(p)) == {"a", "b"}
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="expected a state dict"):
        load_state_file(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_state_file(tmp_path / "absent.pth")


def test_compare_state_dicts_and_num_batches_tracked():
    exp = {"a": torch.zeros(2, 3), "b": torch.zeros(1), "c": torch.zeros(4)}
    act = {"a": torch.zeros(3, 2), "c": torch.zeros(4), "d": torch.zeros(1), "classifier.x": torch.zeros(1)}
    missing, unexpected, mismatched = compare_state_dicts(exp, act, ignore_prefixes=("classifier.",))
    assert missing == ["b"] and unexpected == ["d"] and mismatched == [("a", (2, 3), (3, 2))]
    out = add_num_batches_tracked({"bn.running_mean": torch.zeros(2), "bn.running_var": torch.ones(2)})
    assert out["bn.num_batches_tracked"].dtype == torch.long


def test_short_side_resize_and_centre_crop_offsets():
    assert short_side_size(360, 640, 256) == (256, 455)
    assert short_side_size(640, 360, 256) == (455, 256)
    frames = torch.arange(2 * 9 * 12 * 3, dtype=torch.int64).reshape(2, 9, 12, 3).to(torch.uint8)
    crop = center_crop(frames, 4, channels_last=True)
    assert torch.equal(crop, frames[:, 2:6, 4:8])  # (9-4)//2 = 2, (12-4)//2 = 4
    spec = DecodeSpec("video", fps=25, short_side=6, center_crop=4)
    out = apply_decode_spec(frames, spec)
    assert out.shape == (2, 4, 4, 3) and out.dtype == torch.uint8
    flat = torch.full((1, 10, 20, 3), 77, dtype=torch.uint8)
    assert torch.equal(
        apply_decode_spec(flat, DecodeSpec("video", fps=1, size_hw=(5, 7))),
        torch.full((1, 5, 7, 3), 77, dtype=torch.uint8),
    )
    with pytest.raises(ValueError, match="at most one"):
        DecodeSpec("video", fps=1, short_side=4, size_hw=(4, 4))


def test_pad_to_multiple_replicates_like_input_padder():
    x = torch.arange(5 * 6, dtype=torch.float32).reshape(1, 1, 5, 6)
    y, pads = pad_to_multiple(x, 8)
    assert y.shape == (1, 1, 8, 8) and pads == (1, 1, 1, 2)
    assert torch.equal(y[0, 0, 1:6, 1:7], x[0, 0])
    assert torch.equal(y[0, 0, 0, 1:7], x[0, 0, 0]) and torch.equal(y[0, 0, 7, 1:7], x[0, 0, -1])


def test_raft_wrapper_pairs_consecutive_frames_and_unpads():
    torch.manual_seed(0)
    flow = RaftFlow(RaftFlowConfig(num_flow_updates=1, width_divisor=8)).eval()
    frames = torch.rand(1, 3, 3, 128, 132) * 255
    with torch.no_grad():
        out = flow(frames)
        assert out.shape == (1, 2, 2, 128, 136)  # 132 padded to 136, not unpadded (video_features)
        pair = flow.raft(
            torch.nn.functional.pad(frames[0, 1:2] * (2 / 255) - 1, (2, 2, 0, 0), mode="replicate"),
            torch.nn.functional.pad(frames[0, 2:3] * (2 / 255) - 1, (2, 2, 0, 0), mode="replicate"),
            num_flow_updates=1,
        )[-1]
        torch.testing.assert_close(out[0, 1], pair[0], atol=1e-4, rtol=1e-4)
        flow.cfg = RaftFlowConfig(num_flow_updates=1, width_divisor=8, unpad=True)
        un = flow(frames)
        assert un.shape == (1, 2, 2, 128, 132)
        torch.testing.assert_close(un, out[..., 2:134], atol=1e-5, rtol=1e-5)
