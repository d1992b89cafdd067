"""``avel weights verify PATH --extractor NAME``: check a checkpoint's keys and shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group("weights")
def weights() -> None:
    """Checkpoint files of the extractors."""


@weights.command("verify")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--extractor", "name", required=True, help="Extractor name (see `avel extractors list`).")
@click.option("--preset", default="full", show_default=True, help="Config preset the checkpoint is for.")
def verify(path: Path, name: str, preset: str) -> None:
    """Check that PATH (a file, or a directory holding the official file names for multi-file
    extractors such as i3d) matches the extractor's keys and shapes; print every file's sha256.

    Exit code 0 when everything matches, 1 on a mismatch, 2 on usage errors (unknown extractor
    or preset), 3 on an unreadable or missing file.
    """
    from avel.extractors import get

    try:
        cls = get(name)
        cls.make_config(preset)
    except (KeyError, ValueError) as e:
        raise click.UsageError(str(e.args[0] if isinstance(e, KeyError) else e)) from e
    report = cls.check_checkpoint(path, preset=preset)  # unreadable / missing: exit 3 (avel.cli.errors)
    for role, file in report.files.items():
        click.echo(f"{role:<6} {file}  sha256 {report.sha256[role]}  (official: {report.expected_files[role]})")
    if report.ok:
        click.echo(f"ok: {len(report.state)} tensors match {name} ({preset})")
        sys.exit(0)
    click.echo(str(report.error()), err=True)
    sys.exit(1)
