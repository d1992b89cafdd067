"""Stores in, and videos from, an S3-compatible bucket: a real S3 server (moto in server mode)
started on the loopback interface, spoken to over HTTP by s3fs/botocore (no client mock)."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -r requirements.lock)")
moto_server = pytest.importorskip(
    "moto.server", reason="moto[server] is not installed (pip install -r requirements.lock)"
)

from avel.datasets.sampling import UNAV100_I3D, UNAV100_VGGISH  # noqa: E402
from avel.datasets.store import (  # noqa: E402
    FeatureStore,
    StoreCorruptError,
    StoreError,
    StoreWriter,
    StreamSpec,
    VideoMeta,
)
from avel.datasets.store_remote import LOCK_OBJECT, stage_folder  # noqa: E402

SPECS = {"rgb": StreamSpec("i3d", UNAV100_I3D, (6,)), "vggish": StreamSpec("vggish", UNAV100_VGGISH, (4,))}
BUCKET = "avel-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """A fresh bucket on the loopback server; returns an s3fs filesystem on it."""
    import boto3
    import s3fs

    for k, v in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AVEL_REMOTE_CACHE": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=s3_server)
    if BUCKET in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    else:
        client.create_bucket(Bucket=BUCKET)
    return s3fs.S3FileSystem(endpoint_url=s3_server, skip_instance_cache=True)


def _feats(k: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(k)
    n = 5 + k % 4
    return {
        "rgb": rng.standard_normal((n, 6)).astype(np.float32),
        "vggish": rng.standard_normal((n, 4)).astype(np.float32),
    }


def _add(w: StoreWriter, k: int) -> None:
    w.add(f"v{k}", _feats(k), meta=VideoMeta(duration_s=float(k)), padded={"rgb": k % 2 == 0})


def _check(st: FeatureStore, ks) -> None:
    assert sorted(st.videos()) == sorted(f"v{k}" for k in ks)
    for k in ks:
        for s, rows in _feats(k).items():
            np.testing.assert_array_equal(st[f"v{k}"][s], rows)
        assert st.meta(f"v{k}").duration_s == float(k) and st.is_padded(f"v{k}", "rgb") == (k % 2 == 0)
    assert st.verify() == []


def test_store_written_to_and_read_from_a_bucket(s3, tmp_path, monkeypatch):
    url = f"s3://{BUCKET}/stores/a"
    w = StoreWriter(url, dataset="unav100", streams=SPECS, shard_max_videos=2)
    for k in range(5):
        _add(w, k)  # two shards committed (uploaded, then their records created) while open
    records = sorted(s3.ls(f"{BUCKET}/stores/a/log/records"))
    assert len(records) == 4  # init, streams, then one record per commit
    first = json.loads(s3.cat_file(records[2])[9:])
    assert first["op"] == "commit" and s3.exists(f"{BUCKET}/stores/a/{first['shard']['file']}")
    # a second writer is refused at start with one line naming the first
    with pytest.raises(StoreError) as e:
        StoreWriter(url, dataset="unav100", streams=SPECS)
    msg = str(e.value)
    assert "\n" not in msg and f"writer {w.lease.id}" in msg and "one writer at a time" in msg
    # a reader with its own empty cache sees what is committed: the log's records, shards on demand
    monkeypatch.setenv("AVEL_REMOTE_CACHE", str(tmp_path / "reader-cache"))
    st = FeatureStore(url)
    assert sorted(st.videos()) == ["v0", "v1", "v2", "v3"]
    assert not list((tmp_path / "reader-cache").rglob("shard-*.h5"))  # nothing downloaded yet
    np.testing.assert_array_equal(st["v3"]["rgb"], _feats(3)["rgb"])
    assert len(list((tmp_path / "reader-cache").rglob("shard-*.h5"))) == 1
    monkeypatch.setenv("AVEL_REMOTE_CACHE", str(tmp_path / "cache"))
    w.close()  # the last shard, then the whole log and the snapshot in one object each
    assert not s3.exists(f"{BUCKET}/stores/a/{LOCK_OBJECT}")
    names = {p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/stores/a/log")}
    assert "upto-5.jsonl" in names and s3.exists(f"{BUCKET}/stores/a/manifest.json")
    # a rerun resumes: the next writer (fresh cache) skips committed videos and adds more
    monkeypatch.setenv("AVEL_REMOTE_CACHE", str(tmp_path / "cache2"))
    with StoreWriter(url, dataset="unav100", streams=SPECS) as w2:
        assert w2.committed() == {f"v{k}" for k in range(5)}
        _add(w2, 5)
    # the first reader's cache catches up incrementally; a third, empty cache reads it all
    monkeypatch.setenv("AVEL_REMOTE_CACHE", str(tmp_path / "reader-cache"))
    _check(FeatureStore(url), range(6))
    monkeypatch.setenv("AVEL_REMOTE_CACHE", str(tmp_path / "cache3"))
    _check(FeatureStore(url), range(6))
    from click.testing import CliRunner

    from avel.cli.main import cli

    res = CliRunner().invoke(cli, ["info", "--verify", url])
    assert res.exit_code == 0 and f"store    {url}" in res.output and "verify   ok" in res.output, res.output


def test_modified_shard_object_and_expired_lock(s3, tmp_path, monkeypatch):
    url = f"s3://{BUCKET}/stores/b"
    with StoreWriter(url, dataset="unav100", streams=SPECS) as w:
        _add(w, 1)
    st = FeatureStore(url)
    shard = st.state.shards[0]["file"]
    data = bytearray(s3.cat_file(f"{BUCKET}/stores/b/{shard}"))
    data[-100] ^= 0xFF  # same size, different bytes
    s3.pipe_file(f"{BUCKET}/stores/b/{shard}", bytes(data))
    monkeypatch.setenv("AVEL_REMOTE_CACHE", str(tmp_path / "other-cache"))
    with pytest.raises(StoreCorruptError, match=r"sha256 of the object differs from the log"):
        FeatureStore(url)["v1"]["rgb"]
    # a writer that died keeps its lock until it expires; then the next one takes over
    s3.pipe_file(
        f"{BUCKET}/stores/b/{LOCK_OBJECT}",
        json.dumps({"writer": "dead0", "host": "gone", "pid": 1, "expires_unix": time.time() + 60}).encode(),
    )
    with pytest.raises(StoreError, match="writer dead0 .host gone, pid 1"):
        StoreWriter(url, dataset="unav100", streams=SPECS)
    s3.pipe_file(
        f"{BUCKET}/stores/b/{LOCK_OBJECT}",
        json.dumps({"writer": "dead0", "host": "gone", "pid": 1, "expires_unix": time.time() - 1}).encode(),
    )
    StoreWriter(url, dataset="unav100", streams=SPECS).close()


def test_a_writer_that_lost_its_lock_cannot_overwrite_a_record(s3, tmp_path):
    url = f"s3://{BUCKET}/stores/c"
    w = StoreWriter(url, dataset="unav100", streams=SPECS, shard_max_videos=1)
    _add(w, 1)
    # another writer took the store over meanwhile (this one stalled past its lock) and committed
    n = len(s3.ls(f"{BUCKET}/stores/c/log/records"))
    theirs = f"{BUCKET}/stores/c/log/records/{n:012d}.rec"
    s3.pipe_file(theirs, b"their record\n")
    with pytest.raises(StoreError, match=f"log record {n} was written by another writer"):
        _add(w, 2)
    w.abort()
    assert s3.cat_file(theirs) == b"their record\n"  # never overwritten


def test_stage_folder_downloads_videos_once(s3, tmp_path):
    s3.pipe_file(f"{BUCKET}/videos/a.mp4", b"x" * 10)
    s3.pipe_file(f"{BUCKET}/videos/sub/b.mkv", b"y" * 5)
    s3.pipe_file(f"{BUCKET}/videos/notes.txt", b"z")
    local = stage_folder(f"s3://{BUCKET}/videos", (".mp4", ".mkv"))
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == ["a.mp4", "sub/b.mkv"]
    mtime = (local / "a.mp4").stat().st_mtime_ns
    assert stage_folder(f"s3://{BUCKET}/videos", (".mp4",)) == local and (local / "a.mp4").stat().st_mtime_ns == mtime
    with pytest.raises(StoreError, match="no such folder"):
        stage_folder(f"s3://{BUCKET}/nothing", (".mp4",))


@pytest.mark.slow
def test_avel_extract_reads_videos_from_and_writes_the_store_to_a_bucket(s3, tmp_path):
    from click.testing import CliRunner

    from avel.cli.main import cli
    from avel.datasets.synth import SynthConfig, generate

    generate(
        SynthConfig(kind="unav100", videos=3, seed=2, size=64, min_duration_s=1.5, max_duration_s=2.0, num_classes=2),
        tmp_path / "synth",
    )
    for p in (tmp_path / "synth" / "videos").iterdir():
        s3.put_file(str(p), f"{BUCKET}/videos/{p.name}")
    args = ["extract", "--dataset", "folder", "--videos", f"s3://{BUCKET}/videos", "--extractors", "vgg19"]
    args += ["--preset", "tiny", "--random-weights", "--device", "cpu", "--out", f"s3://{BUCKET}/stores/x", "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.splitlines()[0])
    assert report["videos_ok"] == 3, report
    ids = sorted(p.stem for p in (tmp_path / "synth" / "videos").iterdir())
    st = FeatureStore(f"s3://{BUCKET}/stores/x")
    assert sorted(st.videos()) == ids and st.verify() == []
    res = CliRunner().invoke(cli, args)  # a rerun skips everything
    assert res.exit_code == 0 and json.loads(res.output.splitlines()[0])["videos_skipped"] == 3, res.output
