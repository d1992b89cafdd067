"""Fuzz every accepted input format (issue 14): randomly truncated, bit-flipped and oversized
copies of a valid file must give a correct result or a clear error, never a crash, a hang or
a silently wrong value.

"Clear error": an avel error type that the command maps to a documented exit code (2 or 3,
never 70: :func:`avel.cli.errors.exit_code_for`) whose message names the file. "Correct
result": what a reader returns is consistent (labels within the class list, finite times,
frames of the decoded shape; a store read returns exactly the rows written, its checksums
catch every changed byte). Seeded; a bounded number of cases per format (``CASES``).

Store shards and the manifest belong to the store's own checks (store v2, per-video checksums);
for them only a clean ``StoreError`` (or the exact rows) is asserted.
"""

from __future__ import annotations

import fractions
import json
import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import yaml

from avel.cli.errors import EXIT_INPUT, EXIT_USAGE, exit_code_for
from avel.datasets.annotations import AnnotationError, AnnotationSet, Sample, Segment
from avel.datasets.ave import load_ave, write_ave
from avel.datasets.interop import import_unav_npy
from avel.datasets.sampling import UNAV100_VGGISH
from avel.datasets.store import FeatureStore, StoreError, StoreWriter, StreamSpec
from avel.datasets.unav100 import load_unav100, write_unav100
from avel.datasets.validate import validate
from avel.pipeline.decode import DecodeError, decode_with_timeout
from avel.pipeline.extract import ExtractConfig
from avel.training.config import load_config

SEED = 1414
CASES = 4  # per mutation kind and format: truncate, flip, oversize


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, len(data))]


def flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def oversize(data: bytes, rng: random.Random) -> bytes:
    """The file followed by 1 MiB of random bytes, or its content repeated to about 1 MiB."""
    if rng.random() < 0.5:
        return data + rng.randbytes(1 << 20)
    return data * max(2, (1 << 20) // max(1, len(data)) + rng.randint(-1, 1))


MUTATIONS = {"truncate": truncate, "flip": flip, "oversize": oversize}


def cases(name: str, n: int = CASES) -> list[tuple[str, int]]:
    return [(kind, i) for kind in MUTATIONS for i in range(n)]


def mutate(src: Path, dst: Path, kind: str, i: int, name: str) -> Path:
    rng = random.Random(f"{SEED}-{name}-{kind}-{i}")
    dst.write_bytes(MUTATIONS[kind](src.read_bytes(), rng))
    return dst


def assert_clear(exc: BaseException, path: Path) -> None:
    assert exit_code_for(exc) in (EXIT_USAGE, EXIT_INPUT), (type(exc), exc)
    assert path.name in str(exc), f"message does not name {path.name}: {exc}"


def check(path: Path, load: Callable[[Path], object], errors: tuple[type, ...], ok: Callable[[object], None]) -> None:
    try:
        result = load(path)
    except errors as e:
        assert_clear(e, path)
    else:
        ok(result)


# ---------------------------------------------------------------------------------------- videos
def _write_video(path: Path, vcodec: str, acodec: str, afmt: str) -> Path:
    c = av.open(str(path), "w")
    vs = c.add_stream(vcodec, rate=10)
    vs.width = vs.height = 32
    vs.pix_fmt = "yuv420p"
    vs.codec_context.thread_count = 1  # libvpx-vp9 failed to open (EINVAL) on a machine short of threads
    a = c.add_stream(acodec, rate=16000 if acodec != "libopus" else 48000)
    a.codec_context.thread_count = 1
    a.layout = "mono"
    for i in range(20):
        frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), (i * 37) % 256, np.uint8), format="rgb24")
        for p in vs.encode(frame):
            c.mux(p)
    for p in vs.encode():
        c.mux(p)
    rate = a.rate
    x = 0.3 * np.sin(np.arange(2 * rate) * 0.2)
    x = (x * 32767).astype(np.int16) if afmt == "s16" else x.astype(np.float32)
    step = 960 if acodec == "libopus" else 1024
    for k in range(0, len(x) - step + 1, step):
        fr = av.AudioFrame.from_ndarray(x[None, k : k + step], format=afmt, layout="mono")
        fr.sample_rate, fr.pts, fr.time_base = rate, k, fractions.Fraction(1, rate)
        for p in a.encode(fr):
            c.mux(p)
    for p in a.encode():
        c.mux(p)
    c.close()
    return path


VIDEO_FORMATS = {
    "mp4": ("libx264", "aac", "fltp"),
    "mkv": ("libx264", "flac", "s16"),
    "webm": ("libvpx-vp9", "libopus", "flt"),
}


@pytest.fixture(scope="module")
def video_sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_videos")
    return {ext: _write_video(d / f"src.{ext}", *codecs) for ext, codecs in VIDEO_FORMATS.items()}


