"""`avel predict RUN VIDEO... --out DIR` end to end on synthetic videos (tiny random extractors),
refusal of mismatching extractors, and `avel report`."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.synth import SynthConfig, generate
from tests.training.cli_helpers import ave_config, run_train

GRID = {"vgg19": {"fps": 12.5, "window_frames": 12, "stride_frames": 4}, "vggish": {"hop_s": 0.32}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    generate(
        SynthConfig(kind="unav100", videos=8, seed=2, size=48, min_duration_s=3.0, max_duration_s=4.0, num_classes=3),
        root / "data",
    )
    from avel.pipeline.extract import ExtractConfig, run_extract

    rep = run_extract(
        ExtractConfig(
            dataset="unav100",
            videos=str(root / "data" / "videos"),
            annotations=str(root / "data" / "unav100_annotations.json"),
            extractors=list(GRID),
            random_weights=True,
            preset="tiny",
            extractor_options=GRID,
            out=str(root / "store"),
            batch_size=8,
            device="cpu",
        )
    )
    assert rep["videos_failed"] == 0
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
        "data": {"visual_streams": ["vgg19"], "audio_streams": ["vggish"], "max_seq_len": 32, "standardize": True},
        "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4},
    }
    res = run_train(
        cfg,
        root / "cfg.yaml",
        store=root / "store",
        annotations=root / "data" / "unav100_annotations.json",
        out=root / "run",
    )
    assert res.exit_code == 0, res.output
    return root


def test_predict_writes_unav_results_and_one_figure_per_video(trained, tmp_path):
    from avel.models.metrics.results_io import read_results

    videos = sorted((trained / "data" / "videos").glob("*.mp4"))
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(videos[0], new / "clip_a.mp4")
    args = ["predict", str(trained / "run"), str(new), str(videos[1]), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "--random-weights" in res.output  # random streams only when asked
    res = CliRunner().invoke(cli, args + ["--random-weights", "--min-score", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert out["predicted"] == 2 and out["failed"] == []
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    classes = json.loads((trained / "run" / "model_card.json").read_text())["classes"]
    parsed = read_results(tmp_path / "out" / "results.json", classes=classes)
    assert set(parsed.predictions) == {"clip_a", videos[1].stem}
    for dets in payload["results"].values():
        assert dets and all(d["label"] in classes and d["segment"][0] <= d["segment"][1] for d in dets)
        assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    assert payload["external_data"]["streams"][0]["stream"] == "vgg19"
    assert sorted(p.name for p in (tmp_path / "out" / "plots").iterdir()) == sorted(
        ["clip_a.png", f"{videos[1].stem}.png"]
    )
    # a rerun reuses the extracted features (no extractor is built) and gives the same results
    import avel.training.predict as P

    def no_build(*a, **k):
        raise AssertionError("extractors built although every video is extracted")

    orig = P.run_extractors
    P.run_extractors = no_build
    try:
        res = CliRunner().invoke(cli, args + ["--random-weights", "--min-score", "0"])
    finally:
        P.run_extractors = orig
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"] == payload["results"]
    # the same video's rows equal the training store's: the run's streams were reproduced exactly
    import numpy as np

    from avel.datasets.store import FeatureStore

    np.testing.assert_array_equal(
        FeatureStore(tmp_path / "out" / "features")[videos[1].stem]["vgg19"],
        FeatureStore(trained / "store")[videos[1].stem]["vgg19"],
    )


def test_predict_refuses_an_extractor_that_differs_from_the_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    card = json.loads((run / "model_card.json").read_text())
    card["streams"]["audio"][0]["config"]["hop_s"] = 0.5
    (run / "model_card.json").write_text(json.dumps(card))
    video = sorted((trained / "data" / "videos").glob("*.mp4"))[0]
    res = CliRunner().invoke(cli, ["predict", str(run), str(video), "--out", str(tmp_path / "o"), "--random-weights"])
    assert res.exit_code == 1
    # the extractor is built from the card's config, so the recorded plan (hop 0.32) disagrees with it
    assert "does not reproduce the run's features" in res.output and "'hop_s': 0.32}, here" in res.output
    card["streams"]["audio"][0]["config"]["hop_s"] = 0.32
    card["streams"]["audio"][0]["weights_sha256"] = "f" * 64
    (run / "model_card.json").write_text(json.dumps(card))
    res = CliRunner().invoke(cli, ["predict", str(run), str(video), "--out", str(tmp_path / "o"), "--random-weights"])
    assert res.exit_code == 1 and "--weights vggish=PATH" in res.output


def test_report_page_with_curves_and_per_class_bars(trained):
    res = CliRunner().invoke(cli, ["report", str(trained / "run")])
    assert res.exit_code == 0, res.output
    page = trained / "run" / "report" / "report.html"
    text = page.read_text()
    assert "vgg19" in text and "curves.png" in text
    assert (trained / "run" / "report" / "curves.png").stat().st_size > 1000
    assert ("per_class_ap.png" in text) == (trained / "run" / "report" / "per_class_ap.png").exists()


@pytest.mark.slow
def test_predict_ave_model_writes_per_second_labels(tmp_path):
    generate(SynthConfig(kind="ave", videos=8, seed=4, size=48, num_classes=2), tmp_path / "data")
    from avel.pipeline.extract import ExtractConfig, run_extract

    grid = {"vgg19": {"fps": 4.0, "window_frames": 4, "stride_frames": 4}, "vggish": {"hop_s": 1.0}}
    rep = run_extract(
        ExtractConfig(
            dataset="folder",
            videos=str(tmp_path / "data" / "videos"),
            extractors=list(grid),
            random_weights=True,
            preset="tiny",
            extractor_options=grid,
            out=str(tmp_path / "store"),
            batch_size=8,
            device="cpu",
        )
    )
    assert rep["videos_failed"] == 0
    cfg = ave_config("agva", {"setting": "fully"}, standardize=True)
    res = run_train(
        cfg,
        tmp_path / "cfg.yaml",
        store=tmp_path / "store",
        annotations=tmp_path / "data" / "Annotations.txt",
        out=tmp_path / "run",
    )
    assert res.exit_code == 0, res.output
    video = sorted((tmp_path / "data" / "videos").glob("*.mp4"))[0]
    res = CliRunner().invoke(
        cli, ["predict", str(tmp_path / "run"), str(video), "--out", str(tmp_path / "out"), "--random-weights"]
    )
    assert res.exit_code == 0, res.output
    labels = json.loads((tmp_path / "out" / "results.json").read_text())["labels"][video.stem]
    classes = json.loads((tmp_path / "run" / "model_card.json").read_text())["classes"]
    assert len(labels) == 10 and [e["start_s"] for e in labels] == [float(i) for i in range(10)]
    assert all(e["label"] in classes + ["background"] for e in labels)
    assert (tmp_path / "out" / "plots" / f"{video.stem}.png").is_file()
