"""``avel train``: fit a model on a feature store (thin wrapper over avel.training.run)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import yaml


@click.command("train")
@click.option("--config", "config_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training config YAML (see configs/).")
@click.option("--store", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="UnAV-100 JSON (task dense) or AVE Annotations.txt (task ave).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint to resume from (e.g. RUN/last.pt).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set optim.epochs=3 (YAML value syntax).")
def train(config_file: Path, store: Path, annotations: Path, out: Path, resume: Path | None,
          overrides: tuple[str, ...]) -> None:
    """Train a localization model; the best checkpoint is chosen on the validation split
    and evaluated on the test split. Writes RUN/{config.yaml,last.pt,best.pt,log.jsonl,summary.json}."""
    from avel.training.config import ConfigError, load_config
    from avel.training.run import train as run

    parsed = {}
    for item in overrides:
        if "=" not in item:
            raise click.UsageError(f"--set takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        parsed[key] = yaml.safe_load(value)
    try:
        cfg = load_config(config_file, parsed)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if resume is None and (out / "last.pt").exists():
        raise click.UsageError(f"{out} already holds a run; pass --resume {out / 'last.pt'} or choose another --out")

    def progress(rec: dict) -> None:
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()
                 if k in ("epoch", "train_total", "val_score", "seconds", "best")}
        click.echo(json.dumps(shown), err=True)

    try:
        summary = run(cfg, store=store, annotations=annotations, out=out, resume=resume, progress=progress)
    except (ConfigError, KeyError, ValueError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(json.dumps(summary, indent=1, default=float))
