"""`avel extractors list` and `avel weights verify` through the click entry point."""

from __future__ import annotations

import hashlib
import json

import torch
from click.testing import CliRunner

import avel.extractors as E
from avel.cli.main import cli


def test_extractors_list_text_and_json():
    runner = CliRunner()
    res = runner.invoke(cli, ["extractors", "list"])
    assert res.exit_code == 0, res.output
    assert "vgg19-dcbb9e9d.pth" in res.output and "video 25 fps, window 24 frames, stride 8" in res.output
    res = runner.invoke(cli, ["extractors", "list", "--json", "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    rows = {d["name"]: d for d in map(json.loads, res.output.strip().splitlines())}
    assert rows["vggish"]["feature_shape"] == [16] and rows["vggish"]["config"]["preset"] == "tiny"
    assert rows["i3d"]["checkpoint_files"]["raft"] == "raft_large_C_T_SKHT_V1-0b8c9e55.pth"


def test_weights_verify_ok_mismatch_and_usage(tmp_path):
    state = E.get("vggish").random_init(preset="tiny").net.state_dict()
    good = tmp_path / "vggish-10086976.pth"
    torch.save(state, good)
    runner = CliRunner()
    res = runner.invoke(cli, ["weights", "verify", str(good), "--extractor", "vggish", "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    assert hashlib.sha256(good.read_bytes()).hexdigest() in res.output and "ok:" in res.output
    # a full-size model expects other shapes: exit 1 with the listed mismatch
    res = runner.invoke(cli, ["weights", "verify", str(good), "--extractor", "vggish"])
    assert res.exit_code == 1
    assert "shape mismatches" in res.output and "features.0.weight" in res.output
    assert "vggish-10086976.pth" in res.output
    state.pop("embeddings.4.bias")
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    res = runner.invoke(cli, ["weights", "verify", str(bad), "--extractor", "vggish", "--preset", "tiny"])
    assert res.exit_code == 1 and "missing keys (1): net.embeddings.4.bias" in res.output
    res = runner.invoke(cli, ["weights", "verify", str(good), "--extractor", "nope"])
    assert res.exit_code == 2 and "unknown extractor" in res.output
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    res = runner.invoke(cli, ["weights", "verify", str(tmp_path / "junk.pth"), "--extractor", "vgg19"])
    assert res.exit_code == 3 and "cannot load" in res.output and "Traceback" not in res.output
