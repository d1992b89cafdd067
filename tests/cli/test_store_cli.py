"""`avel info`, `avel import`, `avel export` through the click entry point."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.sampling import UNAV100_I3D
from avel.datasets.store import StoreWriter, StreamSpec, append_error


def _store(root):
    specs = {"i3d_rgb": StreamSpec("i3d", UNAV100_I3D, (4,), config={"preset": "tiny"}, weights_sha256="random")}
    with StoreWriter(root, dataset="unav100", streams=specs) as w:
        w.add("-vid", {"i3d_rgb": np.ones((3, 4))})
    append_error(
        root,
        {
            "video_id": "broken",
            "path": "broken.mp4",
            "stage": "decode",
            "error_type": "DecodeError",
            "message": "moov atom not found",
        },
    )


def test_info_text_and_json(tmp_path):
    _store(tmp_path / "s")
    runner = CliRunner()
    res = runner.invoke(cli, ["info", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "video 25 fps, window 24 frames, stride 8" in res.output
    assert "RANDOM WEIGHTS" in res.output and "1 failed videos: broken" in res.output
    res = runner.invoke(cli, ["info", str(tmp_path / "s"), "--json", "--verify", "--videos"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{") :])
    assert data["videos"] == 1 and data["video_ids"] == ["-vid"] and data["verify_problems"] == []
    assert data["streams"]["i3d_rgb"]["feature_dim"] == 4


def test_info_exit_codes(tmp_path):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    res = runner.invoke(cli, ["info", str(tmp_path / "empty")])
    assert res.exit_code == 3 and "not a feature store" in res.output  # an unusable store: bad input
    res = runner.invoke(cli, ["export", "unav-npy", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 3 and res.output == f"error: {tmp_path / 'empty'}: not a feature store (no manifest.json)\n"
    res = runner.invoke(cli, ["store", "compact", str(tmp_path / "empty")])
    assert res.exit_code == 3 and len(res.output.splitlines()) == 1 and str(tmp_path / "empty") in res.output
    _store(tmp_path / "s")
    shard = next((tmp_path / "s" / "shards").glob("shard-*.h5"))
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    res = runner.invoke(cli, ["info", str(tmp_path / "s"), "--verify"])
    assert res.exit_code == 1 and shard.name in res.output
    res = runner.invoke(cli, ["info", str(tmp_path / "missing")])
    assert res.exit_code == 2


def test_import_export_unav_npy(tmp_path):
    src = tmp_path / "npy"
    src.mkdir()
    a = np.random.default_rng(0).standard_normal((7, 128)).astype(np.float32)
    np.save(src / "-x_vggish.npy", a)
    runner = CliRunner()
    res = runner.invoke(cli, ["import", "unav-npy", str(src), "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "imported 1 videos" in res.output
    res = runner.invoke(cli, ["export", "unav-npy", str(tmp_path / "s"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "-x_vggish.npy"), a)
    np.save(src / "bad_vggish.npy", np.ones((3, 5), np.float32))
    res = runner.invoke(cli, ["import", "unav-npy", str(src), "--out", str(tmp_path / "s")])
    assert res.exit_code == 1 and "bad_vggish.npy: shape (3, 5)" in res.output
