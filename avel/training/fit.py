"""One training run in this process: fit, select on validation, evaluate the best checkpoint on test.

:func:`fit_and_test` is what ``avel train`` runs in a single process and what every Ray Train
worker runs (:mod:`avel.training.distributed`); :func:`avel.training.run.train` picks between
the two. Its own module so that neither of those imports the other's caller.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from avel.datasets.store import FeatureStore
from avel.training.config import ConfigError, TrainConfig
from avel.training.tasks import AveTask, DenseTask
from avel.training.trainer import Task, Trainer, load_checkpoint, seed_everything


def load_annotations(task: str, path: str | Path, *, ave_split: str = "standard"):
    if task == "dense":
        from avel.datasets.unav100 import load_unav100

        return load_unav100(path)
    from avel.datasets.ave import load_ave

    return load_ave(path, split=ave_split)


def check_splits(cfg: TrainConfig, annotations, source: str | Path) -> None:
    """Refuse an empty training or validation split: the best checkpoint is chosen on validation,
    and without one training would pick "best" on zero samples and exit 0.

    Raises:
        AnnotationError: naming the annotation file, the subset and the config key.
    """
    from avel.datasets.annotations import AnnotationError

    d = cfg.data
    for key, subset in (("data.train_subset", d.train_subset), ("data.val_subset", d.val_subset)):
        if not annotations.subset(subset):
            raise AnnotationError(
                f"{source}: no samples in subset {subset!r} ({key}); training needs a training and "
                f"a validation split (the best checkpoint is chosen on validation): add one to the "
                f"annotations or set {key} to a subset they have"
            )


def make_task(cfg: TrainConfig, store: FeatureStore, annotations) -> DenseTask | AveTask:
    return DenseTask(store, annotations) if cfg.task == "dense" else AveTask(store, annotations)


def resolve_model_options(cfg: TrainConfig, derived: dict[str, Any]) -> dict[str, Any]:
    """User options plus data-derived ones; a user value contradicting the data is an error."""
    options = dict(cfg.model.options)
    for key, value in derived.items():
        if key in options and options[key] != value:
            raise ConfigError(
                f"model.options.{key} = {options[key]!r} contradicts the data ({value!r}); remove it from the config"
            )
        options[key] = value
    return options


def random_weight_streams(cfg: TrainConfig, store: FeatureStore) -> list[str]:
    """The configured streams that were extracted with random weights; warns when any."""
    streams = cfg.data.visual_streams + cfg.data.audio_streams
    random_streams = [s for s in streams if s in store.streams and store.streams[s].is_random]
    if random_streams:
        warnings.warn(
            f"TRAINING ON RANDOM-WEIGHT FEATURES: streams {random_streams} of {store.root} were extracted "
            f"with random weights (tests/demo only); results say nothing about real backbones",
            stacklevel=3,
        )
    return random_streams


def fit_and_test(
    cfg: TrainConfig,
    *,
    store: str | Path,
    annotations: str | Path,
    out: str | Path,
    resume: str | Path | None = None,
    progress: Callable[[dict], None] | None = None,
    on_step: Callable[[Trainer], None] | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """:func:`avel.training.run.train` in this process (one rank when torch.distributed is initialized; rank 0
    writes the run directory, every rank returns the summary).

    Args:
        cfg, store, annotations, out, resume, progress, on_step: see :func:`avel.training.run.train`.
        device: training device; None: ``cfg.device``.
    """
    from avel.models.registry import build_model

    seed_everything(cfg.seed)
    st = FeatureStore(store)
    random_streams = random_weight_streams(cfg, st)
    ann = load_annotations(cfg.task, annotations, ave_split=cfg.data.ave_split)
    check_splits(cfg, ann, annotations)
    task: Task[Any] = make_task(cfg, st, ann)
    datasets = task.build_datasets(cfg)
    options = resolve_model_options(cfg, task.model_options(cfg, datasets["train"]))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, options=options)
    spec = {"name": cfg.model.name, "options": options}
    trainer = Trainer(cfg, task=task, model=model, model_spec=spec, datasets=datasets, out_dir=out, device=device)
    if trainer.is_main:
        from avel.training.model_card import build_model_card, write_model_card

        card = build_model_card(
            task=cfg.task,
            model_name=cfg.model.name,
            options=options,
            store=st,
            visual_streams=cfg.data.visual_streams,
            audio_streams=cfg.data.audio_streams,
            classes=list(ann.classes),
            background_id=ann.background_id,
            annotations=annotations,
            standardize=cfg.data.standardize,
        )
        write_model_card(out, card, getattr(datasets["train"], "stats", None) or None)
    if resume is not None:
        trainer.resume(resume)
    fit = trainer.fit(progress=progress, on_step=on_step)
    summary: dict[str, Any] = {
        "run": str(out),
        "model": cfg.model.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "best_epoch": fit.best_epoch,
        "best_validation_score": fit.best_score,
        "random_weight_streams": random_streams,
    }
    if "test" in datasets:
        ckpt = load_checkpoint(Path(out) / "best.pt", map_location=trainer.device)
        target = trainer.eval_model()
        target.load_state_dict(ckpt["ema"] if ckpt["ema"] is not None else ckpt["model"])
        summary["test"] = trainer.evaluate("test")
    if trainer.is_main:
        (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary
