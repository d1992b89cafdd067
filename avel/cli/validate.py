"""``avel validate``: every problem of an annotation file at once."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("validate")
@click.option("--dataset", required=True, type=click.Choice(["unav100", "ave", "folder"]))
@click.argument("annotations", required=False, type=click.Path(path_type=Path))
@click.option("--videos", "video_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Video directory: also check that every annotated video has a file.")
@click.option("--splits", "split_dir", type=click.Path(file_okay=False, path_type=Path),
              help="AVE: folder of the *_order.h5 split files (default: next to Annotations.txt).")
@click.option("--json", "as_json", is_flag=True, help="Print problems as a JSON list.")
def validate(dataset: str, annotations: Path | None, video_dir: Path | None, split_dir: Path | None,
             as_json: bool) -> None:
    """Check ANNOTATIONS (a UnAV-100 JSON, an AVE Annotations.txt, or for `folder` a video
    directory) and report every problem, each naming the file and the line or key.

    Exit code 0 when clean, 1 when problems were found.
    """
    from avel.datasets.validate import validate as run

    if annotations is None and not (dataset == "folder" and video_dir):
        raise click.UsageError("ANNOTATIONS is required (for --dataset folder: the video directory)")
    problems = run(dataset, annotations, video_dir=video_dir, split_dir=split_dir)
    if as_json:
        click.echo(json.dumps([p.__dict__ for p in problems], indent=1))
    else:
        for p in problems:
            click.echo(str(p))
        click.echo(f"{len(problems)} problem(s) in {annotations or video_dir}", err=True)
    sys.exit(1 if problems else 0)
