"""Defaults that fit the machine: runner, batch sizes, Ray pools, and what the report says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avel.datasets.store import FeatureStore
from avel.datasets.synth import SynthConfig, generate
from avel.pipeline.engine import build_stream_extractors, extract_batch
from avel.pipeline.extract import ExtractConfig, run_extract
from avel.pipeline.tuning import choose_batch_sizes, choose_ray_pool, choose_runner


def test_runner_choice():
    kw = dict(address=None, videos=3, cpus=2, gpus=0, auto_ray_min_videos=16)
    assert choose_runner("auto", **kw)[0] == "local"
    assert choose_runner("auto", **{**kw, "videos": 100})[0] == "local"  # 2 CPUs: Ray does not pay
    assert choose_runner("auto", **{**kw, "videos": 100, "cpus": 16})[0] == "ray"
    assert choose_runner("auto", **{**kw, "cpus": 16})[0] == "local"  # a small job
    runner, why = choose_runner("auto", **{**kw, "address": "ray://head:10001"})
    assert runner == "ray" and "ray://head:10001" in why
    assert choose_runner("auto", **{**kw, "gpus": 4})[0] == "ray"
    assert choose_runner("ray", **kw) == ("ray", "given (--runner ray)")
    assert choose_runner("local", **{**kw, "address": "auto"})[0] == "local"


def test_batch_sizes_follow_the_extractor_and_device():
    exts = build_stream_extractors(["i3d_rgb", "i3d", "vggish"], random_weights=True, preset="tiny", spec_only=True)
    sizes, why = choose_batch_sizes(None, exts, "cpu")
    assert sizes == {"i3d_rgb": 1, "i3d": 8, "vggish": 4} and "cpu_batch_size" in why["i3d_rgb"]
    sizes, why = choose_batch_sizes(None, exts, "cuda")
    assert set(sizes.values()) == {32} and "gpu_batch_size" in why["vggish"]
    sizes, why = choose_batch_sizes(5, exts, "cpu")
    assert set(sizes.values()) == {5} and why["i3d"] == "given (--batch-size)"


def test_ray_pool_choice():
    cpu = choose_ray_pool(
        actors_per_extractor=None, threads_per_actor=0, gpus_per_actor=None, extractors=1, cpus=2, gpus=0
    )
    assert (cpu["actors_per_extractor"], cpu["threads_per_actor"], cpu["gpus_per_actor"]) == (2, 1, 0.0)
    two = choose_ray_pool(
        actors_per_extractor=None, threads_per_actor=0, gpus_per_actor=None, extractors=2, cpus=16, gpus=0
    )
    assert (two["actors_per_extractor"], two["threads_per_actor"]) == (8, 1)
    given = choose_ray_pool(
        actors_per_extractor=1, threads_per_actor=0, gpus_per_actor=None, extractors=1, cpus=2, gpus=0
    )
    assert (given["actors_per_extractor"], given["threads_per_actor"]) == (1, 2)
    assert given["why"]["actors_per_extractor"] == "given (--actors-per-extractor)"
    gpu = choose_ray_pool(
        actors_per_extractor=None, threads_per_actor=0, gpus_per_actor=None, extractors=2, cpus=16, gpus=8
    )
    assert (gpu["actors_per_extractor"], gpu["gpus_per_actor"], gpu["threads_per_actor"]) == (8, 0.5, 1)
    one = choose_ray_pool(
        actors_per_extractor=None, threads_per_actor=0, gpus_per_actor=None, extractors=3, cpus=16, gpus=1
    )
    assert one["actors_per_extractor"] == 1 and one["gpus_per_actor"] * 3 <= 1


def test_spec_only_extractors_build_no_model():
    (se,) = build_stream_extractors(["i3d_rgb"], random_weights=True, preset="tiny", spec_only=True)
    assert all(p.device.type == "meta" for p in se.extractor.parameters())
    assert se.spec().weights_sha256 == "random"
    with pytest.raises(ValueError, match="no weights"):
        build_stream_extractors(["i3d_rgb"], spec_only=True)


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    generate(
        SynthConfig(kind="unav100", videos=3, seed=5, size=64, min_duration_s=1.2, max_duration_s=2.6, num_classes=2),
        root,
    )
    return root / "videos"


def test_local_runner_pads_only_the_last_batch_and_reports_the_work(short_videos, tmp_path):
    """Windows of consecutive videos share batches: computed = written rounded up to one batch per
    stream; every row is the one a fixed batch of 4 gives that window alone (bitwise); the report
    says what was chosen and why."""
    options = {"vgg19": {"fps": 8.0, "window_frames": 8, "stride_frames": 4}, "vggish": {"hop_s": 0.32}}
    cfg = ExtractConfig(
        dataset="folder",
        videos=str(short_videos),
        out=str(tmp_path / "s"),
        extractors=["vgg19", "vggish"],
        random_weights=True,
        preset="tiny",
        extractor_options=options,
        batch_size=4,
        device="cpu",
    )
    report = run_extract(cfg)
    assert report["videos_ok"] == 3 and not report["failures"], report
    work = report["work"]
    for stream, w in work["per_stream"].items():
        assert w["computed"] == 4 * math.ceil(w["written"] / 4), (stream, w)
        assert w["written"] > 4  # several videos' windows, so batches did span videos
    assert work["windows_written"] == report["windows"]
    assert work["frames"]["8"]["decoded"] >= work["frames"]["8"]["unused"] >= 0
    settings = report["settings"]
    assert settings["runner"] == "local" and settings["batch_size"] == {"vgg19": 4, "vggish": 4}
    assert "auto_ray_min_videos" in settings["why"]["runner"]
    assert report["load_s"] > 0
    # rows: bitwise those of a fixed batch of 4 holding the window alone
    store = FeatureStore(tmp_path / "s")
    exts = build_stream_extractors(["vgg19", "vggish"], random_weights=True, preset="tiny", overrides=options)
    from avel.pipeline.decode import decode_video
    from avel.pipeline.engine import decode_request, frames_for

    request = decode_request(exts)
    vid = sorted(store.videos())[-1]
    path = next(p for p in short_videos.iterdir() if p.stem == vid)
    decoded = decode_video(path, **request)
    for se in exts:
        ext = se.extractor
        if ext.modality == "video":
            windows = ext.windows(frames_for(decoded, ext.decode_spec)).data
        else:
            windows = ext.windows(torch.from_numpy(decoded.audio)).data
        alone = np.concatenate(
            [
                extract_batch(ext, windows[i : i + 1], batch_size=4, device=torch.device("cpu"))
                for i in range(windows.shape[0])
            ]
        )
        np.testing.assert_array_equal(store[vid][se.stream], alone, err_msg=se.stream)


def test_spec_only_with_a_checkpoint_records_what_the_loaded_model_records(tmp_path):
    """The driver's meta-device spec reads the checkpoint (sha256, layout -> BatchNorm eps) and
    gives the store the same stream spec as the model the runner loads."""
    import avel.extractors as E

    ckpt = tmp_path / "rgb_imagenet.pt"
    torch.save(
        {k.removeprefix("rgb."): v for k, v in E.get("i3d_rgb").random_init(preset="tiny").state_dict().items()}, ckpt
    )
    (spec_se,) = build_stream_extractors(["i3d_rgb"], weights={"i3d_rgb": ckpt}, preset="tiny", spec_only=True)
    (real_se,) = build_stream_extractors(["i3d_rgb"], weights={"i3d_rgb": ckpt}, preset="tiny")
    assert spec_se.spec() == real_se.spec()
    assert len(spec_se.spec().weights_sha256) == 64
    with pytest.raises(ValueError):
        build_stream_extractors(["i3d_rgb"], weights={"i3d_rgb": ckpt}, preset="full", spec_only=True)


def test_precision_is_one_option_of_the_local_runner(short_videos, tmp_path):
    """``precision`` autocasts the models (bf16 on the CPU here: the code path a GPU takes):
    rows close to fp32 but not equal, recorded in the report's settings; fp32 stays the default."""
    assert ExtractConfig().precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'fp64'"):
        ExtractConfig(videos="v", out="o", extractors=["vggish"], precision="fp64").validate()
    stores = {}
    for precision in ("fp32", "bf16"):
        cfg = ExtractConfig(
            dataset="folder",
            videos=str(short_videos),
            out=str(tmp_path / precision),
            extractors=["i3d_rgb"],
            random_weights=True,
            preset="tiny",
            device="cpu",
            precision=precision,
        )
        report = run_extract(cfg)
        assert report["videos_ok"] == 3 and not report["failures"], report
        assert report["settings"]["precision"] == precision and precision in report["settings"]["why"]["precision"]
        stores[precision] = FeatureStore(tmp_path / precision)
    for vid in stores["fp32"].videos():
        a, b = stores["fp32"][vid]["i3d_rgb"], stores["bf16"][vid]["i3d_rgb"]
        assert a.dtype == b.dtype == np.float32
        assert not np.array_equal(a, b)  # bf16 did run
        np.testing.assert_allclose(b, a, atol=0.1 * float(np.abs(a).max()) + 1e-3)


def test_extract_batch_precision_choices():
    (se,) = build_stream_extractors(["vggish"], random_weights=True, preset="tiny")
    windows = se.extractor.windows(torch.randn(16000)).data[:2]
    cpu = torch.device("cpu")
    fp32 = extract_batch(se.extractor, windows, batch_size=2, device=cpu)
    np.testing.assert_array_equal(
        extract_batch(se.extractor, windows, batch_size=2, device=cpu, precision="fp32"), fp32
    )
    for precision in ("bf16", "fp16"):
        rows = extract_batch(se.extractor, windows, batch_size=2, device=cpu, precision=precision)
        assert rows.dtype == np.float32 and rows.shape == fp32.shape
    with pytest.raises(ValueError, match="precision must be one of"):
        extract_batch(se.extractor, windows, batch_size=2, device=cpu, precision="half")
