"""``avel extractors list``: the registered feature extractors and what they produce."""

from __future__ import annotations

import json
import sys

import click


@click.group("extractors")
def extractors() -> None:
    """Feature extractors (see docs/extractors.md)."""


@extractors.command("list")
@click.option("--preset", default="full", show_default=True, help="Config preset to describe (full or tiny).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per extractor.")
def list_(preset: str, as_json: bool) -> None:
    """List extractors: modality, feature shape, sampling plan, decoding and official weight files.

    Exit code 1 when an extractor cannot be described (broken registry entry).
    """
    from avel.extractors import get, list_extractors

    failed = False
    for name in list_extractors():
        try:
            cls = get(name)
            module = cls.build(device="meta", preset=preset)
            info = module.describe()
            info["checkpoint_files"] = dict(cls.checkpoint_files)
        except Exception as e:  # report and continue with the others
            failed = True
            click.echo(f"error: {name}: {type(e).__name__}: {e}", err=True)
            continue
        if as_json:
            click.echo(json.dumps(info, sort_keys=True, default=str))
        else:
            click.echo(
                f"{name:<20} {info['modality']:<6} shape {tuple(info['feature_shape'])}  {module.plan.describe()}"
            )
            default = getattr(cls, "default_weights", None)  # backbone files name their weights
            click.echo(f"{'':<20} weights: {default or ', '.join(cls.checkpoint_files.values())}")
    sys.exit(1 if failed else 0)