def _decoded_ok(decoded) -> None:
    frames = decoded.frames[4.0]
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[0] >= 1 and frames.shape[3] == 3
    assert math.isfinite(decoded.meta.duration_s) and 0 < decoded.meta.duration_s < 3600
    assert frames.shape[0] <= decoded.meta.duration_s * 4 + 1
    if decoded.audio is not None:
        assert np.isfinite(decoded.audio).all() and decoded.audio.ndim == 1


@pytest.mark.parametrize(
    "ext, n",
    [(ext, 2) for ext in VIDEO_FORMATS]
    + [pytest.param(ext, 12, marks=pytest.mark.slow, id=f"{ext}-many") for ext in VIDEO_FORMATS],
)
def test_fuzz_videos(video_sources, tmp_path, ext, n):
    """Each decode forks a child (~0.5 s): 6 cases per format here, 36 in the slow variant."""
    src = video_sources[ext]
    for kind, i in cases(ext, n):
        path = mutate(src, tmp_path / f"v_{kind}{i}.{ext}", kind, i, ext)
        # a forked, time-limited decoder: a crash or hang of the native decoder is a DecodeError too
        check(
            path,
            lambda p: decode_with_timeout(p, timeout_s=60, fps=[4], short_side=32, sample_rate=16000),
            (DecodeError,),
            _decoded_ok,
        )


# ----------------------------------------------------------------------------------- annotations
def _ave_source(d: Path) -> Path:
    samples = [
        Sample(
            f"row-{i:04d}",
            f"vid{i}",
            10.0,
            ["train", "validation", "test"][i % 3],
            [Segment(float(i % 5), float(i % 5 + 3), c, 0)],
            {"row": i, "quality": "good"},
        )
        for i, c in enumerate(["Church bell", "Bark", "Cat", "Bark", "Church bell", "Mandolin"])
    ]
    from avel.datasets.ave import AVE_CLASSES

    samples = [
        Sample(
            s.sample_id,
            s.video_id,
            s.duration_s,
            s.subset,
            [Segment(g.start_s, g.end_s, g.label, AVE_CLASSES.index(g.label)) for g in s.segments],
            s.extra,
        )
        for s in samples
    ]
    write_ave(AnnotationSet("ave", list(AVE_CLASSES), samples, background_id=28), d)
    return d / "Annotations.txt"


def _annotations_ok(ann: AnnotationSet) -> None:
    for s in ann:
        for g in s.segments:
            assert 0 <= g.label_id < len(ann.classes) and ann.classes[g.label_id] == g.label
            assert math.isfinite(g.start_s) and math.isfinite(g.end_s)
        assert s.duration_s is None or (math.isfinite(s.duration_s) and s.duration_s > 0)


def test_fuzz_ave_annotations(tmp_path):
    src = _ave_source(tmp_path / "src")
    for kind, i in cases("ave"):
        d = tmp_path / f"{kind}{i}"
        d.mkdir()
        path = mutate(src, d / "Annotations.txt", kind, i, "ave")
        check(path, load_ave, (AnnotationError,), _annotations_ok)
        assert all(isinstance(p.message, str) for p in validate("ave", path))  # reports, never raises


def test_fuzz_ave_split_h5(tmp_path):
    src_dir = tmp_path / "src"
    _ave_source(src_dir)
    for kind, i in cases("h5"):
        d = tmp_path / f"{kind}{i}"
        shutil.copytree(src_dir, d)
        mutate(src_dir / "train_order.h5", d / "train_order.h5", kind, i, "h5")

        try:
            ann = load_ave(d / "Annotations.txt", split_dir=d)
        except AnnotationError as e:  # names this file, or the split file it now contradicts
            assert exit_code_for(e) == EXIT_INPUT
            assert any(f"{d / name}:" in str(e) for name in ("train_order.h5", "val_order.h5", "test_order.h5")), e
        else:
            _annotations_ok(ann)


def test_fuzz_unav100_json(tmp_path):
    samples = [
        Sample(
            f"-v{i}",
            f"-v{i}",
            20.0 + i,
            ["train", "validation", "test"][i % 3],
            [Segment(1.0 + i, 4.5 + i, ["b", "a"][i % 2], i % 2)],
        )
        for i in range(6)
    ]
    src = tmp_path / "src.json"
    write_unav100(AnnotationSet("unav100", ["b", "a"], samples), src)
    for kind, i in cases("unav"):
        path = mutate(src, tmp_path / f"{kind}{i}.json", kind, i, "unav")
        check(path, load_unav100, (AnnotationError,), _annotations_ok)
        assert all(isinstance(p.message, str) for p in validate("unav100", path))


