"""Trainer mechanics with a tiny protocol-conforming model: schedule, EMA, best-on-validation, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from avel.training.config import ConfigError, TrainConfig, config_from_dict, load_config
from avel.training.trainer import Trainer, warmup_cosine


class _Points(Dataset):
    """y = sign(w . x) with fixed w: learnable, so validation accuracy improves."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x @ torch.tensor([1.0, -2.0, 0.5, 1.0]) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, batch):
        return self.fc(batch["x"])

    def losses(self, outputs, batch):
        return {"total": nn.functional.cross_entropy(outputs, batch["y"])}

    def predict(self, outputs, batch):
        return outputs.argmax(-1)


class _Task:
    name = "toy"

    def collate(self, ds):
        return lambda items: {"x": torch.stack([i["x"] for i in items]), "y": torch.stack([i["y"] for i in items])}

    def evaluate(self, model, loader, device, *, subset):
        correct = total = 0
        for batch in loader:
            pred = model.predict(model(batch), batch)
            correct += int((pred == batch["y"]).sum())
            total += len(pred)
        return {"score": correct / total, "accuracy": correct / total}, {"correct": correct}

    def save_predictions(self, predictions, path):
        path.write_text(json.dumps(predictions))


def _cfg(epochs=3):
    return config_from_dict(
        {
            "task": "dense",
            "seed": 1,
            "tensorboard": False,
            "log_every_steps": 1,
            "optim": {"epochs": epochs, "warmup_epochs": 1, "batch_size": 8, "lr": 0.05, "ema_decay": 0.5},
        }
    )


def _trainer(tmp_path, name, epochs=3):
    torch.manual_seed(0)
    data = {"train": _Points(64, 0), "validation": _Points(32, 1)}
    return Trainer(
        _cfg(epochs),
        task=_Task(),
        model=_Model(),
        model_spec={"name": "toy", "options": {}},
        datasets=data,
        out_dir=tmp_path / name,
    )


def test_warmup_cosine_shape():
    values = [warmup_cosine(s, warmup_steps=4, total_steps=12) for s in range(12)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == pytest.approx(1.0) and values[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(values[4:], values[5:]))


def test_fit_learns_logs_and_keeps_best_on_validation(tmp_path):
    tr = _trainer(tmp_path, "run")
    result = tr.fit()
    assert result.last_epoch == 3 and len(result.history) == 3
    assert result.best_score == max(h["val_score"] for h in result.history)
    assert result.best_score > 0.8
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert best["epoch"] == result.best_epoch and best["config"]["optim"]["lr"] == 0.05
    lines = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum(l["kind"] == "train" for l in lines) == 3 * 8 and sum(l["kind"] == "epoch" for l in lines) == 3
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "metrics_validation.json").exists()


def test_resume_continues_exactly(tmp_path):
    straight = _trainer(tmp_path, "a")
    straight.fit()
    first = _trainer(tmp_path, "b", epochs=3)
    first.cfg.optim.epochs = 1  # stop after one epoch, as if killed
    first.fit()
    resumed = _trainer(tmp_path, "b", epochs=3)
    resumed.resume(tmp_path / "b" / "last.pt")
    assert resumed.epoch == 1
    resumed.fit()
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    for a, b in zip(straight.ema.module.state_dict().values(), resumed.ema.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"optim: unknown key\(s\) \['epoch'\]"):
        config_from_dict({"optim": {"epoch": 3}})
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        config_from_dict({"optim": {"lr": "fast"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: dense\noptim:\n  lr: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml: line 4 column 1: invalid YAML"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("task: ave\nmodel:\n  name: agva\noptim:\n  epochs: 2\n")
    cfg = load_config(good, {"optim.lr": 0.001})
    assert isinstance(cfg, TrainConfig) and cfg.task == "ave" and cfg.optim.lr == 0.001 and cfg.optim.epochs == 2


def test_step_schedule_and_adam():
    from avel.training.trainer import warmup_step

    assert [warmup_step(s, warmup_steps=0, step_size=3, gamma=0.1) for s in range(7)] == pytest.approx(
        [1, 1, 1, 0.1, 0.1, 0.1, 0.01]
    )
    cfg = config_from_dict({"optim": {"optimizer": "adam", "schedule": "step", "step_size_steps": 10}})
    assert cfg.optim.optimizer == "adam"
    with pytest.raises(ConfigError, match=r"optim\.schedule: expected .cosine. or .step."):
        config_from_dict({"optim": {"schedule": "linear"}})
