"""Typed training configuration: dataclasses loaded from YAML with strict keys.

A config file mirrors :class:`TrainConfig`::

    task: dense                 # dense (UnAV-100-like) | ave
    seed: 0
    model:
      name: loco                # a name in avel.models.registry
      options: {}               # the model's own config fields (dims come from the store)
    data:
      visual_streams: [onepeace_video]
      audio_streams: [onepeace_audio]
      max_seq_len: 256
    optim:
      epochs: 45
      warmup_epochs: 5
      lr: 1.0e-4
      batch_size: 16            # the GLOBAL batch, split evenly over distributed workers
    distributed:                # data-parallel training on Ray Train (``avel train --workers N``)
      workers: 1
      gpus_per_worker: 0
    cluster:                    # where Ray runs: the section shared with ``avel extract``
      address: null

Unknown keys are errors naming the file and the key path, so a typo never silently falls
back to a default. The resolved config is saved in every checkpoint and in the run directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from avel.datasets.config_schema import (
    ConfigError,
    Source,
    Sources,
    YamlError,
    check_fields,
    dataclass_from_dict,
    read_yaml,
)
from avel.pipeline.cluster import ClusterConfig


@dataclass
class ModelSection:
    """Which model to build and its own options (see ``avel models info NAME``)."""

    name: str = "unav"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    """Streams and loading.

    Args:
        visual_streams / audio_streams: store streams concatenated per modality (dense task),
            or exactly one each (AVE task).
        max_seq_len: training crop length / minimum padded length (dense task).
        crop_ratio: ActionFormer random truncation (None disables).
        train_subset / val_subset / test_subset: annotation subsets.
        num_workers: DataLoader workers (0: in-process).
        ave_split: AVE split files, "standard" or "match" (CML).
        extra_background_audio: AVE weak supervision: path to audio_feature_noisy.h5.
        extra_background_visual: ... and its visual features when the user has them.
        standardize: standardize every stream per dimension with mean / std of the TRAINING
            videos (recomputed from the store when a run is evaluated). Off by default: the published models use raw
            features; useful for random-weight features whose scale is tiny.
    """

    visual_streams: list[str] = field(default_factory=lambda: ["i3d_rgb", "i3d_flow"])
    audio_streams: list[str] = field(default_factory=lambda: ["vggish"])
    max_seq_len: int = 224
    crop_ratio: list[float] | None = field(default_factory=lambda: [0.9, 1.0])
    train_subset: str = "train"
    val_subset: str = "validation"
    test_subset: str = "test"
    num_workers: int = 0
    ave_split: str = "standard"
    extra_background_audio: str | None = None
    extra_background_visual: str | None = None
    standardize: bool = False


@dataclass
class OptimSection:
    """Optimizer and schedule (per step), EMA of weights, clipping.

    Defaults are the UnAV-100 baseline's (AdamW, 5 warmup + cosine epochs: the configs of the
    official UnAV code, ttgeng233/UnAV, for "Dense-Localizing Audio-Visual Events in Untrimmed
    Videos", CVPR 2023). The AVE papers use Adam with a step decay:
    ``optimizer: adam``, ``schedule: step`` with ``step_size_steps`` / ``step_gamma``.

    Args:
        optimizer: ``adamw`` (decoupled weight decay) or ``adam`` (L2 weight decay).
        schedule: ``cosine`` (linear warmup then cosine to ``eta_min_ratio``) or ``step``
            (warmup then multiply by ``step_gamma`` every ``step_size_steps`` steps).
    """

    optimizer: Literal["adamw", "adam"] = "adamw"
    schedule: Literal["cosine", "step"] = "cosine"
    step_size_steps: int = 15000
    step_gamma: float = 0.1
    epochs: int = 45
    warmup_epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip_norm: float | None = 1.0
    ema_decay: float | None = 0.999
    eta_min_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass
class DistributedSection:
    """Data-parallel training: one process per worker, DDP (see docs/training.md).

    ``optim.batch_size`` is the GLOBAL batch: every step each worker takes
    ``batch_size / workers`` samples of the batch single-process training would draw.

    Args:
        workers: number of training processes (Ray Train workers). 1 trains in-process unless
            ``avel train --workers`` is given explicitly.
        gpus_per_worker: GPUs of each worker (fractions allowed); 0 trains on CPU.
        cpus_per_worker: CPUs reserved for each worker; None: 1 + ``data.num_workers``.
        backend: torch.distributed backend: ``auto`` (NCCL with GPUs, gloo on CPU), ``gloo``
            or ``nccl``.
        find_unused_parameters: DDP option, needed only for models with parameters that get
            no gradient in some steps (none of the registered models).
    """

    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.backend == "nccl" and self.gpus_per_worker == 0:
            raise ValueError("backend 'nccl' needs GPUs: set distributed.gpus_per_worker > 0")


@dataclass
class TrainConfig:
    """Everything a run needs besides the store and the annotation paths.

    Args:
        task: ``"dense"`` (UnAV-100-like localization, mAP) or ``"ave"`` (AVE segment
            accuracy / CML).
        seed: seeds python, numpy and torch.
        device: ``"auto"`` (cuda when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: mixed precision on CUDA (bf16 when supported, else fp16 with a grad scaler);
            ignored on CPU.
        eval_every_epochs: validation frequency; the best checkpoint is chosen on it.
        log_every_steps: JSONL / TensorBoard logging frequency.
        tensorboard: also write TensorBoard event files.
        distributed: :class:`DistributedSection` (data-parallel training).
        cluster: :class:`avel.pipeline.cluster.ClusterConfig`, where Ray runs; the same
            section as in an extraction config.
    """

    task: Literal["dense", "ave"] = "dense"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    eval_every_epochs: int = 1
    log_every_steps: int = 20
    tensorboard: bool = True
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        if self.optim.batch_size % self.distributed.workers:
            raise ValueError(
                f"optim.batch_size {self.optim.batch_size} is the global batch and must be "
                f"divisible by distributed.workers {self.distributed.workers}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_model_options(cfg: TrainConfig, source: Source) -> None:
    """``model.name`` is registered and ``model.options`` sets only fields of its config
    dataclass, with values of their types: a key no code reads is an error naming the file."""
    from avel.models.registry import available_models, resolve

    if cfg.model.name not in available_models():
        origin = source("model.name") if isinstance(source, Sources) else source
        raise ConfigError(
            f"{origin}: model.name {cfg.model.name!r} is not a registered model; registered: {sorted(available_models())}"
        )
    config_cls, _ = resolve(cfg.model.name)
    try:
        check_fields(config_cls, cfg.model.options, path="model.options", source=source)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def config_from_dict(data: dict[str, Any], *, source: Source = "<config>") -> TrainConfig:
    """The training config of a mapping; every section, key, type and value checked
    (:func:`avel.datasets.config_schema.dataclass_from_dict`), ``model.options`` against the
    model's config class. Raises :class:`ConfigError` naming ``source`` and the key."""
    try:
        cfg = dataclass_from_dict(TrainConfig, data, source=source)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _check_model_options(cfg, source)
    return cfg


def load_config(
    path: str | Path, overrides: dict[str, Any] | None = None, options: Mapping[str, str] | None = None
) -> TrainConfig:
    """Load a YAML config; ``overrides`` are dotted keys (``optim.epochs``) applied on top.

    ``options`` names the command-line option that gave each override (``{"optim.lr":
    "--set optim.lr=fast"}``; default ``override optim.lr``): an error about an overridden key
    names the option, any other the file."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except YamlError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level: expected a mapping of config sections, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if node.get(p) is None:  # absent, or an empty section (``cluster:``)
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"{path}: cannot apply override {dotted}: {p} is not a mapping")
            node = node[p]
        node[leaf] = value
    given = {key: (options or {}).get(key, f"override {key}") for key in overrides or {}}
    return config_from_dict(data, source=Sources(str(path), given))
