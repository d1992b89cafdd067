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
    RUN/last.pt, RUN/best.pt   checkpoints (config, model, EMA, optimizer, schedule, RNG state),
                               read back by :func:`load_checkpoint` (weights-only: no pickled code runs)
    RUN/log.jsonl              one JSON object per logged step / evaluation
    RUN/tensorboard/           TensorBoard events (optional)
    RUN/predictions_<split>.json, RUN/metrics_<split>.json   written by evaluation

Determinism: shuffling uses a generator seeded with ``seed + epoch`` and datasets derive
their random crops from (seed, epoch, index), so a run resumed from ``last.pt`` continues
exactly as the uninterrupted run would on CPU.

Data parallelism: when ``torch.distributed`` is initialized with more than one process (as
``avel.training.distributed`` does), every process runs this same trainer on its rank:

- the global batch (``optim.batch_size``) of each step is the one single-process training
  draws (same sampler, same generator); rank r takes its contiguous share of it;
- the forward pass goes through :class:`~torch.nn.parallel.DistributedDataParallel`, which
  averages gradients over ranks. Rank r's loss is weighted by ``N * b_r / b`` (1 when the
  batch splits evenly), so for losses that are means over the local samples (the contract
  under data parallelism; the dense detectors' sum / #positives losses meet it through
  :class:`avel.models.losses.EmaNormalizer`) the averaged gradient is the single-process
  gradient of the global batch; logged losses are the same all-reduced global values;
- evaluation is distributed: each rank predicts a contiguous shard of the split, the raw
  predictions are gathered and scored (``Task.collect`` / ``Task.score``);
- rank 0 alone writes the run directory; checkpoints hold the unwrapped model, so they are
  interchangeable with single-process ones (resume 1 <-> N workers);
- per-rank randomness (dropout) is reseeded from (seed, epoch, rank) at every epoch.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sized
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

from avel.datasets.fileio import atomic_write
from avel.training.config import ConfigError, TrainConfig

DatasetT = TypeVar("DatasetT", bound=Dataset)


class Task(Protocol[DatasetT]):
    """What a training task provides to the trainer (generic over the task's dataset class)."""

    name: str

    def build_datasets(self, cfg: TrainConfig) -> dict[str, DatasetT]:
        """``{"train": ..., "validation": ..., "test": ...}`` (test may be absent)."""

    def model_options(self, cfg: TrainConfig, train_set: DatasetT) -> dict[str, Any]:
        """Options derived from the data (input dims, num_classes, max_seq_len)."""

    def collate(self, dataset: DatasetT) -> Callable:
        """Collate function for ``dataset``."""

    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, *, subset: str
    ) -> tuple[dict[str, Any], Any]:
        """Metrics (with a ``"score"`` key, higher is better) and the predictions."""

    def collect(self, model: nn.Module, loader: DataLoader, device: torch.device) -> Any:
        """Raw predictions (picklable, on CPU) for the samples of ``loader``, in order.
        Needed only for data-parallel training (distributed evaluation)."""

    def score(self, parts: list[Any], *, subset: str) -> tuple[dict[str, Any], Any]:
        """What :meth:`evaluate` returns, from the :meth:`collect` results of consecutive
        shards of the split (in dataset order). Needed only for data-parallel training."""

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


@runtime_checkable
class TrainableModel(Protocol):
    """The model protocol of :mod:`avel.models` the trainer and the tasks call besides ``forward``."""

    def losses(self, outputs: Any, batch: Any) -> dict[str, torch.Tensor]: ...

    def predict(self, outputs: Any, batch: Any) -> Any: ...


def trainable(model: nn.Module) -> TrainableModel:
    """``model`` as a :class:`TrainableModel`; a ``TypeError`` when it lacks ``losses`` / ``predict``."""
    if not isinstance(model, TrainableModel):
        raise TypeError(
            f"{type(model).__name__} lacks losses(outputs, batch) / predict(outputs, batch) (the avel.models protocol)"
        )
    return model


