"""One-epoch `avel train` smoke tests for every registered model, through the CLI."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from avel.cli.main import cli
from tests.training.cli_helpers import ave_config, run_train

DENSE_SMALL = {
    "unav": {"encoder": {"embed_dim": 16, "num_heads": 2}, "tdm": {"class_dim": 4}, "head": {"head_dim": 16}},
    "ccnet": {"encoder": {"embed_dim": 16, "num_heads": 2}, "tdm": {"class_dim": 4}, "head": {"head_dim": 16}},
    "loco": {
        "encoder": {"embed_dim": 16, "num_heads": 2},
        "decoder": {"num_blocks": 1, "num_heads": 2},
        "cdp": {"num_heads": 2},
        "head": {"head_dim": 16},
    },
}


@pytest.fixture(scope="module")
def dense_data(tmp_path_factory, tiny_dense):
    return tiny_dense(
        tmp_path_factory.mktemp("dense"),
        seed=0,
        subsets=[["train", "train", "validation", "test"][i % 4] for i in range(12)],
    )


@pytest.mark.parametrize("model", ["unav", "ccnet", "loco"])
def test_dense_models_train_one_epoch(dense_data, tmp_path, model):
    cfg = {
        "task": "dense",
        "tensorboard": True,
        "model": {"name": model, "options": DENSE_SMALL[model]},
        "data": {"visual_streams": ["rgb"], "audio_streams": ["vggish"], "max_seq_len": 64},
        "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4},
    }
    res = run_train(
        cfg,
        tmp_path / "cfg.yaml",
        store=dense_data / "store",
        annotations=dense_data / "ann.json",
        out=tmp_path / "run",
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["model"] == model and summary["best_epoch"] == 1
    assert 0.0 <= summary["test"]["average_mAP"] <= 1.0
    preds = json.loads((tmp_path / "run" / "predictions_test.json").read_text())
    assert set(preds["results"]) <= {f"-v{i}" for i in range(3, 12, 4)}
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    res = CliRunner().invoke(
        cli,
        [
            "eval",
            "--run",
            str(tmp_path / "run"),
            "--annotations",
            str(dense_data / "ann.json"),
            "--split",
            "test",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("{") :])["average_mAP"] == pytest.approx(
        summary["test"]["average_mAP"], abs=1e-9
    )


def test_train_refuses_to_overwrite_and_resumes(dense_data, tmp_path):
    cfg = {
        "task": "dense",
        "tensorboard": False,
        "model": {"name": "unav", "options": DENSE_SMALL["unav"]},
        "data": {"visual_streams": ["rgb"], "audio_streams": ["vggish"], "max_seq_len": 64},
        "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    args = [
        "train",
        "--config",
        str(tmp_path / "cfg.yaml"),
        "--store",
        str(dense_data / "store"),
        "--annotations",
        str(dense_data / "ann.json"),
        "--out",
        str(tmp_path / "run"),
    ]
    assert CliRunner().invoke(cli, args).exit_code == 0
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "--resume" in again.output
    more = CliRunner().invoke(cli, args + ["--resume", str(tmp_path / "run" / "last.pt"), "--set", "optim.epochs=2"])
    assert more.exit_code == 0, more.output
    assert json.loads(more.stdout[more.stdout.index("{") :])["best_epoch"] in (1, 2)
    bad = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--store",
            str(dense_data / "store"),
            "--annotations",
            str(dense_data / "ann.json"),
            "--out",
            str(tmp_path / "r2"),
            "--set",
            "optim.epoch=2",
        ],
    )
    assert bad.exit_code == 2 and "optim: unknown key(s) ['epoch']" in bad.output
    assert "Error: --set optim.epoch=2 (over " in bad.output  # the option that set the key, then the file


@pytest.fixture(scope="module")
def ave_data(tmp_path_factory, tiny_ave):
    return tiny_ave(
        tmp_path_factory.mktemp("ave"),
        seed=1,
        subsets=[["train", "train", "validation", "test"][i % 4] for i in range(10)],
    )


@pytest.mark.parametrize("model", ["agva", "ccln", "avlc"])
def test_ave_models_train_one_epoch(ave_data, tmp_path, model):
    cfg = ave_config(model)
    res = run_train(
        cfg,
        tmp_path / "cfg.yaml",
        store=ave_data / "store",
        annotations=ave_data / "Annotations.txt",
        out=tmp_path / "run",
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["test"]["segments"] == 20  # 2 test rows x 10 segments
    assert 0.0 <= summary["test"]["segment_accuracy"] <= 1.0


def test_ccln_cml_setting_evaluates_exact_windows(ave_data, tmp_path):
    cfg = ave_config("ccln", {"setting": "cml"}, ave_split="match")
    res = run_train(
        cfg,
        tmp_path / "cfg.yaml",
        store=ave_data / "store",
        annotations=ave_data / "Annotations.txt",
        out=tmp_path / "run",
    )
    assert res.exit_code == 0, res.output
    test = json.loads(res.stdout[res.stdout.index("{") :])["test"]
    assert test["cml_videos"] + test["cml_excluded"] == 2
    assert 0.0 <= test["a2v_accuracy"] <= 1.0 and test["score"] == pytest.approx(
        (test["a2v_accuracy"] + test["v2a_accuracy"]) / 2
    )
