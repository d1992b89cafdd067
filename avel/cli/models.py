"""``avel models``: list registered models and report their size and cost."""

from __future__ import annotations

import json

import click


@click.group()
def models() -> None:
    """Registered localization models."""


@models.command("list")
def list_() -> None:
    """List registered model names."""
    from avel.models.registry import available_models

    for name, desc in available_models().items():
        click.echo(f"{name:<12}{desc}")


def _parse_dims(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        dims = tuple(int(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two comma-separated integers like 1536,1536, got {value!r}") from None
    if len(dims) != 2 or min(dims) <= 0:
        raise click.BadParameter(f"expected two positive integers (visual,audio), got {value!r}")
    return dims[0], dims[1]


def _parse_sets(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    from avel.datasets.config_schema import YamlError, parse_yaml

    options: dict = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"expected KEY.PATH=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        node = options
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        try:
            node[parts[-1]] = parse_yaml(raw, source=f"--set {key}")
        except YamlError as e:
            raise click.BadParameter(str(e)) from None
    return options


@models.command("info")
@click.argument("name")
@click.option(
    "--input-dims",
    default=None,
    callback=_parse_dims,
    help="visual,audio feature dims [default: the model's paper setting: 1536,1536 (ONE-PEACE) for "
    "unav/ccnet/loco, 512,128 (VGG-19 pool5 7x7x512, VGGish) for agva/ccln/avlc]",
)
@click.option(
    "--seq-len",
    default=None,
    type=click.IntRange(min=1),
    help="T: max_seq_len (dense) or segments (AVE) and the probe input length [default: 256 dense, 10 AVE]",
)
@click.option(
    "--num-classes",
    default=None,
    type=click.IntRange(min=1),
    help="classes [default: 100 dense (UnAV-100), 29 AVE (28 events + background)]",
)
@click.option(
    "--set",
    "options",
    multiple=True,
    callback=_parse_sets,
    help="config field override, e.g. --set mtgc.c2f=false (repeatable)",
)
@click.option("--no-flops", is_flag=True, help="only count parameters")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def info(
    name: str,
    input_dims: tuple[int, int] | None,
    seq_len: int | None,
    num_classes: int | None,
    options: dict,
    no_flops: bool,
    as_json: bool,
) -> None:
    """Parameters and GFLOPs/GMACs of model NAME (one forward pass, batch 1)."""
    from avel.models.info import format_info, model_info
    from avel.models.registry import available_models

    if name not in available_models():
        raise click.UsageError(f"unknown model {name!r}; registered: {', '.join(available_models())}")
    try:
        result = model_info(
            name,
            input_dims=input_dims,
            seq_len=seq_len,
            num_classes=num_classes,
            options=options,
            count_flops=not no_flops,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(result, indent=2) if as_json else format_info(result))
