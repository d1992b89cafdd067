"""Feature store: round trip, crash safety, corruption detection, forked readers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from avel.datasets.sampling import UNAV100_I3D, UNAV100_VGGISH, SamplingPlan
from avel.datasets.store import (
    FeatureStore,
    StoreCorruptError,
    StoreError,
    StoreWriter,
    StreamSpec,
    VideoMeta,
    append_error,
)

SPECS = {
    "rgb": StreamSpec("i3d", UNAV100_I3D, (6,), config={"preset": "tiny"}, weights_sha256="random"),
    "vggish": StreamSpec("vggish", UNAV100_VGGISH, (4,)),
}


def _rows(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _write(root: Path, ids: list[str], *, shard_max_videos: int = 3, start_seed: int = 0) -> dict:
    expected = {}
    with StoreWriter(root, dataset="unav100", streams=SPECS, shard_max_videos=shard_max_videos) as w:
        for k, vid in enumerate(ids):
            n = 3 + (k % 5)
            feats = {"rgb": _rows(start_seed + k, n, 6), "vggish": _rows(1000 + start_seed + k, n, 4)}
            w.add(vid, feats, meta=VideoMeta(duration_s=float(n), native_fps=29.97, source_path=f"/v/{vid}.mp4"))
            expected[vid] = feats
    return expected


def test_round_trip_features_times_meta(tmp_path):
    ids = ["-dash", "_under", "ünïcode id", "a/b/nested", "v5", "v6", "v7"]
    expected = _write(tmp_path / "s", ids)
    st = FeatureStore(tmp_path / "s")
    assert st.videos() == ids
    assert len(st.manifest["shards"]) == 3
    for vid, feats in expected.items():
        for s, rows in feats.items():
            np.testing.assert_array_equal(st[vid][s], rows)
        start, end = st.times(vid, "rgb")
        n = len(feats["rgb"])
        np.testing.assert_allclose(start, np.arange(n) * 8 / 25)
        np.testing.assert_allclose(end - start, 24 / 25)
        start_a, end_a = st.times(vid, "vggish")
        np.testing.assert_allclose(start_a, np.arange(n) * 0.32)
        assert st[vid].meta.source_path == f"/v/{vid}.mp4"
    assert st.verify() == []
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["streams"]["rgb"]["weights_sha256"] == "random"
    assert m["streams"]["rgb"]["plan"] == {"modality": "video", "fps": 25.0, "window_frames": 24, "stride_frames": 8}
    assert m["streams"]["vggish"]["feature_dim"] == 4
    assert all(len(sh["sha256"]) == 64 for sh in m["shards"])


def test_missing_stream_and_new_stream_later(tmp_path):
    root = tmp_path / "s"
    with StoreWriter(root, dataset="unav100", streams=SPECS) as w:
        w.add("with_audio", {"rgb": _rows(0, 4, 6), "vggish": _rows(1, 4, 4)})
        w.add("no_audio", {"rgb": _rows(2, 4, 6)})
    st = FeatureStore(root)
    assert st.video_streams("no_audio") == ["rgb"]
    with pytest.raises(KeyError, match="no stream 'vggish'"):
        st.read("no_audio", "vggish")
    # A later writer adds the missing audio, and a new backbone to both videos.
    new = {"flow": StreamSpec("i3d", UNAV100_I3D, (6,))}
    with StoreWriter(root, dataset="unav100", streams={**SPECS, **new}) as w:
        assert w.committed("vggish") == {"with_audio"}
        w.add("no_audio", {"vggish": _rows(3, 4, 4), "flow": _rows(4, 4, 6)})
        w.add("with_audio", {"flow": _rows(5, 4, 6)})
    st = FeatureStore(root)
    assert st.videos() == ["with_audio", "no_audio"]
    np.testing.assert_array_equal(st["no_audio"]["vggish"], _rows(3, 4, 4))
    np.testing.assert_array_equal(st["with_audio"]["flow"], _rows(5, 4, 6))


def test_writer_rejects_bad_input(tmp_path):
    root = tmp_path / "s"
    with StoreWriter(root, dataset="unav100", streams=SPECS) as w:
        w.add("v", {"rgb": _rows(0, 3, 6)})
        with pytest.raises(StoreError, match="already has stream 'rgb'"):
            w.add("v", {"rgb": _rows(0, 3, 6)})
        with pytest.raises(ValueError, match=r"expected T x \(6,\)"):
            w.add("w", {"rgb": _rows(0, 3, 5)})
        with pytest.raises(ValueError, match="non-finite"):
            w.add("w", {"rgb": np.full((3, 6), np.nan, np.float32)})
        with pytest.raises(KeyError, match="unknown stream 'flow'"):
            w.add("w", {"flow": _rows(0, 3, 6)})
        with pytest.raises(ValueError, match="zero rows"):
            w.add("w", {"rgb": np.zeros((0, 6), np.float32)})
    with pytest.raises(StoreError, match="already has stream"):
        with StoreWriter(root, dataset="unav100", streams=SPECS) as w:
            w.add("v", {"rgb": _rows(0, 3, 6)})
    other_plan = {"rgb": StreamSpec("i3d", SamplingPlan.video(fps=16, window_frames=16, stride_frames=4), (6,))}
    with pytest.raises(StoreError, match="different spec"):
        StoreWriter(root, dataset="unav100", streams=other_plan)
    with pytest.raises(StoreError, match="holds dataset 'unav100', not 'ave'"):
        StoreWriter(root, dataset="ave", streams=SPECS)


_CRASH_WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from avel.datasets.store import StoreWriter, StreamSpec
    from avel.datasets.sampling import UNAV100_I3D
    specs = {"rgb": StreamSpec("i3d", UNAV100_I3D, (256,))}
    root, start = sys.argv[1], int(sys.argv[2])
    with StoreWriter(root, dataset="unav100", streams=specs, shard_max_videos=2) as w:
        done = w.committed("rgb")
        for i in range(start, start + 400):
            vid = f"v{i:05d}"
            if vid in done:
                continue
            w.add(vid, {"rgb": np.full((50, 256), i, np.float32)})
            print("added", vid, flush=True)
""")


