"""Data-parallel training on Ray Train: ``avel train --workers N [--gpus-per-worker G]``.

The driver starts (or joins, per the ``cluster:`` config section) Ray, launches a
``TorchTrainer`` with N workers and waits. Every worker runs :func:`avel.training.fit.fit_and_test`
(the single-process trainer, DDP-aware when torch.distributed is initialized, which Ray Train
does: gloo on CPU, NCCL on GPU). Rank 0 writes the run directory exactly as single-process
training does (config.yaml, last.pt, best.pt, log.jsonl, summary.json, predictions, metrics),
so ``--resume`` works across 1 <-> N workers and ``avel eval --run`` reads it unchanged.

Paths: the store, the annotations, the run directory and a ``--resume`` checkpoint are opened
by every worker under the same (absolute) path, so on a multi-node cluster they must lie on
storage every node sees. Ray Train's own experiment directory is
``cluster.storage_path/RUN_NAME`` (default: the run directory itself); it holds only Ray's
bookkeeping, since checkpoints are written by rank 0 straight into the run directory.

Ray is imported here only, inside functions: the module loads without Ray.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avel.datasets.store import FeatureStore
from avel.pipeline.cluster import shutdown_ray
from avel.training.config import ConfigError, TrainConfig


class DistributedTrainingError(RuntimeError):
    """A Ray Train run failed (the message carries the workers' errors)."""


def scaling(cfg: TrainConfig) -> dict[str, Any]:
    """Ray Train settings derived from ``cfg.distributed``: ``num_workers``, ``use_gpu``,
    ``resources_per_worker`` and the torch.distributed ``backend``."""
    d = cfg.distributed
    cpus = d.cpus_per_worker if d.cpus_per_worker is not None else 1 + cfg.data.num_workers
    resources: dict[str, float] = {"CPU": float(cpus)}
    if d.gpus_per_worker > 0:
        resources["GPU"] = float(d.gpus_per_worker)
    backend = d.backend if d.backend != "auto" else ("nccl" if d.gpus_per_worker > 0 else "gloo")
    return {
        "num_workers": d.workers,
        "use_gpu": d.gpus_per_worker > 0,
        "resources_per_worker": resources,
        "backend": backend,
    }


def _check(cfg: TrainConfig) -> None:
    """Errors a worker would hit, raised on the driver before Ray starts."""
    d = cfg.distributed
    if cfg.optim.batch_size % d.workers:
        raise ConfigError(
            f"optim.batch_size {cfg.optim.batch_size} is the global batch and must be divisible "
            f"by distributed.workers {d.workers}"
        )
    if d.gpus_per_worker == 0 and cfg.device not in ("auto", "cpu"):
        raise ConfigError(
            f"device {cfg.device!r} needs GPUs: set distributed.gpus_per_worker "
            f"(--gpus-per-worker) > 0, or device: auto / cpu"
        )
    if d.gpus_per_worker > 0 and cfg.device == "cpu":
        raise ConfigError("device 'cpu' contradicts distributed.gpus_per_worker > 0")


def _check_local_resources(settings: dict[str, Any], available: dict[str, float]) -> None:
    """An embedded Ray instance cannot grow: a request beyond it would wait forever."""
    n = settings["num_workers"]
    for name, per_worker in settings["resources_per_worker"].items():
        if n * per_worker > available.get(name, 0.0):
            raise ConfigError(
                f"{n} workers x {per_worker:g} {name} exceed the {available.get(name, 0.0):g} {name} of "
                f"this machine's local Ray instance; use fewer workers, lower "
                f"distributed.cpus_per_worker / gpus_per_worker, or a cluster (--address)"
            )


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: pick the device Ray assigned and run the shared fit."""
    import torch
    from ray.train.torch import get_device

    from avel.training.fit import fit_and_test

    cfg: TrainConfig = config["cfg"]
    device = get_device() if cfg.distributed.gpus_per_worker > 0 else torch.device("cpu")
    fit_and_test(
        cfg,
        store=config["store"],
        annotations=config["annotations"],
        out=config["out"],
        resume=config["resume"],
        on_step=config["on_step"],
        device=device,
    )


class _LogFollower:
    """Calls ``progress`` with every epoch record rank 0 appends to ``RUN/log.jsonl``."""

    def __init__(self, path: Path, progress: Callable[[dict], None], *, poll_s: float = 1.0) -> None:
        self.path, self.progress, self.poll_s = path, progress, poll_s
        self.offset = path.stat().st_size if path.exists() else 0  # earlier runs' records are not news
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="avel-log-follower", daemon=True)

    def _read_new(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # complete lines only
        self.offset += end
        for line in data[:end].splitlines():
            record = json.loads(line)
            if record.get("kind") == "epoch":
                self.progress(record)

    def _run(self) -> None:
        while not self.stop_event.wait(self.poll_s):
            self._read_new()

    def __enter__(self) -> _LogFollower:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()
        self._read_new()


def train_distributed(
    cfg: TrainConfig,
    *,
    store: str | Path,
    annotations: str | Path,
    out: str | Path,
    resume: str | Path | None = None,
    progress: Callable[[dict], None] | None = None,
    on_step: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Train with ``cfg.distributed.workers`` Ray Train workers; returns rank 0's summary.

    Args:
        cfg: the resolved config (``distributed`` and ``cluster`` sections).
        store / annotations: feature store and annotation file (shared storage on a cluster).
        out: run directory (shared storage on a cluster).
        resume: checkpoint to continue from (a single-process or distributed ``last.pt``).
        progress: called on the driver with every epoch record (followed in ``RUN/log.jsonl``).
        on_step: called in every worker with its trainer after each optimizer step (pickled
            to the workers).

    Raises:
        ConfigError: inconsistent distributed settings (before Ray starts).
        DistributedTrainingError: a worker failed; the message holds its error.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    from avel.training.fit import random_weight_streams

    _check(cfg)
    store, annotations, out = Path(store).resolve(), Path(annotations).resolve(), Path(out).resolve()
    resume = Path(resume).resolve() if resume is not None else None
    if resume is not None and not resume.is_file():
        raise ConfigError(f"resume checkpoint {resume} does not exist")
    random_weight_streams(cfg, FeatureStore(store))  # the warning belongs on the driver's console
    out.mkdir(parents=True, exist_ok=True)
    settings = scaling(cfg)
    storage = cfg.cluster.storage_path or str(out.parent)
    summary_path = out / "summary.json"
    summary_before = _mtime_ns(summary_path)  # a resumed run's old summary is not this run's
    started = cfg.cluster.init_ray()
    try:
        if started and cfg.cluster.resolved_address() is None:
            _check_local_resources(settings, ray.cluster_resources())
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={
                "cfg": cfg,
                "store": str(store),
                "annotations": str(annotations),
                "out": str(out),
                "resume": None if resume is None else str(resume),
                "on_step": on_step,
            },
            torch_config=TorchConfig(backend=settings["backend"]),
            scaling_config=ScalingConfig(
                num_workers=settings["num_workers"],
                use_gpu=settings["use_gpu"],
                resources_per_worker=settings["resources_per_worker"],
            ),
            run_config=RunConfig(name=out.name, storage_path=storage),
        )
        try:
            with _LogFollower(out / "log.jsonl", progress) if progress else contextlib.nullcontext():
                trainer.fit()
        except TrainingFailedError as e:
            raise DistributedTrainingError(f"distributed training of {out} failed: {e}") from None
    finally:
        if started:
            shutdown_ray()
    if _mtime_ns(summary_path) in (None, summary_before):
        raise DistributedTrainingError(f"{summary_path} was not written: is {out} on storage the workers share?")
    return json.loads(summary_path.read_text())


def _mtime_ns(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None
