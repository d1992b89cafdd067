"""Click options shared by several ``avel`` commands (one definition each)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

SPLITS = ("train", "validation", "test")


def int_option(*decls: str, default: int, min: int | None = None, max: int | None = None, help: str) -> Callable:
    """An integer option with a default shown in ``--help`` and, when ``min`` or ``max`` is given,
    a range (``click.IntRange``)."""
    kind = int if min is None and max is None else click.IntRange(min, max)
    return click.option(*decls, default=default, show_default=True, type=kind, help=help)


def predictions_option(*, required: bool) -> Callable:
    """``--predictions FILE``: a results JSON (``avel eval``, ``avel plot``)."""
    return click.option(
        "--predictions",
        "predictions_path",
        required=required,
        type=click.Path(dir_okay=False, path_type=Path),
        help='Results JSON ({"results": {video_id: [{segment, label, score}]}}).',
    )


def annotations_option() -> Callable:
    """``--annotations FILE``: a UnAV-100 annotation JSON (required)."""
    return click.option(
        "--annotations",
        "annotations_path",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Annotation file (UnAV-100 JSON).",
    )


def split_option(help: str) -> Callable:
    """``--split {train,validation,test}``, default ``test``."""
    return click.option("--split", default="test", show_default=True, type=click.Choice(SPLITS), help=help)


def out_dir_option(help: str, dest: str = "out") -> Callable:
    """``--out DIR`` (required): a folder the command writes."""
    return click.option("--out", dest, required=True, type=click.Path(file_okay=False, path_type=Path), help=help)


def apply(*options: Callable[[Any], Any]) -> Callable:
    """One decorator applying ``options`` in order (as if stacked top to bottom)."""

    def decorate(f: Any) -> Any:
        for opt in reversed(options):
            f = opt(f)
        return f

    return decorate
