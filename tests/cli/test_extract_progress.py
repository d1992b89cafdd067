"""`avel extract` progress: the live bar's numbers (videos done / failed, wall-clock windows/s,
ETA) and the final report's per-stage busy time and throughput."""

from __future__ import annotations

import json
import shutil

import pytest

from avel.cli.extract import progress_fields
from avel.datasets.synth import SynthConfig, generate
from avel.pipeline.engine import RunReport
from avel.pipeline.extract import ExtractConfig, run_extract


def test_progress_fields_from_counts_and_elapsed_time():
    r = RunReport(videos_ok=2, videos_failed=1, windows=30)
    f = progress_fields(r, total=5, elapsed_s=10.0)
    assert f == {"done": 3, "total": 5, "ok": 2, "failed": 1, "windows_per_s": 3.0, "eta_s": pytest.approx(2 * 10 / 3)}
    assert progress_fields(RunReport(), total=5, elapsed_s=2.0)["eta_s"] is None  # no video done yet
    assert progress_fields(RunReport(videos_ok=5, windows=7), total=5, elapsed_s=2.0)["eta_s"] == 0.0
    assert progress_fields(RunReport(), total=0, elapsed_s=0.0) == {
        "done": 0,
        "total": 0,
        "ok": 0,
        "failed": 0,
        "windows_per_s": 0.0,
        "eta_s": 0.0,
    }


def test_progress_callback_values_during_a_run(tmp_path):
    generate(
        SynthConfig(kind="unav100", videos=3, seed=3, size=64, min_duration_s=2.0, max_duration_s=3.0, num_classes=2),
        tmp_path / "synth",
    )
    vdir = tmp_path / "videos"
    shutil.copytree(tmp_path / "synth" / "videos", vdir)
    (vdir / "broken.mp4").write_text("not a video\n")
    cfg = ExtractConfig(
        dataset="folder",
        videos=str(vdir),
        extractors=["vgg19", "vggish"],
        preset="tiny",
        random_weights=True,
        out=str(tmp_path / "s"),
        batch_size=8,
        device="cpu",
    )
    seen = []

    def progress(report, total):
        elapsed = report.elapsed_s()
        seen.append({**progress_fields(report, total, elapsed), "windows": report.windows, "elapsed": elapsed})

    result = run_extract(cfg, progress=progress)
    assert [s["done"] for s in seen] == [1, 2, 3, 4]  # one call per video, in order
    assert all(s["total"] == 4 for s in seen)
    last = seen[-1]
    assert (last["ok"], last["failed"]) == (3, 1) and last["eta_s"] == 0.0
    assert last["windows"] == result["windows"] > 0
    for prev, cur in zip(seen, seen[1:]):
        assert cur["elapsed"] > prev["elapsed"] and cur["windows"] >= prev["windows"]
    for s in seen:  # wall-clock windows/s since the run began; ETA from the videos left
        assert s["windows_per_s"] == pytest.approx(s["windows"] / s["elapsed"])
        if s["done"] < 4:
            assert s["eta_s"] == pytest.approx((4 - s["done"]) * s["elapsed"] / s["done"])
    assert last["elapsed"] <= result["wall_s"] + 0.5

    # final report: per-stage busy time and throughput, ok / failed, bytes written
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert (report["videos_ok"], report["videos_failed"]) == (3, 1)
    busy = report["busy_s"]
    assert set(busy) == {"decode", "extract", "write"} and all(v > 0 for v in busy.values())
    # the stages run one after another inside the wall time; each of the four figures is rounded to 1 ms
    assert busy["decode"] + busy["extract"] + busy["write"] <= report["wall_s"] + 4 * 5e-4 + 1e-9
    for stage, rate in report["windows_per_busy_s"].items():  # busy_s is rounded to 1 ms
        assert rate == pytest.approx(report["windows"] / busy[stage], rel=1e-3 + 6e-4 / busy[stage])
    shards = list((tmp_path / "s" / "shards").glob("shard-*.h5"))
    assert report["bytes_written"] == sum(p.stat().st_size for p in shards) > 0


def test_json_stdout_is_the_report_alone_whatever_the_run_prints(tmp_path, monkeypatch):
    """What is printed during a run (Ray's notes on a restarted actor's retried calls, a
    library's print) goes to stderr: ``avel extract --json | jq`` gets the report alone."""
    from click.testing import CliRunner

    import avel.pipeline.extract as extract_module
    from avel.cli.main import cli

    def noisy_run(cfg, progress=None):
        print("(raylet) Task _ExtractorActor.extract failed. There are 2 retries remaining")
        return {"videos_ok": 1, "videos_failed": 0, "out": cfg.out}

    monkeypatch.setattr(extract_module, "run_extract", noisy_run)
    args = ["extract", "--dataset", "folder", "--videos", str(tmp_path), "--extractors", "vgg19", "--random-weights"]
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "s"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"videos_ok": 1, "videos_failed": 0, "out": str(tmp_path / "s")}
    assert "retries remaining" in res.stderr
