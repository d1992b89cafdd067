"""`avel train --streams`: any store stream as model input (dims from the store), and the model
card that records which streams trained a run."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.sampling import UNAV100_I3D
from avel.datasets.store import FeatureStore, StoreWriter, StreamSpec
from avel.training.model_card import read_model_card, read_stream_stats
from tests.training.cli_helpers import ave_config, run_train

UNAV_SMALL = {"encoder": {"embed_dim": 16, "num_heads": 2}, "tdm": {"class_dim": 4}, "head": {"head_dim": 16}}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dense):
    root = tiny_dense(
        tmp_path_factory.mktemp("card"),
        seed=1,
        subsets=[["train", "train", "validation", "test"][i % 4] for i in range(8)],
    )
    store = FeatureStore(root / "store")
    spec = StreamSpec(
        "clip_vit_b16", UNAV100_I3D, (20,), config={"model": "ViT-B-16", "fps": 25.0}, weights_sha256="ab" * 32
    )
    rng = np.random.default_rng(0)
    with StoreWriter(root / "store", dataset="unav100", streams={"clip_vit_b16": spec}) as w:
        for vid in store.videos():
            w.add(vid, {"clip_vit_b16": rng.standard_normal((store.num_rows(vid, "rgb"), 20))})
    return root


def _train(data, tmp_path, *extra):
    cfg = {
        "task": "dense",
        "tensorboard": False,
        "model": {"name": "unav", "options": UNAV_SMALL},
        "data": {"visual_streams": ["rgb"], "audio_streams": ["vggish"], "max_seq_len": 64},
        "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4},
    }
    return run_train(
        cfg,
        tmp_path / "cfg.yaml",
        store=data / "store",
        annotations=data / "ann.json",
        out=tmp_path / "run",
        extra=extra,
    )


def test_streams_flag_sets_inputs_and_the_card_records_them(data, tmp_path):
    res = _train(data, tmp_path, "--streams", "visual=rgb+clip_vit_b16,audio=vggish", "--set", "data.standardize=true")
    assert res.exit_code == 0, res.output
    card = read_model_card(tmp_path / "run")
    assert card["task"] == "dense" and card["model"]["name"] == "unav"
    assert card["model"]["options"]["visual_dim"] == 12 + 20 and card["model"]["options"]["audio_dim"] == 8
    visual = card["streams"]["visual"]
    assert [v["stream"] for v in visual] == ["rgb", "clip_vit_b16"]
    assert visual[1]["extractor"] == "clip_vit_b16" and visual[1]["weights_sha256"] == "ab" * 32
    assert visual[1]["config"]["model"] == "ViT-B-16" and visual[1]["plan"]["window_frames"] == 24
    assert visual[1]["feature_shape"] == [20]
    assert card["streams"]["audio"][0]["extractor"] == "vggish" and card["classes"] == ["b", "a", "c"]
    stats = read_stream_stats(tmp_path / "run")
    assert set(stats) == {"rgb", "clip_vit_b16", "vggish"} and stats["clip_vit_b16"][0].shape == (20,)


def test_streams_flag_errors(data, tmp_path):
    res = _train(data, tmp_path, "--streams", "visaul=rgb")
    assert res.exit_code == 2 and "ROLE=STREAM" in res.output
    res = _train(data, tmp_path, "--streams", "visual=nope,audio=vggish")
    assert res.exit_code == 3 and "nope" in res.output  # unusable input (avel.cli.errors)


def test_ave_model_trains_on_a_pooled_backbone_stream(tmp_path, tiny_ave):
    root = tiny_ave(
        tmp_path / "ave", seed=2, subsets=[["train", "train", "validation", "test"][i % 4] for i in range(8)]
    )
    from avel.datasets.sampling import AVE_VGG19

    store = FeatureStore(root / "store")
    spec = StreamSpec("timm_vit_b16", AVE_VGG19, (24,), weights_sha256="cd" * 32)
    rng = np.random.default_rng(0)
    with StoreWriter(root / "store", dataset="ave", streams={"timm_vit_b16": spec}) as w:
        for vid in store.videos():
            w.add(vid, {"timm_vit_b16": rng.standard_normal((10, 24))})
    cfg = ave_config("agva")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--store",
            str(root / "store"),
            "--annotations",
            str(root / "Annotations.txt"),
            "--out",
            str(tmp_path / "run"),
            "--streams",
            "visual=timm_vit_b16,audio=vggish",
        ],
    )
    assert res.exit_code == 0, res.output
    card = read_model_card(tmp_path / "run")
    assert card["model"]["options"]["visual_dim"] == 24 and card["model"]["options"]["num_regions"] == 1
    assert card["streams"]["visual"][0]["weights_sha256"] == "cd" * 32 and card["background_id"] == 2