def num_samples(dataset: Dataset) -> int:
    """``len(dataset)``; training needs datasets that know their size."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"{type(dataset).__name__} has no __len__: the trainer needs sized datasets")
    return len(dataset)


class _Indices(Dataset[int]):
    """The indices ``0 .. n-1`` as a dataset (to replay a loader's sampler)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices / conv kernels only (not on biases, norms, scales)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialized torch.distributed group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, end)`` of ``rank``'s contiguous share of ``n`` items (sizes differ by at most 1)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


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


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: unreadable, not a torch file, missing keys, or holding
    pickled objects outside the weights-only allow-list (which is how a crafted file would run code)."""


# what a checkpoint holds besides tensors: plain containers, numbers and strings (torch's
# weights-only allow-list) plus numpy arrays, which checkpoints written before the numpy RNG
# state was stored as a tensor hold (uint32 array reconstruction runs no code).
CHECKPOINT_KEYS = (
    "model_spec",
    "model",
    "ema",
    "optimizer",
    "scaler",
    "step",
    "epoch",
    "best_score",
    "best_epoch",
    "history",
    "rng",
)


def _numpy_safe_globals() -> list:
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(
    path: str | Path, *, map_location: Any = "cpu", keys: tuple[str, ...] = CHECKPOINT_KEYS
) -> dict[str, Any]:
    """Load a training checkpoint (``last.pt`` / ``best.pt``) with ``torch.load(weights_only=True)``.

    Only tensors, plain containers, numbers, strings and numpy arrays are unpickled: a file
    whose pickle references anything else (a crafted ``__reduce__`` calling ``os.system``, a
    pickled class) is refused before any of it runs.

    Raises:
        CheckpointError: naming ``path``: unreadable or not a torch checkpoint, a refused
            object, or one of ``keys`` missing.
    """
    import pickle

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()
        detail = next(
            (ln.strip() for ln in reason if "GLOBAL" in ln or "Unsupported" in ln), reason[0] if reason else ""
        )
        raise CheckpointError(
            f"{path}: refused: the checkpoint holds objects outside the weights-only allow-list "
            f"(tensors, containers, numbers, strings): {detail[:300]}; avel checkpoints never do, "
            f"so this file was not written by avel training"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError) as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(e).__name__}: {first[0][:300] if first else ''})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not an avel training checkpoint: missing key(s) {missing}")
    return ckpt


def _numpy_rng_state() -> tuple:
    """``np.random.get_state()`` with the key array as an int64 tensor (weights-only loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # the MT19937 tuple
    if not isinstance(keys, np.ndarray):
        raise TypeError(f"np.random.get_state(): expected the MT19937 key array, got {type(keys).__name__}")
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _set_numpy_rng_state(state: Any) -> None:
    name, keys, pos, has_gauss, cached = state
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, cached))


