"""One trainer for every task: AdamW, warmup + cosine, EMA, clipping, AMP, resume, logs.

Models follow one protocol (see ``avel.models``)::

    outputs = model(batch)                      # forward on a collated batch (on device)
    losses = model.losses(outputs, batch)       # {"total": scalar, ...named terms}
    preds = model.predict(outputs, batch)       # task-specific predictions (evaluation)

A :class:`Task` supplies what differs between dense localization and AVE: datasets, the
model's data-derived options (input dims, classes, sequence length), evaluation (a metrics
dict whose ``"score"`` selects the best checkpoint) and the prediction file format.

Run directory::

    RUN/config.yaml            the resolved config
    RUN/last.pt, RUN/best.pt   checkpoints (config, model, EMA, optimizer, schedule, RNG state)
    RUN/log.jsonl              one JSON object per logged step / evaluation
    RUN/tensorboard/           TensorBoard events (optional)
    RUN/predictions_<split>.json, RUN/metrics_<split>.json   written by evaluation

Determinism: shuffling uses a generator seeded with ``seed + epoch`` and datasets derive
their random crops from (seed, epoch, index), so a run resumed from ``last.pt`` continues
exactly as the uninterrupted run would on CPU.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset

from avel.training.config import TrainConfig


class Task(Protocol):
    """What a training task provides to the trainer."""

    name: str

    def build_datasets(self, cfg: TrainConfig) -> dict[str, Dataset]:
        """``{"train": ..., "validation": ..., "test": ...}`` (test may be absent)."""

    def model_options(self, cfg: TrainConfig, train_set: Dataset) -> dict[str, Any]:
        """Options derived from the data (input dims, num_classes, max_seq_len)."""

    def collate(self, dataset: Dataset) -> Callable:
        """Collate function for ``dataset``."""

    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device, *,
                 subset: str) -> tuple[dict[str, Any], Any]:
        """Metrics (with a ``"score"`` key, higher is better) and the predictions."""

    def save_predictions(self, predictions: Any, path: Path) -> None:
        """Write predictions in the task's file format."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def move_to(batch: Any, device: torch.device) -> Any:
    """Move tensors (nested in dicts / lists) to ``device``; pinned memory copies async."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [move_to(v, device) for v in batch]
    return batch


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, eta_min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warmup from 0 to 1, then cosine from 1 to ``eta_min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return eta_min_ratio + (1 - eta_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_step(step: int, *, warmup_steps: int, step_size: int, gamma: float) -> float:
    """LR multiplier: linear warmup, then ``gamma ** (steps after warmup // step_size)``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return gamma ** ((step - warmup_steps) // max(1, step_size))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices / conv kernels only (not on biases, norms, scales)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ModelEma:
    """Exponential moving average of parameters and buffers (evaluated instead of the raw model)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_state = self.module.state_dict()
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema_state[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                ema_state[k].copy_(v)


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    last_epoch: int
    history: list[dict[str, Any]]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Trainer:
    """Fit a model on a task.

    Args:
        cfg: the resolved :class:`TrainConfig`.
        task: the task (datasets, evaluation).
        model: built model (its options are recorded via ``model_spec``).
        model_spec: ``{"name": ..., "options": {...}}`` saved in checkpoints to rebuild it.
        datasets: ``{"train", "validation", ("test")}`` datasets.
        out_dir: run directory.
    """

    def __init__(self, cfg: TrainConfig, *, task: Task, model: nn.Module, model_spec: dict[str, Any],
                 datasets: dict[str, Dataset], out_dir: str | Path) -> None:
        self.cfg = cfg
        self.task = task
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.model_spec = model_spec
        self.datasets = datasets
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        o = cfg.optim
        opt_cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(param_groups(self.model, o.weight_decay), lr=o.lr, betas=tuple(o.betas))
        self.steps_per_epoch = max(1, math.ceil(len(datasets["train"]) / o.batch_size))
        self.total_steps = self.steps_per_epoch * o.epochs
        self.warmup_steps = self.steps_per_epoch * o.warmup_epochs
        self.ema = ModelEma(self.model, o.ema_decay) if o.ema_decay else None
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        self.amp_dtype = (torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.step = 0
        self.epoch = 0
        self.best_score = -math.inf
        self.best_epoch = -1
        self.history: list[dict[str, Any]] = []
        self._tb = None

    # -- data ------------------------------------------------------------------------------
    def loader(self, split: str, *, shuffle: bool, epoch: int = 0) -> DataLoader:
        ds = self.datasets[split]
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        return DataLoader(
            ds, batch_size=self.cfg.optim.batch_size, shuffle=shuffle, drop_last=False,
            collate_fn=self.task.collate(ds), num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda", generator=generator,
            persistent_workers=False)

    # -- logging -----------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        record = {"time": time.time(), "epoch": self.epoch, "step": self.step, **record}
        with open(self.out_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True, default=float) + "\n")
        if self.cfg.tensorboard:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("time", "epoch", "step"):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, self.step)

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "model_spec": self.model_spec,
            "task": self.task.name,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state()},
        }

    def save(self, name: str) -> Path:
        path = self.out_dir / name
        _atomic_torch_save(self.state(), path)
        return path

    def resume(self, path: str | Path) -> None:
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        if ckpt["model_spec"] != self.model_spec:
            raise ValueError(f"{path}: checkpoint is for model {ckpt['model_spec']}, not {self.model_spec}")
        self.model.load_state_dict(ckpt["model"])
        if self.ema and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch = ckpt["step"], ckpt["epoch"]
        self.best_score, self.best_epoch = ckpt["best_score"], ckpt["best_epoch"]
        self.history = ckpt["history"]
        random.setstate(ckpt["rng"]["python"])
        np.random.set_state(ckpt["rng"]["numpy"])
        torch.set_rng_state(ckpt["rng"]["torch"])

    # -- training ---------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        o = self.cfg.optim
        if o.schedule == "step":
            mult = warmup_step(self.step, warmup_steps=self.warmup_steps, step_size=o.step_size_steps,
                               gamma=o.step_gamma)
        else:
            mult = warmup_cosine(self.step, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                                 eta_min_ratio=o.eta_min_ratio)
        lr = self.cfg.optim.lr * mult
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        for batch in self.loader("train", shuffle=True, epoch=self.epoch):
            batch = move_to(batch, self.device)
            lr = self._set_lr()
            autocast = (torch.autocast("cuda", dtype=self.amp_dtype) if self.use_amp else nullcontext())
            with autocast:
                outputs = self.model(batch)
                losses = self.model.losses(outputs, batch)
            total = losses["total"]
            if not torch.isfinite(total):
                raise FloatingPointError(f"non-finite loss at epoch {self.epoch} step {self.step}: "
                                         f"{ {k: float(v) for k, v in losses.items()} }")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if self.cfg.optim.grad_clip_norm:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema:
                self.ema.update(self.model)
            self.step += 1
            n += 1
            values = {k: float(v.detach()) for k, v in losses.items()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if self.step % self.cfg.log_every_steps == 0:
                self.log({"kind": "train", "lr": lr, **values})
        return {k: v / max(n, 1) for k, v in sums.items()}

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model

    def evaluate(self, split: str) -> dict[str, Any]:
        loader = self.loader(split, shuffle=False)
        model = self.eval_model()
        model.eval()
        with torch.no_grad():
            metrics, predictions = self.task.evaluate(model, loader, self.device, subset=split)
        self.task.save_predictions(predictions, self.out_dir / f"predictions_{split}.json")
        (self.out_dir / f"metrics_{split}.json").write_text(json.dumps(metrics, indent=1, sort_keys=True,
                                                                       default=float))
        return metrics

    def fit(self, *, progress: Callable[[dict[str, Any]], None] | None = None) -> FitResult:
        (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        while self.epoch < self.cfg.optim.epochs:
            t0 = time.perf_counter()
            train_losses = self.train_epoch()
            self.epoch += 1  # epochs completed
            record: dict[str, Any] = {"kind": "epoch", **{f"train_{k}": v for k, v in train_losses.items()},
                                      "seconds": time.perf_counter() - t0}
            if self.epoch % self.cfg.eval_every_epochs == 0 or self.epoch == self.cfg.optim.epochs:
                metrics = self.evaluate("validation")
                record.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
                if metrics["score"] > self.best_score:
                    self.best_score, self.best_epoch = float(metrics["score"]), self.epoch
                    record["best"] = True
                    self.save("best.pt")
            self.history.append({"epoch": self.epoch, **{k: v for k, v in record.items() if k != "kind"}})
            self.log(record)
            if progress:
                progress({"epoch": self.epoch, **record})
            self.save("last.pt")
        if self._tb is not None:
            self._tb.close()
        return FitResult(self.best_epoch, self.best_score, self.epoch, self.history)

