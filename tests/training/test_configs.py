"""Every shipped config parses, names a registered model, and builds with store-like dims."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from avel.models.registry import available_models, build_model
from avel.training.config import ConfigError, load_config

# training configs only: extraction job configs (avel extract --config) name their extractors,
# backbone files (configs/backbones) their family
CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml")
    if not {"extractors", "family"} & set(yaml.safe_load(p.read_text()) or {})
)
DIMS = {
    "dense": {"visual_dim": 1536, "audio_dim": 1536, "num_classes": 100, "max_seq_len": 256},
    "ave": {"visual_dim": 512, "num_regions": 49, "audio_dim": 128, "num_classes": 29, "background_id": 28},
}


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


# the paper settings' training hyperparameters: the configs' optim sections are their one home
# (the model config dataclasses have no lr / batch_size / epochs)
AVE_OPTIM = {  # file: (lr, batch_size, epochs)
    "agva_fully": (1e-3, 64, 300),
    "agva_weakly": (1e-3, 64, 250),
    "ccln_fully": (1e-3, 128, 200),
    "ccln_weakly": (1e-4, 128, 200),
    "ccln_cml": (1e-4, 128, 200),
    "avlc_fully": (1e-3, 128, 300),
    "avlc_weakly": (1e-3, 128, 300),
}


@pytest.mark.parametrize("name", sorted(AVE_OPTIM))
def test_ave_training_hyperparameters_live_in_the_configs(name):
    path = Path(__file__).resolve().parents[2] / "configs" / "ave" / f"{name}.yaml"
    o = load_config(path).optim
    assert (o.optimizer, o.lr, o.batch_size, o.epochs) == ("adam", *AVE_OPTIM[name])


@pytest.mark.parametrize("model, key", [("agva", "lr"), ("ccln", "batch_size"), ("avlc", "epochs"), ("loco", "epochs")])
def test_a_model_option_no_code_reads_is_an_error_naming_file_and_key(tmp_path, model, key):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"task": "ave", "model": {"name": model, "options": {key: 1}}}))
    with pytest.raises(ConfigError, match=rf"{path}: model\.options: unknown key\(s\) \['{key}'\]"):
        load_config(path)


def test_model_options_are_type_checked_and_the_model_must_exist(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "loco", "options": {"cdp": {"window_size": "8"}}}}))
    with pytest.raises(ConfigError, match=rf"{path}: model\.options\.cdp\.window_size: expected an integer"):
        load_config(path)
    path.write_text(yaml.safe_dump({"model": {"name": "nope"}}))
    with pytest.raises(ConfigError, match=rf"{path}: model\.name 'nope' is not a registered model"):
        load_config(path)