class Trainer:
    """Fit a model on a task.

    Args:
        cfg: the resolved :class:`TrainConfig`.
        task: the task (datasets, evaluation).
        model: built model (its options are recorded via ``model_spec``).
        model_spec: ``{"name": ..., "options": {...}}`` saved in checkpoints to rebuild it.
        datasets: ``{"train", "validation", ("test")}`` datasets.
        out_dir: run directory.
        device: where to train; None: ``cfg.device`` (data-parallel workers pass their own).

    With torch.distributed initialized (world size > 1) the trainer runs data-parallel (see
    the module doc); ``optim.batch_size`` is then the global batch and must be divisible by
    the world size.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        task: Task[Any],
        model: nn.Module,
        model_spec: dict[str, Any],
        datasets: Mapping[str, Dataset],
        out_dir: str | Path,
        device: torch.device | None = None,
    ) -> None:
        self.cfg = cfg
        self.task = task
        self.device = device if device is not None else resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.model_spec = model_spec
        self.datasets = datasets
        for split in ("train", "validation"):
            if split in datasets and num_samples(datasets[split]) == 0:
                raise ValueError(
                    f"the {split} split is empty: training needs samples in it (the best checkpoint "
                    f"is chosen on validation)"
                )
        self.out_dir = Path(out_dir)
        self.rank, self.world_size = world()
        self.is_main = self.rank == 0
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        o = cfg.optim
        opt_cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
        beta1, beta2 = o.betas  # two entries (optim.betas)
        self.optimizer = opt_cls(param_groups(self.model, o.weight_decay), lr=o.lr, betas=(beta1, beta2))
        # the module the training forward goes through (DDP averages gradients over ranks)
        self.forward_model: nn.Module = self.model
        n_train = num_samples(datasets["train"])
        if self.world_size > 1:
            if o.batch_size % self.world_size:
                raise ConfigError(
                    f"optim.batch_size {o.batch_size} is the global batch and must be divisible by "
                    f"the {self.world_size} workers"
                )
            if n_train < self.world_size:
                raise ConfigError(f"{n_train} training samples cannot be shared by {self.world_size} workers")
            missing = [m for m in ("collect", "score") if not callable(getattr(task, m, None))]
            if missing:
                raise TypeError(f"task {task.name!r} lacks {missing}, needed for distributed evaluation")
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.distributed.find_unused_parameters,
            )
            # a last global batch smaller than the world size is skipped (see rank_batches)
            self.steps_per_epoch = max(1, n_train // o.batch_size + (n_train % o.batch_size >= self.world_size))
        else:
            self.steps_per_epoch = max(1, math.ceil(n_train / o.batch_size))
        self.total_steps = self.steps_per_epoch * o.epochs
        self.warmup_steps = self.steps_per_epoch * o.warmup_epochs
        self.ema = ModelEma(self.model, o.ema_decay) if o.ema_decay else None
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.step = 0
        self.epoch = 0
        self.best_score = -math.inf
        self.best_epoch = -1
        self.history: list[dict[str, Any]] = []
        self._tb: SummaryWriter | None = None
        self._on_step: Callable[[Trainer], None] | None = None

    # -- data ------------------------------------------------------------------------------
    def loader(self, split: str, *, shuffle: bool, epoch: int = 0) -> DataLoader:
        ds = self.datasets[split]
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        return DataLoader(
            ds,
            batch_size=self.cfg.optim.batch_size,
            shuffle=shuffle,
            drop_last=False,
            collate_fn=self.task.collate(ds),
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
            persistent_workers=False,
        )

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Training-set indices of every batch of ``epoch`` as the single-process training
        loader draws them: the same sampler and generator, run over the bare indices."""
        order = DataLoader(
            _Indices(num_samples(self.datasets["train"])),
            batch_size=self.cfg.optim.batch_size,
            shuffle=True,
            drop_last=False,
            generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch),
            collate_fn=list,
        )
        return [[int(i) for i in batch] for batch in order]

    def rank_batches(self, epoch: int) -> list[tuple[list[int], int]]:
        """This rank's contiguous share of every global batch of ``epoch`` and the global
        batch's size. A global batch smaller than the world size (possible only for the last
        one) is skipped: some rank would get no sample."""
        shares = []
        for batch in self.global_batches(epoch):
            if len(batch) >= self.world_size:
                start, end = shard_bounds(len(batch), self.rank, self.world_size)
                shares.append((batch[start:end], len(batch)))
        return shares

    def _rank_train_loader(self, shares: list[tuple[list[int], int]]) -> DataLoader:
        ds = self.datasets["train"]
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(self.epoch)
        return DataLoader(
            ds,
            batch_sampler=[indices for indices, _ in shares],
            collate_fn=self.task.collate(ds),
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + self.epoch),
            persistent_workers=False,
        )

    # -- logging -----------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
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
            "rng": {"python": random.getstate(), "numpy": _numpy_rng_state(), "torch": torch.get_rng_state()},
        }

    def save(self, name: str) -> Path:
        """Write a checkpoint (rank 0 only under data parallelism); returns its path."""
        path = self.out_dir / name
        if self.is_main:
            state = self.state()
            atomic_write(path, lambda tmp: torch.save(state, tmp))
        return path

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint (see :func:`load_checkpoint`)."""
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt["model_spec"] != self.model_spec:
            raise CheckpointError(f"{path}: checkpoint is for model {ckpt['model_spec']}, not {self.model_spec}")
        self.model.load_state_dict(ckpt["model"])
        if self.ema and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch = ckpt["step"], ckpt["epoch"]
        self.best_score, self.best_epoch = ckpt["best_score"], ckpt["best_epoch"]
        self.history = ckpt["history"]
        random.setstate(ckpt["rng"]["python"])
        _set_numpy_rng_state(ckpt["rng"]["numpy"])
        torch.set_rng_state(ckpt["rng"]["torch"])

    # -- training ---------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        o = self.cfg.optim
        if o.schedule == "step":
            mult = warmup_step(
                self.step, warmup_steps=self.warmup_steps, step_size=o.step_size_steps, gamma=o.step_gamma
            )
        else:
            mult = warmup_cosine(
                self.step, warmup_steps=self.warmup_steps, total_steps=self.total_steps, eta_min_ratio=o.eta_min_ratio
            )
        lr = self.cfg.optim.lr * mult
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _global_values(self, losses: dict[str, torch.Tensor], weight: float) -> dict[str, float]:
        """Loss values of the global batch: this rank's own, or the all-reduced mean over ranks
        of the weighted rank losses (what the averaged gradient is the gradient of)."""
        if self.world_size == 1:
            return {k: float(v.detach()) for k, v in losses.items()}
        values = torch.tensor(
            [float(v.detach()) * weight for v in losses.values()], dtype=torch.float64, device=self.device
        )
        dist.all_reduce(values)
        return dict(zip(losses, (values / self.world_size).tolist()))

    def train_epoch(self) -> dict[str, float]:
        self.forward_model.train()
        sums: dict[str, float] = {}
        n = 0
        if self.world_size > 1:
            shares = self.rank_batches(self.epoch)
            loader: Any = self._rank_train_loader(shares)
            # rank r's loss weight N * b_r / b: the DDP average then weighs every sample alike
            weights: Any = [self.world_size * len(indices) / size for indices, size in shares]
            state = np.random.SeedSequence([self.cfg.seed, self.epoch, self.rank]).generate_state(2)
            torch.manual_seed(int(state[0]) << 32 | int(state[1]))
        else:
            loader = self.loader("train", shuffle=True, epoch=self.epoch)
            weights = itertools.repeat(1.0)
        for batch, weight in zip(loader, weights):
            batch = move_to(batch, self.device)
            lr = self._set_lr()
            autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.use_amp else nullcontext()
            with autocast:
                outputs = self.forward_model(batch)
                losses = trainable(self.model).losses(outputs, batch)
            total = losses["total"] if weight == 1.0 else losses["total"] * weight
            values = self._global_values(losses, weight)
            if not math.isfinite(values["total"]):
                raise FloatingPointError(f"non-finite loss at epoch {self.epoch} step {self.step}: {values}")
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
            if self._on_step is not None:
                self._on_step(self)
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if self.step % self.cfg.log_every_steps == 0:
                self.log({"kind": "train", "lr": lr, **values})
        return {k: v / max(n, 1) for k, v in sums.items()}

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model

    def evaluate(self, split: str) -> dict[str, Any]:
        """Evaluate the EMA (else raw) model on ``split``; rank 0 writes predictions and metrics.
        Under data parallelism each rank predicts a contiguous shard and the shards are gathered."""
        model = self.eval_model()
        model.eval()
        if self.world_size == 1:
            loader = self.loader(split, shuffle=False)
            with torch.no_grad():
                metrics, predictions = self.task.evaluate(model, loader, self.device, subset=split)
        else:
            ds = self.datasets[split]
            start, end = shard_bounds(num_samples(ds), self.rank, self.world_size)
            loader = DataLoader(
                Subset(ds, range(start, end)),
                batch_size=self.cfg.optim.batch_size,
                shuffle=False,
                collate_fn=self.task.collate(ds),
                num_workers=self.cfg.data.num_workers,
                pin_memory=self.device.type == "cuda",
            )
            with torch.no_grad():
                part = self.task.collect(model, loader, self.device)
            parts: list[Any] = [None] * self.world_size
            dist.all_gather_object(parts, part)
            metrics, predictions = self.task.score(parts, subset=split)
        if not self.is_main:
            return metrics
        self.task.save_predictions(predictions, self.out_dir / f"predictions_{split}.json")
        (self.out_dir / f"metrics_{split}.json").write_text(
            json.dumps(metrics, indent=1, sort_keys=True, default=float)
        )
        return metrics

    def fit(
        self,
        *,
        progress: Callable[[dict[str, Any]], None] | None = None,
        on_step: Callable[[Trainer], None] | None = None,
    ) -> FitResult:
        """Train until ``optim.epochs``, validating every ``eval_every_epochs``.

        Args:
            progress: called with each epoch record (rank 0 only).
            on_step: called with the trainer after every optimizer step (on every rank).
        """
        self._on_step = on_step
        if self.is_main:
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        while self.epoch < self.cfg.optim.epochs:
            t0 = time.perf_counter()
            train_losses = self.train_epoch()
            self.epoch += 1  # epochs completed
            record: dict[str, Any] = {
                "kind": "epoch",
                **{f"train_{k}": v for k, v in train_losses.items()},
                "seconds": time.perf_counter() - t0,
            }
            if self.epoch % self.cfg.eval_every_epochs == 0 or self.epoch == self.cfg.optim.epochs:
                metrics = self.evaluate("validation")
                record.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
                if metrics["score"] > self.best_score:
                    self.best_score, self.best_epoch = float(metrics["score"]), self.epoch
                    record["best"] = True
                    self.save("best.pt")
            self.history.append({"epoch": self.epoch, **{k: v for k, v in record.items() if k != "kind"}})
            self.log(record)
            if progress and self.is_main:
                progress({"epoch": self.epoch, **record})
            self.save("last.pt")
        if self._tb is not None:
            self._tb.close()
        if self.world_size > 1:
            dist.barrier()  # rank 0's checkpoints are complete before any rank reads them
        return FitResult(self.best_epoch, self.best_score, self.epoch, self.history)
