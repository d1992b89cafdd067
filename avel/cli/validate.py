"""``avel validate``: every problem of an annotation file at once."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click


@click.command("validate")
@click.option(
    "--dataset",
    required=True,
    type=click.Choice(["unav100", "ave", "folder"]),
    help="Annotation format of ANNOTATIONS.",
)
@click.argument("annotations", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--videos",
    "video_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Video directory: also check that every annotated video has a file <id>.<ext> "
    "(for --dataset folder: the directory to check).",
)
@click.option(
    "--splits",
    "split_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="AVE: folder of the *_order.h5 / *_order_match.h5 split files "
    "(default: next to Annotations.txt, where they are optional).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the problems as a JSON list of {file, location, message} instead of text.",
)
def validate(
    dataset: str, annotations: Path | None, video_dir: Path | None, split_dir: Path | None, as_json: bool
) -> None:
    """Check ANNOTATIONS (a UnAV-100 JSON, an AVE Annotations.txt, or for `folder` a video
    directory) and print every problem as FILE: LOCATION: MESSAGE, then a summary.

    Exit code 0 when clean, 1 when problems were found, 2 on usage errors.
    """
    from avel.datasets.validate import count_by_file
    from avel.datasets.validate import validate as run

    if annotations is None and not (dataset == "folder" and video_dir):
        raise click.UsageError("ANNOTATIONS is required (for --dataset folder: the video directory)")
    if split_dir is not None and dataset != "ave":
        raise click.UsageError("--splits applies to --dataset ave only")
    if dataset == "folder" and annotations is not None and not annotations.is_dir():
        raise click.UsageError(f"--dataset folder: {annotations} is not a directory")
    if dataset != "folder" and annotations is not None and annotations.is_dir():
        raise click.UsageError(f"--dataset {dataset}: ANNOTATIONS must be a file, {annotations} is a directory")
    problems = run(dataset, annotations, video_dir=video_dir, split_dir=split_dir)
    target = annotations or video_dir
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(p) for p in problems], indent=1))
    else:
        for p in problems:
            click.echo(str(p))
        if problems:
            per_file = ", ".join(f"{n} in {f}" for f, n in count_by_file(problems).items())
            click.echo(f"{len(problems)} problem(s): {per_file}", err=True)
        else:
            click.echo(f"{target}: OK ({dataset}, no problems)", err=True)
    sys.exit(1 if problems else 0)
