import json

import pytest
import torch
from click.testing import CliRunner

from avel.cli.main import cli
from avel.models.dense.ccnet import CcnetConfig
from avel.models.info import model_info
from avel.models.registry import available_models, build_from_spec, config_from_dict, config_to_dict


def test_config_from_dict_nested_and_strict():
    data = {"visual_dim": 8, "audio_dim": 4, "num_classes": 7, "max_seq_len": 32}
    cfg = config_from_dict(
        CcnetConfig, {**data, "mtgc": {"c2f": False}, "assigner": {"regression_ranges": [[0, 2], [2, 1e4]]}}
    )
    assert cfg.num_classes == 7 and cfg.mtgc.c2f is False and cfg.mtgc.f2c is True
    assert cfg.pyramid.temporal_consistency_gate is True
    assert cfg.assigner.regression_ranges == [(0.0, 2.0), (2.0, 1e4)]
    with pytest.raises(ValueError, match=r"model\.options\.mtgc: unknown key\(s\) \['c2ff'\]"):
        config_from_dict(CcnetConfig, {**data, "mtgc": {"c2ff": True}})
    with pytest.raises(ValueError, match=r"model\.options\.num_classes: expected an integer"):
        config_from_dict(CcnetConfig, {**data, "num_classes": "100"})
    with pytest.raises(ValueError, match=r"encoder\.with_ln: expected true/false"):
        config_from_dict(CcnetConfig, {**data, "encoder": {"with_ln": 1}})
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['audio_dim', 'max_seq_len'\]"):
        config_from_dict(CcnetConfig, {"visual_dim": 8, "num_classes": 7})
    # round trip through plain dicts (what YAML / checkpoints hold)
    assert config_from_dict(CcnetConfig, config_to_dict(cfg)) == cfg


def test_build_from_spec(options_factory):
    assert {"unav", "ccnet"} <= set(available_models())
    model = build_from_spec({"name": "unav", "options": options_factory(T=32)})
    assert model.cfg.max_seq_len == 32
    with pytest.raises(KeyError, match="unknown model"):
        build_from_spec({"name": "nope"})


def test_model_info_counts(options_factory):
    opts = options_factory(T=32)
    dims = (opts.pop("visual_dim"), opts.pop("audio_dim"))
    for key in ("num_classes", "max_seq_len"):
        opts.pop(key)
    info = model_info("unav", input_dims=dims, seq_len=32, num_classes=4, options=opts)
    model = build_from_spec({"name": "unav", "options": options_factory(T=32)})
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["gflops"] == pytest.approx(2 * info["gmacs"])
    assert 0 < info["gmacs_layers"] < info["gmacs"]
    # the first embedding conv alone: T x out x in x k MACs
    first_conv = 32 * 16 * dims[0] * 3
    assert info["gmacs_layers"] * 1e9 > first_conv


def test_cli_models_info(options_factory):
    runner = CliRunner()
    args = [
        "models",
        "info",
        "ccnet",
        "--input-dims",
        "12,10",
        "--seq-len",
        "32",
        "--num-classes",
        "3",
        "--set",
        "encoder.embed_dim=16",
        "--set",
        "head.head_dim=16",
        "--set",
        "tdm.class_dim=8",
        "--json",
    ]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["model"] == "ccnet" and out["params"] > 0 and out["gmacs"] > 0
    res = runner.invoke(cli, args[:-1] + ["--set", "mtgc.c2f=false", "--no-flops"])
    assert res.exit_code == 0 and "GMACs" not in res.output
    assert out["params"] > int(res.output.split("parameters")[1].split()[0].replace(",", ""))
    assert runner.invoke(cli, ["models", "info", "nope"]).exit_code == 2
    assert runner.invoke(cli, ["models", "info", "unav", "--input-dims", "12"]).exit_code == 2
    bad = runner.invoke(cli, ["models", "info", "unav", "--seq-len", "100", "--no-flops"])
    assert bad.exit_code == 2 and "divisible" in bad.output
    listed = runner.invoke(cli, ["models", "list"])
    assert listed.exit_code == 0 and "ccnet" in listed.output


def test_full_size_parameter_counts_match_official_code():
    """Counts of the official models (instantiated from ttgeng233/UnAV and zzhhfut/CCNet-AAAI2025
    outside the repo): UnAV at ONE-PEACE dims 1536/1536, CCNet at I3D/VGGish dims 2048/128; 100 classes, T 256."""
    with torch.device("meta"):
        common = {"num_classes": 100, "max_seq_len": 256}
        unav = build_from_spec({"name": "unav", "options": {"visual_dim": 1536, "audio_dim": 1536, **common}})
        ccnet = build_from_spec({"name": "ccnet", "options": {"visual_dim": 2048, "audio_dim": 128, **common}})
    assert sum(p.numel() for p in unav.parameters()) == 140_920_370
    assert sum(p.numel() for p in ccnet.parameters()) == 237_685_678
