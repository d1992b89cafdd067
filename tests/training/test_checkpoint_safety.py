"""Checkpoints load weights-only: a crafted pickle is refused before any of it runs (issue 14)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avel.cli.main import cli
from avel.training.trainer import CheckpointError, load_checkpoint
from tests.training.test_trainer import _trainer


class _Payload:
    """Unpickling this calls ``os.system`` to create a marker file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(tmp_path, name="evil.pt"):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    torch.save({"model_spec": {"name": "toy", "options": {}}, "model": {}, "exploit": _Payload(marker)}, path)
    return path, marker


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    path, marker = _crafted(tmp_path)
    with pytest.raises(CheckpointError, match="evil.pt: refused") as err:
        load_checkpoint(path)
    assert "system" in str(err.value)
    assert not marker.exists()


def test_resume_refuses_crafted_checkpoint(tmp_path):
    path, marker = _crafted(tmp_path)
    trainer = _trainer(tmp_path, "run")
    with pytest.raises(CheckpointError, match="refused"):
        trainer.resume(path)
    assert not marker.exists()


def test_plain_pickle_and_truncated_files_are_named_errors(tmp_path):
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError, match="plain.pt"):
        load_checkpoint(plain)
    trainer = _trainer(tmp_path, "run", epochs=1)
    trainer.fit()
    data = (tmp_path / "run" / "last.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable torch checkpoint"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match="missing key"):
        torch.save({"model": {}}, tmp_path / "partial.pt")
        load_checkpoint(tmp_path / "partial.pt")


def test_checkpoint_written_by_training_loads_weights_only(tmp_path):
    trainer = _trainer(tmp_path, "run", epochs=1)
    trainer.fit()
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # no allow-list needed
    assert isinstance(ckpt["rng"]["numpy"][1], torch.Tensor)


def test_older_checkpoint_with_numpy_rng_state_still_loads(tmp_path):
    trainer = _trainer(tmp_path, "run", epochs=1)
    state = trainer.state()
    state["rng"]["numpy"] = np.random.get_state()  # how checkpoints were written before
    torch.save(state, tmp_path / "old.pt")
    expected = np.random.get_state()[1].copy()
    np.random.seed(123)
    trainer.resume(tmp_path / "old.pt")
    np.testing.assert_array_equal(np.random.get_state()[1], expected)


def test_train_with_crafted_resume_is_an_input_error(tmp_path, tiny_dense):
    import torch
    import yaml

    data = tiny_dense(tmp_path / "d", seed=0, subsets=["train", "train", "validation", "test"])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
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
                "data": {"visual_streams": ["rgb"], "audio_streams": ["vggish"], "max_seq_len": 64},
                "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 2},
            }
        )
    )
    evil = tmp_path / "last.pt"
    torch.save({"model": {}, "x": _Payload(tmp_path / "pwned")}, evil)
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            str(cfg),
            "--store",
            str(data / "store"),
            "--annotations",
            str(data / "ann.json"),
            "--out",
            str(tmp_path / "run"),
            "--resume",
            str(evil),
        ],
    )
    assert res.exit_code == 3 and f"{evil}: refused" in res.output, res.output
    assert not (tmp_path / "pwned").exists()
