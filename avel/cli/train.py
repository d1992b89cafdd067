"""``avel train``: fit a model on a feature store (thin wrapper over avel.training.run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

_ROLES = {"visual": "visual", "rgb": "visual", "video": "visual", "audio": "audio"}


def parse_streams(text: str) -> dict[str, list[str]]:
    """``visual=a+b,audio=c`` -> ``{"data.visual_streams": ["a", "b"], "data.audio_streams": ["c"]}``."""
    out: dict[str, list[str]] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        role, sep, names = item.partition("=")
        if not sep or role.strip() not in _ROLES or not names.strip():
            raise click.UsageError(
                f"--streams takes ROLE=STREAM[+STREAM...] with ROLE in visual/rgb/video/audio, got {item!r}"
            )
        key = f"data.{_ROLES[role.strip()]}_streams"
        out.setdefault(key, []).extend(n.strip() for n in names.split("+") if n.strip())
    return out


@click.command("train")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training config YAML (see configs/).",
)
@click.option("--store", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--annotations",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="UnAV-100 JSON (task dense) or AVE Annotations.txt (task ave).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option(
    "--resume",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint to resume from (e.g. RUN/last.pt).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set optim.epochs=3 (YAML value syntax).",
)
@click.option(
    "--streams",
    default=None,
    metavar="visual=A+B,audio=C",
    help="Store streams per modality (data.visual_streams / data.audio_streams), e.g. "
    "visual=clip_vit_b16,audio=ast_audioset; '+' joins streams concatenated along D "
    "(rgb / video are aliases of visual).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Data-parallel training on Ray Train with N workers (distributed.workers); "
    "optim.batch_size is the global batch.",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=None,
    help="GPUs per worker (distributed.gpus_per_worker; 0: CPU, gloo).",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster address (cluster.address; default: RAY_ADDRESS or an embedded local instance).",
)
def train(
    config_file: Path,
    store: Path,
    annotations: Path,
    out: Path,
    resume: Path | None,
    overrides: tuple[str, ...],
    streams: str | None,
    workers: int | None,
    gpus_per_worker: float | None,
    address: str | None,
) -> None:
    """Train a localization model; the best checkpoint is chosen on the validation split
    and evaluated on the test split. Writes RUN/{config.yaml,last.pt,best.pt,log.jsonl,summary.json}.

    With --workers N (or --gpus-per-worker, --address, or distributed.workers > 1 in the config)
    training runs data-parallel on Ray Train (DDP; see docs/training.md), with the same run
    directory and checkpoints. RUN/model_card.json records the streams that trained the model
    (extractor, config, weights digest): `avel predict RUN VIDEO` extracts exactly those."""
    from avel.datasets.config_schema import YamlError, parse_yaml
    from avel.training.config import ConfigError, load_config
    from avel.training.run import train as run

    parsed: dict[str, Any] = {}
    options: dict[str, str] = {}  # dotted key -> the option that set it, for error messages
    for item in overrides:
        if "=" not in item:
            raise click.UsageError(f"--set takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            parsed[key] = parse_yaml(value, source=f"--set {key}")
        except YamlError as e:
            raise click.UsageError(str(e)) from None
        options[key] = f"--set {item}"
    if streams:
        from_streams = parse_streams(streams)
        parsed.update(from_streams)
        options.update({key: f"--streams {streams}" for key in from_streams})
    for key, flag, name in (
        ("distributed.workers", workers, "--workers"),
        ("distributed.gpus_per_worker", gpus_per_worker, "--gpus-per-worker"),
        ("cluster.address", address, "--address"),
    ):
        if flag is not None:
            parsed[key] = flag
            options[key] = f"{name} {flag}"
    try:
        cfg = load_config(config_file, parsed, options)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if resume is None and (out / "last.pt").exists():
        raise click.UsageError(f"{out} already holds a run; pass --resume {out / 'last.pt'} or choose another --out")

    def progress(rec: dict) -> None:
        shown = {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in rec.items()
            if k in ("epoch", "train_total", "val_score", "seconds", "best")
        }
        click.echo(json.dumps(shown), err=True)

    # any Ray flag selects Ray Train, even --workers 1 (one worker on a cluster's GPU)
    use_ray = True if (workers, gpus_per_worker, address) != (None, None, None) else None
    # errors escape to the group: 2 config, 3 unusable store / annotations / checkpoint, 4 Ray
    summary = run(cfg, store=store, annotations=annotations, out=out, resume=resume, progress=progress, use_ray=use_ray)
    click.echo(json.dumps(summary, indent=1, default=float))