def test_kill_9_mid_write_leaves_valid_store(tmp_path):
    """A writer killed at arbitrary moments never corrupts or half-publishes the store."""
    root = tmp_path / "s"
    script = tmp_path / "writer.py"
    script.write_text(_CRASH_WRITER)
    for attempt, lines in enumerate((7, 30, 61)):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root), "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        for _ in range(lines):  # kill while the writer is busy adding and committing
            assert proc.stdout.readline().startswith("added")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        st = FeatureStore(root)
        assert st.verify() == [], f"attempt {attempt}"
        assert 0 < len(st) < 400
        for vid in st.videos():
            rows = st[vid]["rgb"]
            assert rows.shape == (50, 256) and np.all(rows == int(vid[1:]))
    # A rerun completes the work, cleans orphans/temps left by the killed writers, and
    # produces no duplicates.
    subprocess.run([sys.executable, str(script), str(root), "0"], check=True, capture_output=True)
    st = FeatureStore(root)
    assert st.videos() == [f"v{i:05d}" for i in range(400)]
    assert st.verify() == []
    listed = {Path(s["file"]).name for s in st.manifest["shards"]}
    on_disk = {p.name for p in (root / "shards").iterdir()}
    assert on_disk == listed


_DIE_BEFORE_LOG = textwrap.dedent("""
    import os, sys, numpy as np
    import avel.datasets.store as store_mod
    from avel.datasets.store import StoreWriter, StreamSpec
    from avel.datasets.sampling import UNAV100_I3D
    real = store_mod.append_records
    def die(root, records):
        if any(r["op"] == "commit" for r in records):
            os._exit(9)  # the process dies between the shard's rename and its log record
        real(root, records)
    store_mod.append_records = die
    w = StoreWriter(sys.argv[1], dataset="unav100", streams={"rgb": StreamSpec("i3d", UNAV100_I3D, (6,),
                    config={"preset": "tiny"}, weights_sha256="random")})
    for vid in sys.argv[2:]:
        w.add(vid, {"rgb": np.full((3, 6), 7, np.float32)})
    w.flush()
""")


