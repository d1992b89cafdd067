"""`avel extract`: store contents, exact row times, resume, failure isolation, chunking (the Ray
runner's tests are in test_ray_extract.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.store import FeatureStore
from avel.datasets.synth import SynthConfig, generate
from avel.pipeline.extract import ExtractConfig, run_extract

EXTRACTORS = "vgg19,vggish"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    generate(
        SynthConfig(kind="unav100", videos=3, seed=5, size=64, min_duration_s=2.0, max_duration_s=3.0, num_classes=3),
        root,
    )
    return root


def _run(args):
    return CliRunner().invoke(
        cli,
        [
            "extract",
            "--dataset",
            "folder",
            "--extractors",
            EXTRACTORS,
            "--preset",
            "tiny",
            "--random-weights",
            "--batch-size",
            "8",
            "--json",
            *args,
        ],
    )


def test_folder_extraction_resume_and_failures(videos, tmp_path):
    vdir = tmp_path / "videos"
    shutil.copytree(videos / "videos", vdir)
    (vdir / "zero.mp4").write_bytes(b"")
    (vdir / "text.mp4").write_text("not a video\n" * 10)
    good = sorted(p.stem for p in (videos / "videos").glob("*.mp4"))
    store = tmp_path / "store"
    res = _run(["--videos", str(vdir), "--out", str(store)])
    assert res.exit_code == 1, res.output  # two bad files: recorded, the rest extracted
    report = json.loads(res.stdout.splitlines()[0])
    assert report["videos_ok"] == 3 and report["videos_failed"] == 2
    st = FeatureStore(store)
    assert sorted(st.videos()) == good
    errors = {e["video_id"]: e for e in st.errors()}
    assert errors["zero"]["stage"] == "decode" and "empty file" in errors["zero"]["message"]
    assert errors["text"]["error_type"] == "DecodeError"
    for vid in good:
        meta = st[vid].meta
        n = st.num_rows(vid, "vgg19")
        start, end = st.times(vid, "vgg19")
        np.testing.assert_allclose(start, np.arange(n) * 4 / 4.0)  # tiny vgg19 plan: 4 fps, 4/4 frames
        assert n == int(meta.duration_s * 4 + 1e-6) // 4
        assert st.streams["vggish"].weights_sha256 == "random"
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["extra"]["extract_config"]["extractors"] == ["vgg19", "vggish"]
    # rerun: committed videos are skipped, failed ones too (no --retry-failed)
    before = {v: st[v]["vgg19"].copy() for v in good}
    res = _run(["--videos", str(vdir), "--out", str(store)])
    report = json.loads(res.stdout.splitlines()[0])
    assert res.exit_code == 0 and report["videos_ok"] == 0 and report["videos_skipped"] == 5
    # fix one file and retry the failed ones
    shutil.copy(vdir / f"{good[0]}.mp4", vdir / "zero.mp4")
    res = _run(["--videos", str(vdir), "--out", str(store), "--retry-failed"])
    report = json.loads(res.stdout.splitlines()[0])
    assert report["videos_ok"] == 1 and report["videos_failed"] == 1 and res.exit_code == 1
    st = FeatureStore(store)
    np.testing.assert_array_equal(st["zero"]["vgg19"], before[good[0]])
    assert all(np.array_equal(st[v]["vgg19"], before[v]) for v in good)


def test_runner_flags_reach_the_run_and_the_saved_config(videos, tmp_path):
    store = tmp_path / "store"
    res = _run(
        [
            "--videos",
            str(videos / "videos"),
            "--out",
            str(store),
            "--chunk-s",
            "1.5",
            "--decode-workers",
            "2",
            "--threads-per-actor",
            "1",
            "--actors-per-extractor",
            "2",
            "--decode-memory-gb",
            "1.5",
        ]
    )
    assert res.exit_code == 0, res.output
    saved = json.loads((store / "manifest.json").read_text())["extra"]["extract_config"]
    assert (
        saved["chunk_s"],
        saved["decode_workers"],
        saved["threads_per_actor"],
        saved["actors_per_extractor"],
        saved["decode_memory_gb"],
    ) == (1.5, 2, 1, 2, 1.5)
    whole = FeatureStore(store)
    other = tmp_path / "whole"
    assert _run(["--videos", str(videos / "videos"), "--out", str(other)]).exit_code == 0
    for vid in whole.videos():  # 1.5-s chunks give the rows of whole-video extraction
        for stream in ("vgg19", "vggish"):
            np.testing.assert_array_equal(whole[vid][stream], FeatureStore(other)[vid][stream])
    res = _run(["--videos", str(videos / "videos"), "--out", str(tmp_path / "s2"), "--decode-workers", "0"])
    assert res.exit_code == 2 and "--decode-workers" in res.output


@pytest.mark.parametrize(
    "key,value",
    [
        ("chunk_s", 0),
        ("decode_workers", 0),
        ("decode_timeout_s", "600"),
        ("threads_per_actor", -1),
        ("decode_memory_gb", -1),
    ],
)
def test_bad_run_option_in_yaml_names_the_key(videos, tmp_path, key, value):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps({key: value}))
    res = _run(["--videos", str(videos / "videos"), "--out", str(tmp_path / "s"), "--config", str(cfg)])
    # a wrong type (caught reading the file) and a wrong value (the job's checks) are usage errors
    assert res.exit_code == 2, res.output
    assert "error: " in res.output and key in res.output and repr(value) in res.output
    assert "must be a number" in res.output or "expected a number" in res.output
    assert not (tmp_path / "s").exists()


def test_job_yaml_type_errors_name_file_and_key(videos, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("extractors: vgg19\n")  # a string, not a list
    res = _run(["--videos", str(videos / "videos"), "--out", str(tmp_path / "s"), "--config", str(cfg)])
    assert res.exit_code == 2 and f"{cfg}: extractors: expected a list, got str 'vgg19'" in res.output
    cfg.write_text("cluster: {adress: auto}\n")
    res = _run(["--videos", str(videos / "videos"), "--out", str(tmp_path / "s"), "--config", str(cfg)])
    assert res.exit_code == 2 and "cluster: unknown key(s) ['adress']" in res.output


def test_missing_weights_is_a_clear_error(videos, tmp_path):
    res = CliRunner().invoke(
        cli,
        [
            "extract",
            "--dataset",
            "folder",
            "--videos",
            str(videos / "videos"),
            "--extractors",
            "vggish",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert res.exit_code == 2  # a usage error (avel.cli.errors)
    assert "has no weights" in res.output and "vggish-10086976.pth" in res.output


def test_unav100_dataset_with_annotations(videos, tmp_path):
    res = _run(
        [
            "--dataset",
            "unav100",
            "--videos",
            str(videos / "videos"),
            "--annotations",
            str(videos / "unav100_annotations.json"),
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert res.exit_code == 0, res.output
    st = FeatureStore(tmp_path / "s")
    assert st.dataset == "unav100" and len(st) == 3


def test_chunked_extraction_equals_whole_video(tmp_path):
    """Chunks of 1 s, and a short first chunk before 60-s ones, give the same rows as one 60-s
    chunk, bitwise (memory bounded by the chunk; fixed-shape batches make the different batch
    groupings irrelevant); the short first chunk's overlap is reported as frames decoded again."""
    generate(
        SynthConfig(kind="unav100", videos=1, seed=9, size=64, min_duration_s=6.0, max_duration_s=6.0, num_classes=2),
        tmp_path,
    )
    stores, reports = {}, {}
    for chunk_s, first_chunk_s in ((60.0, 60.0), (1.0, 1.0), (60.0, 2.0)):
        out = tmp_path / f"s{chunk_s:g}-{first_chunk_s:g}"
        cfg = ExtractConfig(
            dataset="folder",
            videos=str(tmp_path / "videos"),
            out=str(out),
            random_weights=True,
            extractors=["i3d_rgb", "vgg19", "vggish"],
            preset="tiny",
            runner="local",
            device="cpu",
            batch_size=4,
            chunk_s=chunk_s,
            first_chunk_s=first_chunk_s,
            decode_timeout_s=60,
            extractor_options={"vgg19": {"fps": 12.5, "window_frames": 12, "stride_frames": 4}},
        )
        report = run_extract(cfg)
        assert report["videos_ok"] == 1 and not report["failures"], report
        stores[chunk_s, first_chunk_s], reports[chunk_s, first_chunk_s] = FeatureStore(out), report
    whole_store = stores[60.0, 60.0]
    (vid,) = whole_store.videos()
    assert whole_store.meta(vid).duration_s == pytest.approx(6.0, abs=0.05)
    whole = whole_store[vid]
    for key in ((1.0, 1.0), (60.0, 2.0)):
        parts = stores[key][vid]
        for s in ("i3d_rgb", "vgg19", "vggish"):
            assert whole[s].shape == parts[s].shape
            np.testing.assert_array_equal(whole[s], parts[s])
    assert whole["i3d_rgb"].shape[0] == (150 - 8) // 4 + 1  # tiny i3d: 8/4 frames at 25 fps
    # 2-s first chunk: i3d rows 0-11 (frames 0-51) and vgg19 rows 0-5 (frames 0-31 at 12.5 fps),
    # then the rest; the second chunk decodes again what the chunks' windows share (window - stride)
    redecoded = {fps: f["redecoded"] for fps, f in reports[60.0, 2.0]["work"]["frames"].items()}
    assert redecoded == {"25": 8 - 4, "12.5": 12 - 4}
    assert all(f["redecoded"] == 0 for f in reports[60.0, 60.0]["work"]["frames"].values())


