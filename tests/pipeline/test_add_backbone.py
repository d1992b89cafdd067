"""`avel extract --store S --extractors NEW`: new backbone streams over the videos of an existing
store, one decode per video for all new streams, existing streams untouched, reruns skip."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

import avel.pipeline.engine as engine
from avel.cli.main import cli
from avel.datasets.store import FeatureStore
from avel.datasets.synth import SynthConfig, generate

NEW = "timm_vit_b16,wav2vec2_base_hf"  # backbone files of two families (tiny random models)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("add_backbone")
    generate(
        SynthConfig(kind="unav100", videos=2, seed=3, size=48, min_duration_s=2.0, max_duration_s=2.5, num_classes=2),
        root,
    )
    return root / "videos"


def _extract(*args):
    return CliRunner().invoke(
        cli, ["extract", "--preset", "tiny", "--random-weights", "--batch-size", "4", "--json", *args]
    )


@pytest.fixture
def decodes(monkeypatch):
    calls: Counter = Counter()
    real = engine.start_decode  # every decode of the local runner (one per chunk)

    def counting(path, **kw):
        calls[str(path)] += 1
        return real(path, **kw)

    monkeypatch.setattr(engine, "start_decode", counting)
    return calls


def test_store_gains_backbone_streams_with_one_decode_per_video(videos, tmp_path, decodes):
    store = tmp_path / "store"
    res = _extract("--dataset", "folder", "--videos", str(videos), "--out", str(store), "--extractors", "vggish")
    assert res.exit_code == 0, res.output
    decodes.clear()
    res = _extract(
        "--dataset", "folder", "--videos", str(videos), "--out", str(tmp_path / "one"), "--extractors", "timm_vit_b16"
    )
    assert res.exit_code == 0, res.output
    one_stream = Counter(decodes)  # probe (audio, frame counts) + one frame decode per video
    vggish_before = {v: FeatureStore(store)[v]["vggish"].copy() for v in FeatureStore(store).videos()}
    decodes.clear()
    res = _extract("--store", str(store), "--extractors", f"vggish,{NEW}")  # vggish is there: not recomputed
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.splitlines()[0])
    assert report["videos_ok"] == 2
    assert decodes == one_stream  # two new streams (video + audio): the decode calls of one visual stream
    st = FeatureStore(store)
    assert set(st.streams) == {"vggish", "timm_vit_b16", "wav2vec2_base_hf"}
    assert st.streams["timm_vit_b16"].extractor == "timm_vit_b16"
    assert st.streams["timm_vit_b16"].config["model"] == "test_vit"
    assert st.streams["wav2vec2_base_hf"].weights_sha256 == "random"
    for vid, rows in vggish_before.items():
        np.testing.assert_array_equal(st[vid]["vggish"], rows)
    # the new streams equal a fresh extraction of the same backbones
    fresh = tmp_path / "fresh"
    res = _extract("--dataset", "folder", "--videos", str(videos), "--out", str(fresh), "--extractors", NEW)
    assert res.exit_code == 0, res.output
    for vid in st.videos():
        for stream in NEW.split(","):
            np.testing.assert_array_equal(st[vid][stream], FeatureStore(fresh)[vid][stream])
    # a rerun skips every video without decoding
    decodes.clear()
    res = _extract("--store", str(store), "--extractors", NEW)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[0])["videos_skipped"] == 2 and not decodes


def test_store_flag_errors(tmp_path, videos):
    res = _extract("--store", str(tmp_path / "none"), "--extractors", "vggish")
    assert res.exit_code == 2 and "no manifest.json" in res.output
    res = _extract("--store", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--extractors", "vggish")
    assert res.exit_code == 2 and "different stores" in res.output
