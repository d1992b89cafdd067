"""Store v2: commit log, rebuild without manifest/log, every byte checked, claims, full disk,
read-only stores, v1 upgrade."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import avel.datasets.store as store_mod
from avel.cli.errors import EXIT_INPUT
from avel.cli.main import cli
from avel.datasets import store_log
from avel.datasets.annotations import AnnotationSet, Sample, Segment
from avel.datasets.sampling import UNAV100_I3D, UNAV100_VGGISH
from avel.datasets.store import FeatureStore, StoreCorruptError, StoreError, StoreWriter, StreamSpec, VideoMeta
from avel.datasets.unav100 import write_unav100

SPECS = {"rgb": StreamSpec("i3d", UNAV100_I3D, (6,)), "vggish": StreamSpec("vggish", UNAV100_VGGISH, (4,))}


def _rows(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _feats(k: int) -> dict[str, np.ndarray]:
    n = 20 + k % 7
    return {"rgb": _rows(k, n, 6), "vggish": _rows(1000 + k, n, 4)}


def _write(root: Path, ids, *, shard_max_videos: int = 3) -> None:
    with StoreWriter(root, dataset="unav100", streams=SPECS, shard_max_videos=shard_max_videos) as w:
        for vid in ids:
            k = int(vid[1:])
            w.add(vid, _feats(k), meta=VideoMeta(duration_s=float(k)), padded={"rgb": k % 2 == 0})


def _check_all(root: Path, ids) -> FeatureStore:
    st = FeatureStore(root)
    assert sorted(st.videos()) == sorted(ids)
    assert st.verify() == []
    for vid in ids:
        k = int(vid[1:])
        for s, rows in _feats(k).items():
            np.testing.assert_array_equal(st[vid][s], rows)
        assert st.meta(vid).duration_s == float(k) and st.is_padded(vid, "rgb") == (k % 2 == 0)
    return st


def test_commit_appends_one_log_record_and_snapshot_is_compacted_on_close(tmp_path):
    root = tmp_path / "s"
    w = StoreWriter(root, dataset="unav100", streams=SPECS, shard_max_videos=2)
    log = root / "log" / "commits.jsonl"
    size0 = log.stat().st_size
    snapshot0 = (root / "manifest.json").read_bytes()
    for k in range(4):
        w.add(f"v{k}", _feats(k), meta=VideoMeta(duration_s=float(k)), padded={"rgb": k % 2 == 0})
    lines = log.read_bytes()[size0:].splitlines()
    assert [json.loads(line[9:])["op"] for line in lines] == ["commit", "commit"]
    assert (root / "manifest.json").read_bytes() == snapshot0  # commits never rewrite the snapshot
    assert FeatureStore(root).videos() == ["v0", "v1", "v2", "v3"]  # snapshot + log tail
    w.close()
    snap = json.loads((root / "manifest.json").read_text())
    assert snap["schema_version"] == 2 and len(snap["shards"]) == 2 and snap["log"]["offset"] == log.stat().st_size
    # a torn append (a writer died mid-write) is ignored by readers and cut by the next writer
    with open(log, "ab") as f:
        f.write(b'0badc0de {"op":"comm')
    assert len(FeatureStore(root)) == 4
    w2 = StoreWriter(root, dataset="unav100", streams=SPECS)
    with open(log, "ab") as f:  # torn again while w2 runs: its next commit cuts it first
        f.write(b'0badc0de {"op":"comm')
    w2.add("v5", _feats(5), meta=VideoMeta(duration_s=5.0), padded={"rgb": False})
    w2.close()
    assert FeatureStore(root).verify() == []
    _write(root, ["v4"])
    _check_all(root, [f"v{k}" for k in range(6)])


def test_manifest_and_log_lost_then_rerun_loses_nothing(tmp_path):
    """Regression: deleting manifest.json (and even the log) used to delete every shard."""
    root = tmp_path / "s"
    ids = [f"v{k}" for k in range(7)]
    _write(root, ids)
    shards = sorted(p.name for p in (root / "shards").iterdir())
    (root / "manifest.json").unlink()
    st = FeatureStore(root)  # readers replay the log
    assert sorted(st.videos()) == ids and any("manifest.json missing" in n for n in st.notes)
    _write(root, ["v7"])  # a rerun rewrites the snapshot
    assert (root / "manifest.json").exists()
    _check_all(root, ids + ["v7"])
    # both lost: readers refuse with the command to run, the writer rebuilds from the shards
    (root / "manifest.json").unlink()
    (root / "log" / "commits.jsonl").unlink()
    with pytest.raises(StoreError, match="avel info --repair"):
        FeatureStore(root)
    w = StoreWriter(root, dataset="unav100", streams=SPECS)
    assert sum("adopted" in a for a in w.recovery) == len(shards) + 1, w.recovery
    w.add("v8", _feats(8), meta=VideoMeta(duration_s=8.0), padded={"rgb": True})
    w.close()
    _check_all(root, ids + ["v7", "v8"])
    assert not (root / "deletions.jsonl").exists()
    assert set(shards) <= {p.name for p in (root / "shards").iterdir()}


def test_info_repair_rebuilds_and_damaged_log_is_kept_aside(tmp_path):
    root = tmp_path / "s"
    ids = [f"v{k}" for k in range(6)]
    _write(root, ids, shard_max_videos=2)
    (root / "manifest.json").unlink()
    (root / "log" / "commits.jsonl").unlink()
    res = CliRunner().invoke(cli, ["info", "--repair", "--verify", str(root)])
    assert res.exit_code == 0, res.output
    assert "rebuilding the index from 3 self-describing shards" in res.output and "verify   ok" in res.output
    _check_all(root, ids)
    # a damaged record in the middle of the log: readers name the file and line, repair keeps the
    # records before it, moves the damaged file aside and re-adopts the shards after it
    log = root / "log" / "commits.jsonl"
    lines = log.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"op"', b'"oq"')
    log.write_bytes(b"\n".join(lines))
    assert any("commits.jsonl: line 4 is damaged" in p for p in FeatureStore(root).verify())  # under the snapshot
    (root / "manifest.json").unlink()
    with pytest.raises(StoreCorruptError, match=r"commits\.jsonl: line 4 is damaged"):
        FeatureStore(root)
    res = CliRunner().invoke(cli, ["info", str(root)])
    assert res.exit_code == 3 and "commits.jsonl: line 4" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["store", "repair", str(root)])
    assert res.exit_code == 0 and "damaged at line 4" in res.output, res.output
    assert list((root / "log").glob("commits.jsonl.damaged-*"))
    _check_all(root, ids)


def _tamper(shard: Path, fn) -> None:
    with h5py.File(shard, "r+") as f:
        fn(f)


@pytest.mark.parametrize(
    "case,field",
    [
        ("start_s", "start_s/end_s differ"),
        ("end_s", "start_s/end_s differ"),
        ("meta_json", "meta_json differs"),
        ("padded", "offsets or padded flag differ"),
        ("rows", "rows differ"),
        ("offsets", "offsets"),
    ],
)
def test_every_field_is_checked_on_read_and_by_verify(tmp_path, case, field, monkeypatch):
    # the per-video checksums, as for shards over 2 MiB (smaller ones are sha256-checked whole on open)
    monkeypatch.setattr(store_mod, "_HASH_ON_OPEN_BYTES", 0)
    root = tmp_path / "s"
    _write(root, ["v1", "v2", "v3"])
    shard = root / FeatureStore(root).manifest["shards"][0]["file"]

    def edit(f):
        if case == "meta_json":
            f["videos/meta_json"][1] = f["videos/meta_json"][1].decode().replace("2.0", "3.0")
        elif case == "padded":
            f["streams/rgb/padded"][1] = not f["streams/rgb/padded"][1]
        elif case == "rows":
            f["streams/rgb/data"][25, 0] += 1.0
        elif case == "offsets":
            f["streams/rgb/offsets"][2] -= 1
        else:
            f[f"streams/rgb/{case}"][25] += 0.04

    _tamper(shard, edit)
    st = FeatureStore(root)
    with pytest.raises(StoreCorruptError, match=rf"{shard.name}.*video 'v2'.*{field}"):
        if case == "meta_json":
            st.meta("v2")
        else:
            st["v2"]["rgb"]
    np.testing.assert_array_equal(st["v1"]["vggish"], _feats(1)["vggish"])  # the rest stays readable
    problems = st.verify()
    assert any(shard.name in p and "'v2'" in p and field in p for p in problems), problems
    assert any("sha256" in p for p in problems)
    res = CliRunner().invoke(cli, ["info", "--verify", str(root)])
    assert res.exit_code == 1 and field in res.output


def test_zeroed_tail_is_an_error_on_read_verify_and_train(tmp_path):
    root = tmp_path / "s"
    specs = {"rgb": StreamSpec("i3d_rgb", UNAV100_I3D, (12,)), "vggish": StreamSpec("vggish", UNAV100_VGGISH, (8,))}
    rng = np.random.default_rng(0)
    samples = []
    with StoreWriter(root, dataset="unav100", streams=specs) as w:
        for i in range(8):
            n = 30
            w.add(f"-v{i}", {"rgb": rng.standard_normal((n, 12)), "vggish": rng.standard_normal((n, 8))})
            samples.append(
                Sample(
                    f"-v{i}",
                    f"-v{i}",
                    10.6,
                    ["train", "validation", "test", "train"][i % 4],
                    [Segment(1.0, 3.0, "a", 0)],
                )
            )
    write_unav100(AnnotationSet("unav100", ["a"], samples), tmp_path / "ann.json")
    st = FeatureStore(root)
    entry = st.manifest["shards"][0]
    shard = root / entry["file"]
    with h5py.File(shard, "r") as f:  # zero from the last video's vggish rows to the end of the file
        start = f["streams/vggish/data"].id.get_offset() + 7 * 30 * 8 * 4
    blob = bytearray(shard.read_bytes())
    blob[start:] = bytes(len(blob) - start)
    shard.write_bytes(bytes(blob))
    st = FeatureStore(root)
    with pytest.raises(StoreCorruptError, match=rf"{shard.name}"):
        for v in st.videos():
            for s in ("rgb", "vggish"):
                st[v][s]
    assert any(shard.name in p for p in st.verify())
    cfg = {
        "task": "dense",
        "tensorboard": False,
        "model": {
            "name": "unav",
            "options": {
                "encoder": {"embed_dim": 16, "num_heads": 2},
                "tdm": {"class_dim": 4},
                "head": {"head_dim": 16},
            },
        },
        "data": {"visual_streams": ["rgb"], "audio_streams": ["vggish"], "max_seq_len": 64},
        "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--store",
            str(root),
            "--annotations",
            str(tmp_path / "ann.json"),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code == EXIT_INPUT and f"error: shard {shard}" in res.output, res.output


def _enospc_write(path, data):
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_out_of_space_is_one_line_leaves_no_temp_and_rerun_resumes(tmp_path, monkeypatch):
    root = tmp_path / "s"
    _write(root, ["v0", "v1", "v2"])
    monkeypatch.setattr(store_mod, "write_new_file", _enospc_write)
    w = StoreWriter(root, dataset="unav100", streams=SPECS, shard_max_videos=2)
    w.add("v3", _feats(3))
    with pytest.raises(StoreError) as exc:
        w.add("v4", _feats(4))
    msg = str(exc.value)
    assert "\n" not in msg and str(root) in msg and "out of space" in msg and "MiB more" in msg
    w.abort()
    monkeypatch.undo()
    assert not [p for p in (root / "shards").iterdir() if p.name.startswith(".tmp")]
    _check_all(root, ["v0", "v1", "v2"])
    _write(root, ["v3", "v4"])  # the rerun resumes
    _check_all(root, [f"v{k}" for k in range(5)])


def test_out_of_space_on_the_log_append_rolls_back(tmp_path, monkeypatch):
    root = tmp_path / "s"
    _write(root, ["v0"])

    def full(root_, records):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    w = StoreWriter(root, dataset="unav100", streams=SPECS)
    w.add("v1", _feats(1), meta=VideoMeta(duration_s=1.0))
    monkeypatch.setattr(store_mod, "append_records", full)
    with pytest.raises(StoreError, match="out of quota while committing"):
        w.flush()
    monkeypatch.undo()
    w.abort()
    assert sorted(p.name for p in (root / "shards").iterdir()) == sorted(
        Path(s["file"]).name for s in FeatureStore(root).manifest["shards"]
    )
    _write(root, ["v1"])
    _check_all(root, ["v0", "v1"])


def test_read_only_store(tmp_path, monkeypatch):
    root = tmp_path / "s"
    _write(root, ["v0", "v1"])
    if os.geteuid() == 0:  # root ignores permissions: simulate a read-only mount (EROFS)
        real_open = open

        def ro_open(path, mode="r", *a, **k):
            if any(c in mode for c in "wa+"):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, mode, *a, **k)

        monkeypatch.setattr(store_log, "open", ro_open, raising=False)
        expected = "Read-only file system"
    else:
        for p in [root, *root.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        expected = "Permission denied"
    try:
        _check_all(root, ["v0", "v1"])  # reading never writes
        with pytest.raises(StoreError) as exc:
            StoreWriter(root, dataset="unav100", streams=SPECS)
        msg = str(exc.value)
        assert "\n" not in msg and str(root) in msg and expected in msg and "write access" in msg
    finally:
        for p in [root, *root.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)


def _claiming_writer(root: str, ids: list[str], out: str) -> None:
    done = []
    with StoreWriter(root, dataset="unav100", streams=SPECS, shard_max_videos=3) as w:
        for vid in w.claim_each(ids, key=lambda v: v, poll_s=0.05):
            time.sleep(0.01)  # "extraction"
            k = int(vid[1:])
            w.add(vid, _feats(k), meta=VideoMeta(duration_s=float(k)), padded={"rgb": k % 2 == 0})
            done.append(vid)
    Path(out).write_text(json.dumps(done))


def test_two_writers_share_the_videos_each_exactly_once(tmp_path):
    root = tmp_path / "s"
    ids = [f"v{k}" for k in range(40)]
    _write(root, ids[:5])
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=_claiming_writer, args=(str(root), ids, str(tmp_path / f"done{k}.json"))) for k in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    done = [json.loads((tmp_path / f"done{k}.json").read_text()) for k in range(2)]
    assert sorted(done[0] + done[1]) == sorted(ids[5:])  # every remaining video extracted by exactly one writer
    assert done[0] and done[1]  # and both did some of them
    st = _check_all(root, ids)
    listed = [v for sh in st.manifest["shards"] for v in sh["videos"]]
    assert len(listed) == len(set(listed)) == len(ids)
    assert not list((root / "claims").glob("*.json")) and not list((root / "claims" / "writers").iterdir())


def test_claims_of_a_dead_writer_are_taken_over(tmp_path):
    root = tmp_path / "s"
    _write(root, ["v0"])
    ctx = mp.get_context("fork")
    p = ctx.Process(target=lambda: (StoreWriter(root, dataset="unav100", streams=SPECS).claim("v1"), os._exit(0)))
    p.start()
    p.join()
    held = store_log.read_claim(store_log.claim_path(root, "v1"))
    assert held and held["pid"] == p.pid
    # a live writer on another machine blocks; an expired lease does not
    lease = root / "claims" / "writers" / f"{held['writer']}.json"
    lease.write_text(
        json.dumps({"writer": held["writer"], "host": "other", "pid": 1, "expires_unix": time.time() + 60})
    )
    store_log.atomic_write_text(store_log.claim_path(root, "v1"), json.dumps({**held, "host": "other"}))
    w = StoreWriter(root, dataset="unav100", streams=SPECS)
    assert w.claim("v0") == "done" and w.claim("v1") == "busy"
    lease.write_text(json.dumps({"writer": held["writer"], "host": "other", "pid": 1, "expires_unix": time.time() - 1}))
    assert w.claim("v1") == "mine"
    w.add("v1", _feats(1), meta=VideoMeta(duration_s=1.0))
    w.close()
    _check_all(root, ["v0", "v1"])


def _write_v1_store(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """A schema-version-1 store as the previous release wrote it (manifest rewritten per commit,
    shards with a rows-only crc32)."""
    import zlib

    (root / "shards").mkdir(parents=True)
    expected, shards = {}, []
    for n, ids in enumerate((["a", "b"], ["c"])):
        path = root / "shards" / f"shard-2026010100000{n}-{n:012d}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["schema_version"] = 1
            f.create_dataset("videos/ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
            f.create_dataset(
                "videos/meta_json",
                data=np.array([VideoMeta(duration_s=1.5).to_json()] * len(ids), dtype=object),
                dtype=h5py.string_dtype(),
            )
            feats = {v: _rows(ord(v), 3, 6) for v in ids}
            expected.update({v: {"rgb": r} for v, r in feats.items()})
            g = f.create_group("streams/rgb")
            g["data"] = np.concatenate(list(feats.values()))
            g["offsets"] = np.arange(len(ids) + 1, dtype=np.int64) * 3
            starts, ends = UNAV100_I3D.row_times(3)
            g["start_s"], g["end_s"] = np.tile(starts, len(ids)), np.tile(ends, len(ids))
            g["padded"] = np.zeros(len(ids), bool)
            g["crc32"] = np.array([zlib.crc32(feats[v].tobytes()) for v in ids], np.uint32)
        shards.append(
            {
                "file": f"shards/{path.name}",
                "videos": ids,
                "streams": ["rgb"],
                "absent": {},
                "rows": {"rgb": 3 * len(ids)},
                "size_bytes": path.stat().st_size,
                "sha256": store_log.sha256_hex(path),
                "created": "2026-01-01T00:00:00Z",
            }
        )
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "dataset": "unav100",
                "created": "x",
                "updated": "x",
                "streams": {"rgb": SPECS["rgb"].to_dict()},
                "shards": shards,
                "extra": {"note": "v1"},
            }
        )
    )
    return expected


def test_v1_store_readable_and_upgraded_with_one_command(tmp_path):
    root = tmp_path / "old"
    expected = _write_v1_store(root)
    st = FeatureStore(root)
    assert st.schema_version == 1 and st.videos() == ["a", "b", "c"] and st.verify() == []
    np.testing.assert_array_equal(st["c"]["rgb"], expected["c"]["rgb"])
    with pytest.raises(StoreError, match="avel store upgrade"):
        StoreWriter(root, dataset="unav100", streams={"rgb": SPECS["rgb"]})
    res = CliRunner().invoke(cli, ["store", "upgrade", str(root)])
    assert res.exit_code == 0, res.output
    st = FeatureStore(root)
    assert st.schema_version == 2 and st.videos() == ["a", "b", "c"] and st.verify() == []
    for v, feats in expected.items():
        np.testing.assert_array_equal(st[v]["rgb"], feats["rgb"])
        np.testing.assert_array_equal(st.times(v, "rgb")[0], UNAV100_I3D.row_times(3)[0])
    assert st.summary()["extra"] == {"note": "v1"}
    deleted = [json.loads(line)["file"] for line in (root / "deletions.jsonl").read_text().splitlines()]
    assert len(deleted) == 2 and all(
        "superseded" in line for line in (root / "deletions.jsonl").read_text().splitlines()
    )
    _write(root, ["v5"])  # writable again
    res = CliRunner().invoke(cli, ["store", "upgrade", str(root)])
    assert res.exit_code == 0 and "already schema version 2" in res.output


def test_binary_snapshot_index_opens_without_the_log_and_old_json_snapshots_still_read(tmp_path):
    """The snapshot is manifest.json (no per-video lists) + a binary index of the ids; a
    snapshot of the older all-JSON format reads the same; a damaged index is ignored (log
    replayed, with a note); a log tail after the snapshot is seen."""
    root = tmp_path / "s"
    ids = [f"v{k}" for k in range(8)]
    _write(root, ids, shard_max_videos=3)
    snap = json.loads((root / "manifest.json").read_text())
    assert all("videos" not in sh for sh in snap["shards"]) and snap["index"]["videos"] == 8
    index_file = root / snap["index"]["file"]
    assert index_file.is_file() and index_file.read_bytes()[:8] == b"AVELIDX1"
    st = FeatureStore(root)
    assert st.state.n_indexed == 3 and st.notes == [] and len(st) == 8
    _check_all(root, ids)
    # the same store with the snapshot written the older way (ids in the JSON)
    full = FeatureStore(root).manifest
    (root / "manifest.json").write_text(json.dumps(full))
    st = FeatureStore(root)
    assert st.state.index is None and st.notes == [] and st.videos() == ids
    _check_all(root, ids)
    # a damaged index: ignored, the log replayed, a note naming the file
    store_mod.compact_store(root)
    index_file = root / json.loads((root / "manifest.json").read_text())["index"]["file"]
    data = bytearray(index_file.read_bytes())
    data[20] ^= 0xFF
    index_file.write_bytes(bytes(data))
    st = FeatureStore(root)
    assert any("CRC-32 differs" in n and index_file.name in n for n in st.notes), st.notes
    assert st.videos() == ids
    # a tail after the snapshot (index shards + log tail), a stream added to indexed videos
    store_mod.compact_store(root)
    extra = {"vggish2": StreamSpec("vggish", UNAV100_VGGISH, (2,))}
    with StoreWriter(root, dataset="unav100", streams={**SPECS, **extra}) as w:
        w.add("v1", {"vggish2": _rows(7, 3, 2)})
        w.add("v9", _feats(9), meta=VideoMeta(duration_s=9.0), padded={"rgb": False})
        w.flush()
        st = FeatureStore(root)  # snapshot (index) + a tail of one shard
        assert st.state.n_indexed == 3 and len(st.state.shards) == 4
        assert st.videos() == ids + ["v9"] and len(st) == 9 and "v9" in st and "v10" not in st
        np.testing.assert_array_equal(st["v1"]["vggish2"], _rows(7, 3, 2))
        np.testing.assert_array_equal(st["v1"]["rgb"], _feats(1)["rgb"])
        assert st.meta("v1").duration_s == 1.0 and set(st.video_streams("v1")) == {"rgb", "vggish", "vggish2"}
    st = FeatureStore(root)  # compacted on close: the spanning video is found through the index
    assert st.state.n_indexed == 4 and st.videos() == ids + ["v9"]
    np.testing.assert_array_equal(st["v1"]["vggish2"], _rows(7, 3, 2))
    assert st.meta("v1").duration_s == 1.0 and not st.has("v2", "vggish2") and st.verify() == []
    # the log lost too: rebuilt from the snapshot and its index, nothing lost
    (root / "log" / "commits.jsonl").unlink()
    res = CliRunner().invoke(cli, ["store", "repair", str(root)])
    assert res.exit_code == 0 and "rebuilt from manifest.json (4 shards)" in res.output, res.output
    _check_all(root, ids + ["v9"])


def test_double_commit_in_the_index_is_an_error_naming_both_shards(tmp_path):
    root = tmp_path / "s"
    _write(root, ["v1", "v2"], shard_max_videos=1)
    log = root / "log" / "commits.jsonl"
    recs = [json.loads(line[9:]) for line in log.read_bytes().splitlines()]
    commits = [r for r in recs if r["op"] == "commit"]
    second = dict(commits[1]["shard"], videos=["v1"])  # as if v1 were committed twice
    recs[recs.index(commits[1])] = {**commits[1], "shard": second}
    log.write_bytes(b"".join(store_log.encode_record(r) for r in recs))
    (root / "manifest.json").unlink()
    store_mod.compact_store(root)
    assert FeatureStore(root).state.n_indexed == 2
    with pytest.raises(StoreCorruptError, match="'v1' stream '(rgb|vggish)' committed twice"):
        FeatureStore(root)["v1"]["rgb"]


def test_settle_keeps_a_written_claim_until_commit_and_releases_a_failed_one(tmp_path):
    """Claims are settled one video at a time, in any order: a written video stays claimed
    until its shard is committed; a failed one is released at once for another writer to retry,
    or (retry=False) marked failed so live writers skip it until its writer closes."""
    root = tmp_path / "s"
    a = StoreWriter(root, dataset="unav100", streams=SPECS, shard_max_videos=10)
    b = StoreWriter(root, dataset="unav100", streams=SPECS)
    assert [a.claim(v) for v in ("v1", "v2", "v3", "v4")] == ["mine"] * 4
    a.add("v4", _feats(4), meta=VideoMeta(duration_s=4.0), padded={"rgb": True})
    assert a.settle("v3") == "released"  # finished (failed) before v4 was settled: order is free
    assert a.settle("v4") == "commit"
    assert b.claim("v3") == "mine"  # another writer retries the failed video
    assert b.claim("v4") == "busy"  # written, not committed yet: still held
    assert a.settle("v2", retry=False) == "failed"
    assert b.claim("v2") == "failed"
    assert a.settle("v9") == "not held"
    a.flush()  # v4 committed: its claim is gone
    assert not store_log.claim_path(root, "v4").exists() and b.claim("v4") == "done"
    a.add("v1", _feats(1), meta=VideoMeta(duration_s=1.0), padded={"rgb": False})
    a.flush()
    assert a.settle("v1") == "commit" and not store_log.claim_path(root, "v1").exists()
    a.close()  # the failed claim ends with its writer: a rerun (or b) takes it over
    assert b.claim("v2") == "mine"
    for v in ("v2", "v3"):
        k = int(v[1:])
        b.add(v, _feats(k), meta=VideoMeta(duration_s=float(k)), padded={"rgb": k % 2 == 0})
        assert b.settle(v) == "commit"
    b.close()
    _check_all(root, ["v1", "v2", "v3", "v4"])
    assert not list((root / "claims").glob("*.json"))


def test_small_shard_is_hash_checked_before_hdf5_parses_it(tmp_path):
    """A damaged variable-length string heap can hang HDF5 inside a read (seen by the fuzz
    test): shards up to 2 MiB are checked against the log's sha256 when first opened."""
    root = tmp_path / "s"
    _write(root, ["v1", "v2"])
    shard = root / FeatureStore(root).manifest["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    k = data.index(b"v2")  # the ids' heap
    data[k + 1] ^= 0x7F
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=rf"{shard.name}: sha256 differs from the log"):
        FeatureStore(root)["v1"]["rgb"]