def test_extractor_options_are_type_checked_naming_file_and_key(tmp_path):
    job = tmp_path / "job.yaml"

    def extract_vgg19(*extra: str):
        args = ["extract", "--config", str(job), "--dataset", "folder", "--videos", str(tmp_path)]
        return CliRunner().invoke(cli, [*args, "--extractors", "vgg19", *extra, "--out", str(tmp_path / "s")])

    job.write_text("extractor_options: {vgg19: {fps: fast}}\n")
    res = extract_vgg19("--preset", "tiny", "--random-weights")
    assert res.exit_code == 2
    assert f"{job}: extractor_options.vgg19: VGG19Config: fps: expected a number, got 'fast'" in res.output
    job.write_text("extractor_options: {vgg19: {fpss: 1.0}}\n")
    res = extract_vgg19()
    assert res.exit_code == 2 and "extractor_options.vgg19: VGG19Config: unknown config keys ['fpss']" in res.output


def test_extractor_config_values_are_type_checked_and_lists_become_tuples():
    import avel.extractors as E

    cls = E.get("i3d_rgb")
    assert cls.make_config("tiny", avg_pool_kernel=[1, 2, 2]).avg_pool_kernel == (1, 2, 2)  # YAML writes lists
    assert cls.make_config(fps=25).fps == 25.0
    with pytest.raises(ValueError, match=r"I3DConfig: window_frames: expected an integer, got 2\.5"):
        cls.make_config(window_frames=2.5)
