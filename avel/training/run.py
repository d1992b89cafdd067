"""``avel train`` as a library function: config + store + annotations -> run directory.

    cfg = load_config("configs/loco_unav100.yaml")
    result = train(cfg, store="stores/unav100", annotations="unav100_annotations.json", out="runs/loco")

Input dims, the number of classes and the time grid come from the store manifest and the
annotations, never from constants. After fitting, the best checkpoint (chosen on the
validation split) is evaluated on the test split when the annotations have one.

With ``distributed.workers > 1`` (or ``use_ray=True``) the same
:func:`avel.training.fit.fit_and_test` runs in every Ray Train worker
(:mod:`avel.training.distributed`); the run directory is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from avel.training.config import TrainConfig
from avel.training.fit import (
    check_splits,
    fit_and_test,
    load_annotations,
    make_task,
    random_weight_streams,
    resolve_model_options,
)
from avel.training.trainer import Trainer

# the library entry points of a run (fit_and_test and its steps live in avel.training.fit)
__all__ = [
    "check_splits",
    "fit_and_test",
    "load_annotations",
    "make_task",
    "random_weight_streams",
    "resolve_model_options",
    "train",
]


def train(
    cfg: TrainConfig,
    *,
    store: str | Path,
    annotations: str | Path,
    out: str | Path,
    resume: str | Path | None = None,
    progress: Callable[[dict], None] | None = None,
    on_step: Callable[[Trainer], None] | None = None,
    use_ray: bool | None = None,
) -> dict[str, Any]:
    """Fit, select on validation, evaluate the best checkpoint on test; returns a summary.

    Args:
        cfg: the resolved config.
        store / annotations: feature store directory and annotation file.
        out: run directory.
        resume: checkpoint to continue from (``RUN/last.pt``; single-process and distributed
            checkpoints are interchangeable).
        progress: called with every epoch record.
        on_step: called with the trainer after every optimizer step (in every worker).
        use_ray: train data-parallel on Ray Train (:mod:`avel.training.distributed`); None:
            when ``cfg.distributed.workers > 1``.
    """
    if use_ray is None:
        use_ray = cfg.distributed.workers > 1
    check_splits(cfg, load_annotations(cfg.task, annotations, ave_split=cfg.data.ave_split), annotations)
    if use_ray:
        from avel.training.distributed import train_distributed

        return train_distributed(
            cfg, store=store, annotations=annotations, out=out, resume=resume, progress=progress, on_step=on_step
        )
    return fit_and_test(
        cfg, store=store, annotations=annotations, out=out, resume=resume, progress=progress, on_step=on_step
    )
