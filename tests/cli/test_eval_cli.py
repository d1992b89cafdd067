"""`avel eval` through the click entry point on a tiny UnAV-100 annotation file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from avel.cli.main import cli

CLASSES = ["dog barking", "man speaking"]


@pytest.fixture
def ann(tmp_path):
    def a(s, e, k):
        return {"segment": [s, e], "label": CLASSES[k], "label_id": k}

    db = {
        "-t1": {"duration": 20.0, "subset": "test", "annotations": [a(0, 10, 0), a(12, 18, 1)]},
        "t2": {"duration": 10.0, "subset": "test", "annotations": [a(2, 6, 1)]},
        "tr": {"duration": 10.0, "subset": "train", "annotations": [a(0, 5, 0)]},
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"version": "unav100", "database": db}))
    return path


def _preds(path, results):
    path.write_text(json.dumps({"version": "t", "results": results}))
    return path


def test_perfect_predictions_text_and_json(tmp_path, ann):
    p = _preds(
        tmp_path / "p.json",
        {
            "-t1": [
                {"segment": [0, 10], "label": "dog barking", "score": 0.9},
                {"segment": [12, 18], "label": 1, "score": 0.8},
            ],
            "t2": [{"segment": [2, 6], "label": "man speaking", "score": 0.7}],
        },
    )
    runner = CliRunner()
    res = runner.invoke(cli, ["eval", "--predictions", str(p), "--annotations", str(ann), "--per-class"])
    assert res.exit_code == 0, res.output
    assert "tIoU 0.50: mAP 100.00" in res.output and "man speaking" in res.output
    res = runner.invoke(
        cli, ["eval", "--predictions", str(p), "--annotations", str(ann), "--json", "--tiou", "0.5,0.7"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["average_mAP"] == 1.0 and out["tiou_thresholds"] == [0.5, 0.7]
    assert out["num_gt"] == 3 and out["num_videos"] == 2 and out["split"] == "test"


def test_run_dir_and_outside_split_warning(tmp_path, ann):
    run = tmp_path / "run"
    run.mkdir()
    # class 0: the train-video prediction outranks the test one -> AP 1/2; class 1: missed -> AP 0
    _preds(
        run / "predictions_test.json",
        {
            "-t1": [{"segment": [0, 10], "label": 0, "score": 0.5}],
            "tr": [{"segment": [0, 5], "label": 0, "score": 0.9}],
        },
    )
    res = CliRunner().invoke(cli, ["eval", "--run", str(run), "--annotations", str(ann), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["average_mAP"] == pytest.approx(0.25) and out["videos_outside_split"] == 1
    assert "1 predicted video(s) are not in split 'test'" in res.stderr


def test_usage_and_bad_input_exit_codes(tmp_path, ann):
    runner = CliRunner()
    res = runner.invoke(cli, ["eval", "--annotations", str(ann)])
    assert res.exit_code == 2 and "exactly one of --predictions" in res.output
    res = runner.invoke(cli, ["eval", "--predictions", "x.json", "--annotations", str(ann), "--tiou", "0.5,abc"])
    assert res.exit_code == 2
    bad = _preds(
        tmp_path / "bad.json",
        {"t2": [{"segment": [2, 6], "label": 1, "score": 0.7}, {"segment": [2, 6], "label": "cat", "score": 0.7}]},
    )
    res = runner.invoke(cli, ["eval", "--predictions", str(bad), "--annotations", str(ann)])
    assert res.exit_code == 3 and "results/t2[1]: label 'cat'" in res.stderr  # bad input (avel.cli.errors)
    res = runner.invoke(cli, ["eval", "--run", str(tmp_path), "--annotations", str(ann)])
    assert res.exit_code == 3 and "predictions_test.json: no such file" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_plot_timelines_and_similarity(tmp_path, ann):
    import numpy as np

    from avel.datasets.sampling import UNAV100_I3D
    from avel.datasets.store import StoreWriter, StreamSpec

    specs = {s: StreamSpec("x", UNAV100_I3D, (4,), config={}, weights_sha256="random") for s in ("vis", "aud")}
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "store", dataset="unav100", streams=specs) as w:
        w.add("-t1", {"vis": rng.normal(size=(5, 4)), "aud": rng.normal(size=(5, 4))})
    p = _preds(tmp_path / "p.json", {"-t1": [{"segment": [0, 9], "label": 0, "score": 0.9}]})
    out = tmp_path / "figs"
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "plot",
            "--predictions",
            str(p),
            "--annotations",
            str(ann),
            "--out",
            str(out),
            "--videos",
            "-t1",
            "--videos",
            "t2",
            "--store",
            str(tmp_path / "store"),
            "--visual-stream",
            "vis",
            "--audio-stream",
            "aud",
        ],
    )
    # t2 is not in the store: its timeline is drawn, its similarity figure reported as a problem
    assert res.exit_code == 1 and "t2: similarity figure" in res.stderr
    assert sorted(f.name for f in out.iterdir()) == [
        "-t1.similarity.png",
        "-t1.timeline.png",
        "-t1.video.png",
        "t2.timeline.png",
        "t2.video.png",
    ]
    res = runner.invoke(
        cli, ["plot", "--predictions", str(p), "--annotations", str(ann), "--out", str(out), "--split", "train"]
    )
    assert res.exit_code == 0 and (out / "tr.timeline.png").exists()
    res = runner.invoke(
        cli,
        [
            "plot",
            "--predictions",
            str(p),
            "--annotations",
            str(ann),
            "--out",
            str(out),
            "--store",
            str(tmp_path / "store"),
        ],
    )
    assert res.exit_code == 2 and "--visual-stream" in res.output


def test_eval_command_imports_neither_torch_nor_ray(tmp_path, ann):
    # the whole command in a fresh interpreter, as a user runs it; the modules it loaded are listed
    import subprocess
    import sys

    p = _preds(tmp_path / "p.json", {"t2": [{"segment": [2, 6], "label": 1, "score": 0.7}]})
    code = (  # the entry point ends the process itself, after the atexit handlers
        "import atexit, sys, runpy\n"
        "atexit.register(lambda: print('LOADED', sorted({m.split('.')[0] for m in sys.modules})))\n"
        f"sys.argv = ['avel', 'eval', '--predictions', {str(p)!r}, '--annotations', {str(ann)!r}]\n"
        "runpy.run_module('avel.cli.main', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = out.split("LOADED", 1)[1]
    assert "tIoU 0.50" in out and "'numpy'" in loaded
    assert "'torch'" not in loaded and "'ray'" not in loaded, loaded
