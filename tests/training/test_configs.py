"""Every shipped config parses, names a registered model, and builds with store-like dims."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from avel.models.registry import available_models, build_model
from avel.training.config import load_config

# training configs only: extraction job configs (avel extract --config) name their extractors,
# backbone files (configs/backbones) their family
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml")
                 if not {"extractors", "family"} & set(yaml.safe_load(p.read_text()) or {}))
DIMS = {"dense": {"visual_dim": 1536, "audio_dim": 1536, "num_classes": 100, "max_seq_len": 256},
        "ave": {"visual_dim": 512, "num_regions": 49, "audio_dim": 128, "num_classes": 29, "background_id": 28}}


def test_configs_exist():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_builds(path):
    cfg = load_config(path)
    assert cfg.model.name in available_models()
    options = {**cfg.model.options, **DIMS[cfg.task]}
    if cfg.task == "dense":
        options["max_seq_len"] = cfg.data.max_seq_len
    with torch.device("meta"):
        model = build_model(cfg.model.name, options=options)
    assert sum(p.numel() for p in model.parameters()) > 0
