"""`avel demo` end to end on a small synthetic set (tiny random-weight extractors and backbones):
published streams -> train -> new backbone -> retrain -> compare -> predict on a new video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from avel.cli.main import cli


@pytest.mark.slow
def test_demo_new_backbone_retrain_compare_predict(tmp_path):
    res = CliRunner().invoke(
        cli,
        ["demo", "--out", str(tmp_path), "--videos", "20", "--epochs", "1", "--max-duration-s", "4", "--model", "unav"],
    )
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "demo_result.json").read_text())
    new = result["new_backbone"]
    assert set(new["compare"]) == {"vgg19+vggish", "clip_vit_b16+wav2vec2_base_torchaudio"}
    for row in new["compare"].values():
        assert 0.0 <= row["test_average_mAP"] <= 1.0
        assert Path(row["report"]).is_file()
    card = json.loads((tmp_path / "run-unav-clip_vit_b16+wav2vec2_base_torchaudio" / "model_card.json").read_text())
    assert [e["stream"] for e in card["streams"]["visual"]] == ["clip_vit_b16"]
    assert card["streams"]["visual"][0]["config"]["fps"] == 12.5
    results = json.loads((tmp_path / "predict" / "results.json").read_text())
    [vid] = results["results"]
    assert results["results"][vid] and (tmp_path / "predict" / "plots" / f"{vid}.png").is_file()
    store = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert {"vgg19", "vggish", "clip_vit_b16", "wav2vec2_base_torchaudio"} <= set(store["streams"])
