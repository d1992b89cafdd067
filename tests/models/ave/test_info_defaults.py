"""`avel models info` on the AVE models: AVE inputs by default, recurrent layers counted."""

import json

import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.models.info import model_info
from avel.models.registry import probe_inputs


@pytest.mark.parametrize("name", ["agva", "ccln", "avlc"])
def test_ave_models_default_to_ave_features(name):
    res = CliRunner().invoke(cli, ["models", "info", name, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    # VGG-19 pool5 7 x 7 x 512, VGGish 128, 10 one-second segments, 28 events + background
    assert out["input_dims"] == [512, 128] and out["visual_regions"] == 49
    assert out["seq_len"] == 10 and out["num_classes"] == 29
    text = CliRunner().invoke(cli, ["models", "info", name, "--no-flops"]).output
    assert "dims [512, 128] (visual 7 x 7 x 512), seq_len 10, classes 29" in text


def test_dense_defaults_unchanged():
    assert probe_inputs("loco") == {"input_dims": (1536, 1536), "seq_len": 256, "num_classes": 100}
    with pytest.raises(KeyError, match="unknown model"):
        probe_inputs("nope")


def test_lstm_macs_are_counted_and_seq_len_is_the_probe_length():
    info = model_info("agva")
    # AGVA's two bidirectional LSTMs (hidden 128): 2 directions x 4 gates x 128 x (in + 128) per step
    lstm = 10 * 2 * 4 * 128 * ((512 + 128) + (128 + 128))
    assert info["gmacs_by_module"]["lstm_video"]["gmacs"] * 1e9 == pytest.approx(10 * 2 * 4 * 128 * (512 + 128))
    assert info["gmacs_by_op"]["recurrent (LSTM/GRU gates)"] == pytest.approx(lstm / 1e9)  # GMACs
    longer = model_info("agva", seq_len=20)
    assert longer["seq_len"] == 20 and longer["gmacs"] == pytest.approx(2 * info["gmacs"], rel=1e-6)
    # AVLC is built for a fixed T: the probe length sets it
    assert model_info("avlc", seq_len=12, count_flops=False)["seq_len"] == 12