def test_crash_between_rename_and_log_is_invisible_then_adopted(tmp_path):
    root = tmp_path / "s"
    _write(root, ["a", "b"])
    script = tmp_path / "die.py"
    script.write_text(_DIE_BEFORE_LOG)
    res = subprocess.run([sys.executable, str(script), str(root), "c"], capture_output=True, text=True)
    assert res.returncode == 9, res.stderr
    st = FeatureStore(root)
    assert st.videos() == ["a", "b"] and st.verify() == []
    assert len(st.uncommitted_files()) == 1 and st.uncommitted_files()[0].startswith("shard-")  # renamed, unlisted
    # The next writer adopts the complete shard instead of deleting a video's features.
    w = StoreWriter(root, dataset="unav100", streams=SPECS)
    assert any("adopted" in a for a in w.recovery), w.recovery
    w.close()
    st = FeatureStore(root)
    assert st.videos() == ["a", "b", "c"] and st.verify() == [] and st.uncommitted_files() == []
    np.testing.assert_array_equal(st["c"]["rgb"], np.full((3, 6), 7, np.float32))
    assert not (root / "deletions.jsonl").exists()


def test_redundant_leftover_of_a_dead_writer_is_deleted_and_logged(tmp_path):
    root = tmp_path / "s"
    _write(root, ["a", "b"])
    script = tmp_path / "die.py"
    script.write_text(_DIE_BEFORE_LOG)
    assert subprocess.run([sys.executable, str(script), str(root), "c"], capture_output=True).returncode == 9
    leftover = FeatureStore(root).uncommitted_files()[0]
    # Meanwhile "c" is committed by another shard (written before any writer saw the leftover).
    import avel.datasets.store as store_mod
    from avel.datasets import store_log

    st = FeatureStore(root)
    image, rows = store_mod.build_shard_image(
        [store_mod._PendingVideo("c", {"rgb": _rows(3, 3, 6)}, {}, VideoMeta())],
        st.streams,
        dataset="unav100",
        writer={"writer": "other", "host": "elsewhere", "pid": 1, "created": "x", "file": "shard-x-other-1.h5"},
    )
    (root / "shards" / "shard-x-other-1.h5").write_bytes(image)
    with store_log.store_lock(root):
        store_log.append_records(
            root,
            [
                {
                    "op": "commit",
                    "shard": store_mod._commit_entry(
                        "shards/shard-x-other-1.h5",
                        ["c"],
                        ["rgb"],
                        {},
                        rows,
                        len(image),
                        store_log.sha256_hex(image),
                        "other",
                    ),
                }
            ],
        )
    StoreWriter(root, dataset="unav100", streams=SPECS).close()
    assert not (root / "shards" / leftover).exists()
    log = [json.loads(line) for line in (root / "deletions.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["file"] == f"shards/{leftover}" and "gone" in log[0]["reason"]
    st = FeatureStore(root)
    assert st.videos() == ["a", "b", "c"] and st.verify() == []


def test_truncated_shard_is_an_error_naming_it(tmp_path):
    root = tmp_path / "s"
    _write(root, ["a", "b", "c", "d"], shard_max_videos=2)
    st = FeatureStore(root)
    shard = root / st.manifest["shards"][1]["file"]
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    st = FeatureStore(root)
    np.testing.assert_array_equal(st["a"]["rgb"], _rows(0, 3, 6))  # other shards still readable
    with pytest.raises(StoreCorruptError, match=shard.name):
        st["c"]["rgb"]
    assert any(shard.name in p for p in st.verify())


def test_flipped_bytes_detected_on_read(tmp_path, monkeypatch):
    root = tmp_path / "s"
    rows = np.arange(40 * 6, dtype=np.float32).reshape(40, 6) + 1000.0
    with StoreWriter(root, dataset="unav100", streams=SPECS) as w:
        w.add("a", {"rgb": rows})
    st = FeatureStore(root)
    shard = root / st.manifest["shards"][0]["file"]
    blob = bytearray(shard.read_bytes())
    needle = rows[20].tobytes()
    pos = bytes(blob).find(needle)
    assert pos > 0
    blob[pos + 1] ^= 0xFF  # same size: only a checksum can notice
    shard.write_bytes(bytes(blob))
    st = FeatureStore(root)
    with pytest.raises(StoreCorruptError, match=f"{shard.name}: sha256 differs from the log"):
        st["a"]["rgb"]  # a small shard: checked whole when first opened
    import avel.datasets.store as store_mod

    monkeypatch.setattr(store_mod, "_HASH_ON_OPEN_BYTES", 0)  # as for a shard over 2 MiB
    st = FeatureStore(root)
    with pytest.raises(StoreCorruptError, match=f"{shard.name}.*checksum mismatch for video 'a'"):
        st["a"]["rgb"]
    assert any("sha256" in p for p in st.verify(full=True))


def test_missing_shard_and_bad_manifest(tmp_path):
    root = tmp_path / "s"
    _write(root, ["a"])
    st = FeatureStore(root)
    (root / st.manifest["shards"][0]["file"]).unlink()
    with pytest.raises(StoreCorruptError, match="missing"):
        FeatureStore(root)["a"]["rgb"]
    # A garbled snapshot is only a cache: the log is replayed, and the note names the file.
    (root / "manifest.json").write_text('{\n  "schema_version": 2,\n  oops\n}')
    st = FeatureStore(root)
    assert st.videos() == ["a"] and any("manifest.json: invalid JSON at line 3" in n for n in st.notes)
    # A garbled log record is an error naming the log file and its line.
    log = root / "log" / "commits.jsonl"
    lines = log.read_bytes().split(b"\n")
    lines[1] = lines[1][:20] + b"X" + lines[1][21:]
    log.write_bytes(b"\n".join(lines))
    with pytest.raises(StoreCorruptError, match=r"commits.jsonl: line 2 is damaged"):
        FeatureStore(root)
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tmp_path)


class _StoreDataset(Dataset):
    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.ids = store.videos()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.ids[i], torch.from_numpy(self.store[self.ids[i]]["rgb"]).sum(), os.getpid()


def test_forked_dataloader_workers_read_correctly(tmp_path):
    ids = [f"v{i}" for i in range(12)]
    expected = _write(tmp_path / "s", ids)
    st = FeatureStore(tmp_path / "s")
    st["v0"]["rgb"]  # parent opens handles before the fork
    loader = DataLoader(
        _StoreDataset(st), batch_size=None, num_workers=2, multiprocessing_context=mp.get_context("fork")
    )
    seen = {}
    pids = set()
    for vid, total, pid in loader:
        seen[vid] = float(total)
        pids.add(int(pid))
    assert os.getpid() not in pids and len(pids) == 2
    assert seen == pytest.approx({v: float(expected[v]["rgb"].sum()) for v in ids}, rel=1e-5)


def _concurrent_writer(root: str, worker: int) -> None:
    with StoreWriter(root, dataset="unav100", streams=SPECS, shard_max_videos=2) as w:
        for i in range(7):
            w.add(f"w{worker}-{i}", {"rgb": np.full((2, 6), worker * 100 + i, np.float32)})


def test_concurrent_writers_in_processes(tmp_path):
    root = str(tmp_path / "s")
    StoreWriter(root, dataset="unav100", streams=SPECS).close()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_concurrent_writer, args=(root, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    st = FeatureStore(root)
    assert sorted(st.videos()) == sorted(f"w{k}-{i}" for k in range(3) for i in range(7))
    assert st["w2-5"]["rgb"][0, 0] == 205


def test_errors_and_summary(tmp_path):
    root = tmp_path / "s"
    _write(root, ["a"])
    append_error(
        root,
        {
            "video_id": "bad",
            "path": "/x/bad.mp4",
            "stage": "decode",
            "error_type": "DecodeError",
            "message": "moov atom not found",
        },
    )
    st = FeatureStore(root)
    summary = st.summary()
    assert summary["errors"] == 1 and summary["failed_videos"] == ["bad"]
    assert summary["random_weight_streams"] == ["rgb"]
    assert summary["streams"]["rgb"]["rows"] == 3 and summary["streams"]["rgb"]["videos"] == 1


def test_undecodable_shard_strings_are_an_error_naming_shard_and_dataset(tmp_path, monkeypatch):
    import avel.datasets.store as store_mod

    root = tmp_path / "s"
    _write(root, ["a", "b"])
    shard = root / FeatureStore(root).manifest["shards"][0]["file"]
    with h5py.File(shard, "r+") as f:
        f["videos/ids"][0] = b"\xff\xfe"
        f["videos/meta_json"][1] = b"\xff\xfe"
    monkeypatch.setattr(store_mod, "_HASH_ON_OPEN_BYTES", 0)  # skip the whole-file sha256 on open
    st = FeatureStore(root)
    with pytest.raises(StoreCorruptError, match=rf"{shard.name}: videos/ids cannot be read \('utf-8' codec"):
        st["a"]["rgb"]
    with pytest.raises(StoreCorruptError, match=rf"{shard.name}: videos/meta_json cannot be read \('utf-8' codec"):
        st.meta("b")