# -------------------------------------------------------------------------------- features, store
def test_fuzz_npy_import(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src_vggish.npy"
    original = rng.standard_normal((12, 128)).astype(np.float32)
    np.save(src, original)
    for kind, i in cases("npy"):
        folder = tmp_path / f"{kind}{i}"
        folder.mkdir()
        path = mutate(src, folder / "vid_vggish.npy", kind, i, "npy")
        report = import_unav_npy(folder, tmp_path / f"store_{kind}{i}")
        if report.problems:
            assert all(path.name in p for p in report.problems), report.problems
            continue
        rows = FeatureStore(tmp_path / f"store_{kind}{i}").read("vid", "vggish")
        assert np.isfinite(rows).all() and rows.shape[1] == 128  # what the file says, never NaN / Inf


def test_fuzz_ave_feature_h5(tmp_path):
    from avel.datasets.interop import import_ave_h5

    ann_dir = tmp_path / "ann"
    ann = load_ave(_ave_source(ann_dir))
    src = tmp_path / "audio_feature.h5"
    with h5py.File(src, "w") as f:
        f["avadataset"] = np.random.default_rng(1).standard_normal((len(ann), 10, 128))
    for kind, i in cases("aveh5"):
        path = mutate(src, tmp_path / f"{kind}{i}_audio.h5", kind, i, "aveh5")
        try:
            report = import_ave_h5(ann, tmp_path / f"store_{kind}{i}", audio_h5=path)
        except (StoreError, AnnotationError) as e:
            assert_clear(e, path)
            continue
        st = FeatureStore(tmp_path / f"store_{kind}{i}")
        for v in st.videos():
            assert np.isfinite(st.read(v, "vggish")).all()
        assert all(path.name in p for p in report.problems), report.problems


@pytest.fixture(scope="module")
def store_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_store") / "store"
    rng = np.random.default_rng(2)
    rows = {f"v{i}": rng.standard_normal((8 + i, 16)).astype(np.float32) for i in range(4)}
    with StoreWriter(
        root, dataset="unav100", streams={"vggish": StreamSpec("vggish", UNAV100_VGGISH, (16,))}, shard_max_videos=2
    ) as w:
        for v, r in rows.items():
            w.add(v, {"vggish": r})
    return root, rows


def _read_all(root: Path, rows: dict[str, np.ndarray]) -> None:
    """Every read returns exactly the rows written; anything else must be a StoreError."""
    st = FeatureStore(root)
    for v in st.videos():
        got = st.read(v, "vggish")
        assert v in rows and np.array_equal(got, rows[v]), f"silently wrong rows for {v}"


@pytest.mark.parametrize(
    "target",
    [
        "shards",  # shard bytes vary with the timestamps in them: each run flips other bytes
        "manifest.json",
    ],
)
def test_fuzz_store_shards_and_manifest(store_source, tmp_path, target):
    src, rows = store_source
    files = sorted(p.relative_to(src) for p in (src / "shards").iterdir()) if target == "shards" else [Path(target)]
    for j, rel in enumerate(files):
        name = f"{target}{j}"  # seeds by position: shard file names hold a timestamp
        for kind, i in cases(name):
            root = tmp_path / f"{name}_{kind}{i}"
            shutil.copytree(src, root)
            mutate(src / rel, root / rel, kind, i, name)
            try:
                _read_all(root, rows)
            except StoreError as e:
                assert str(root) in str(e) or rel.name in str(e), e
                assert exit_code_for(e) == EXIT_INPUT


# ----------------------------------------------------------------------------------------- YAML
def test_fuzz_yaml_configs(tmp_path):
    train = tmp_path / "train.yaml"
    train.write_text(
        yaml.safe_dump(
            {
                "task": "dense",
                "seed": 3,
                "model": {"name": "loco", "options": {}},
                "data": {"visual_streams": ["rgb"], "audio_streams": ["vggish"]},
                "optim": {"epochs": 5, "lr": 0.0001, "batch_size": 4},
            }
        )
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "dataset": "folder",
                "videos": "/data/v",
                "extractors": ["vggish"],
                "batch_size": 8,
                "cluster": {"num_cpus": 2},
            }
        )
    )
    from avel.datasets.config_schema import ConfigError

    for src, load in ((train, load_config), (job, ExtractConfig.from_yaml)):
        for kind, i in cases(src.name):
            path = mutate(src, tmp_path / f"{src.stem}_{kind}{i}.yaml", kind, i, src.name)
            try:
                cfg = load(path)
            except ConfigError as e:
                assert exit_code_for(e) == EXIT_USAGE and str(path) in str(e), e
                assert "\n" not in str(e)
            else:
                assert cfg is not None


def test_fuzz_is_seeded():
    assert flip(b"abcdefgh", random.Random("x")) == flip(b"abcdefgh", random.Random("x"))
    assert json.dumps(cases("a")) == json.dumps(cases("a"))
