"""``avel extract``: videos -> feature store (thin wrapper over avel.pipeline.extract)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from avel.cli.store import FolderOrUrl


def progress_fields(report, total: int, elapsed_s: float | None = None) -> dict:
    """The numbers the live bar shows, from a run's :class:`~avel.pipeline.engine.RunReport`.

    Args:
        report: the running report (counts so far).
        total: videos this run has to process (skipped and rejected ones excluded).
        elapsed_s: wall-clock seconds since the run began (default: ``report.elapsed_s()``).

    Returns:
        ``done`` (ok + failed + skipped), ``total``, ``ok``, ``failed``, ``windows_per_s``
        (windows extracted per wall-clock second since the run began) and ``eta_s`` (videos
        remaining at the rate videos have been done so far; None before the first video).
    """
    elapsed = report.elapsed_s() if elapsed_s is None else float(elapsed_s)
    done = report.videos_ok + report.videos_failed + report.videos_skipped
    remaining = max(0, total - done)
    eta_s = None
    if remaining == 0:
        eta_s = 0.0
    elif done and elapsed > 0:
        eta_s = remaining * elapsed / done
    return {
        "done": done,
        "total": total,
        "ok": report.videos_ok,
        "failed": report.videos_failed,
        "windows_per_s": report.windows / elapsed if elapsed > 0 else 0.0,
        "eta_s": eta_s,
    }


def _kv(values: tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.UsageError(f"{flag} takes NAME=VALUE, got {v!r}")
        k, val = v.split("=", 1)
        out[k] = val
    return out


def _with_flags(cfg, given: dict[str, Any], address: str | None, config_file: Path | None):
    """``cfg`` (the job file's) with the flags applied, through the package's one config rule
    (:func:`avel.datasets.config_schema.dataclass_from_dict`): a bad value is a usage error
    naming the flag (or the job file) and the key."""
    from avel.datasets.config_schema import Sources, dataclass_from_dict
    from avel.pipeline.extract import ExtractConfig

    flag_of = {p.name: p.opts[0] for p in click.get_current_context().command.params if p.name}
    data = {**dataclasses.asdict(cfg), **given}
    options = {key: f"{flag_of.get(key, key)} {value}" for key, value in given.items()}
    if address:
        data["cluster"] = {**data["cluster"], "address": address}
        options["cluster.address"] = f"--address {address}"
    try:
        return dataclass_from_dict(ExtractConfig, data, source=Sources(str(config_file or "<flags>"), options))
    except ValueError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@click.command("extract")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file with any of the options below (flags override it).",
)
@click.option("--dataset", type=click.Choice(["unav100", "ave", "folder"]))
@click.option(
    "--videos", type=FolderOrUrl(exists=True, file_okay=False), help="Video directory (or s3://bucket/prefix)."
)
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False), help="Annotation file (unav100, ave).")
@click.option("--extractors", help="Comma-separated extractor names (see `avel extractors list`).")
@click.option("--weights", multiple=True, metavar="NAME=PATH", help="Checkpoint of an extractor (repeatable).")
@click.option(
    "--random-weights",
    is_flag=True,
    default=None,
    help="Allow random weights for extractors without --weights (tests and demos only).",
)
@click.option("--preset", type=click.Choice(["full", "tiny"]), help="Extractor configuration preset.")
@click.option(
    "--out", type=click.Path(file_okay=False), help="Store directory or s3://bucket/prefix (created or resumed)."
)
@click.option(
    "--store",
    type=click.Path(file_okay=False),
    help="Existing store to add streams to: --out, and --dataset/--videos/--annotations default to "
    "its last extraction's.",
)
@click.option(
    "--runner",
    type=click.Choice(["auto", "local", "ray"]),
    help="Execution engine (default auto: local for a small job on one machine, Ray for --address, "
    "several GPUs or a big job; the report's settings.why says which and why).",
)
@click.option("--address", help="Ray cluster address (default: RAY_ADDRESS or an embedded local instance).")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Windows per device batch (default: chosen per extractor and device, e.g. 1 for I3D RGB "
    "on a CPU, 32 on a GPU).",
)
@click.option(
    "--gpus-per-actor",
    type=float,
    help="GPU fraction per extractor actor (ray runner; default: the GPUs shared by the extractors).",
)
@click.option(
    "--actors-per-extractor",
    type=click.IntRange(min=1),
    help="Actor pool size per extractor (ray runner; default: one per CPU, or per GPU).",
)
@click.option(
    "--threads-per-actor",
    type=click.IntRange(min=0),
    help="Torch threads of a CPU extractor actor (ray runner; 0: the CPUs shared by the actors).",
)
@click.option("--decode-workers", type=click.IntRange(min=1), help="Concurrent decode tasks (ray runner).")
@click.option(
    "--chunk-s",
    type=click.FloatRange(min=0, min_open=True),
    help="Decode and extract long videos in chunks of about this many seconds.",
)
@click.option(
    "--decode-memory-gb",
    type=click.FloatRange(min=0),
    help="Ray memory reserved per decode task (default: estimated; 0: none).",
)
@click.option("--decode-timeout-s", type=float, help="Per-video decode time limit.")
@click.option("--retry-failed", is_flag=True, default=None, help="Redo videos recorded in errors.jsonl.")
@click.option("--device", help="Device of the local runner: auto, cpu, cuda, cuda:1 ...")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),  # avel.pipeline.tuning.PRECISIONS (not imported: lazy rooms)
    help="Compute precision of the models, both runners (default fp32: the published features; "
    "bf16 / fp16: autocast, faster on a GPU, rows differ by the rounding).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON only.")
def extract(config_file: Path | None, as_json: bool, **flags) -> None:
    """Extract features from a dataset's videos into a feature store.

    Rerunning the same command resumes: committed videos are skipped. --store S --extractors NEW
    adds streams to an existing store over the same videos (each video decoded once for all
    new streams; streams a video already has are not recomputed). Failed videos are
    recorded in STORE/errors.jsonl and skipped on rerun unless --retry-failed. Exit codes:
    0 all videos done, 1 some video failed, 2 usage / job file error, 3 unusable input
    (annotations, store, weights), 4 Ray failed, 130 / 143 interrupted (see docs/failure-modes.md).
    """
    from avel.pipeline.extract import ExtractConfig, run_extract

    cfg = ExtractConfig.from_yaml(config_file) if config_file else ExtractConfig()  # ConfigError: exit 2
    given = {k: v for k, v in flags.items() if v not in (None, ())}
    if "extractors" in given:
        given["extractors"] = [e.strip() for e in given["extractors"].split(",") if e.strip()]
    if "weights" in given:
        given["weights"] = {**cfg.weights, **_kv(given["weights"], "--weights")}
    address = given.pop("address", None)
    store = given.pop("store", None)
    if store and given.get("out") and Path(given["out"]) != Path(store):
        click.echo(f"error: --store {store} and --out {given['out']} name different stores", err=True)
        sys.exit(2)
    if store:
        from avel.pipeline.extract import config_for_store

        try:
            cfg = config_for_store(store, cfg, **given)
        except ValueError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
    cfg = _with_flags(cfg, given, address, config_file)
    try:  # extractor_options come from the job file only; checked with the final preset
        cfg.check_extractor_options()
    except ValueError as e:
        click.echo(f"error: {config_file}: {e}" if config_file else f"error: {e}", err=True)
        sys.exit(2)
    # live bar on stderr; off with --json and when stderr is not a terminal (disable=None)
    bar = tqdm(
        unit="video",
        disable=True if as_json else None,
        desc="extract",
        file=sys.stderr,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} videos [{elapsed}{postfix}]",
    )

    def progress(report, total):
        f = progress_fields(report, total)
        bar.total, bar.n = f["total"], f["done"]
        eta = "?" if f["eta_s"] is None else tqdm.format_interval(f["eta_s"])
        bar.set_postfix_str(
            f"ok={f['ok']} failed={f['failed']} {f['windows_per_s']:.1f} windows/s ETA {eta}", refresh=False
        )
        bar.refresh()

    try:  # errors escape to the group, which maps their types to exit codes (avel.cli.errors)
        # stdout holds the report alone: what else is printed during the run goes to stderr
        # (Ray's notes on a restarted actor's retried calls, a library's print)
        with contextlib.redirect_stdout(sys.stderr):
            result = run_extract(cfg, progress=progress)
    finally:
        bar.close()
    click.echo(json.dumps(result, indent=None if as_json else 1, default=str))
    if result["videos_failed"]:
        click.echo(
            f"{result['videos_failed']} video(s) failed; see {cfg.out}/errors.jsonl "
            f"(rerun with --retry-failed to redo them)",
            err=True,
        )
        sys.exit(1)
