"""``avel info``, ``avel import``, ``avel export``: thin commands over avel.datasets.

Unusable input (a store, an annotation or feature file) is not caught here: the command group
turns the library's error into one line and exit code 3 (:func:`avel.cli.errors.exit_code_for`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm


def _report_import(report, store: Path) -> None:
    """Summary line, every problem on stderr, exit 1 when there were problems."""
    click.echo(f"imported {report.videos} videos into {store} ({report.skipped_existing} already present)")
    for p in report.problems:
        click.echo(f"problem: {p}", err=True)
    if report.problems:
        sys.exit(1)


class FolderOrUrl(click.Path):
    """A local folder (checked as ``click.Path`` does) or an ``s3://...`` URL, kept as a string
    (checked when used)."""

    def convert(self, value, param, ctx):
        from avel.datasets.store_remote import is_remote

        return value if is_remote(value) else super().convert(value, param, ctx)


@click.command("info")
@click.argument("store", type=FolderOrUrl(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--verify", is_flag=True, help="Also check every shard's sha256 and per-video checksums.")
@click.option("--videos", "list_videos", is_flag=True, help="List the video ids.")
@click.option(
    "--repair",
    is_flag=True,
    help="First rebuild a lost or damaged manifest/log from the log, snapshot or shards (same as `avel store repair`).",
)
def info(store: Path, as_json: bool, verify: bool, list_videos: bool, repair: bool) -> None:
    """Show a store's streams, dims, sampling plans, provenance, videos and errors.

    Exit code 1 when --verify finds a problem, 3 when the store cannot be read (the message names
    the file and key; see :mod:`avel.cli.errors`).
    """
    from avel.datasets.store import FeatureStore, repair_store
    from avel.datasets.store_remote import is_remote

    if repair and is_remote(store):
        raise click.UsageError(
            f"--repair works on local stores; {store} is a bucket store (its writer publishes what it committed)"
        )
    if repair:
        for line in repair_store(store):
            click.echo(f"repair   {line}", err=True)
    st = FeatureStore(store)
    summary = st.summary()
    problems = st.verify(full=True) if verify else []
    summary["verify_problems"] = problems if verify else None
    if list_videos:
        summary["video_ids"] = st.videos()
    if as_json:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))
    else:
        click.echo(f"store    {summary['path']}")
        click.echo(f"dataset  {summary['dataset']}   schema v{summary['schema_version']}")
        click.echo(f"videos   {summary['videos']} in {summary['shards']} shards, {summary['bytes'] / 2**20:.1f} MiB")
        click.echo("streams")
        for name, s in summary["streams"].items():
            weights = s["weights_sha256"]
            weights = "RANDOM WEIGHTS" if weights == "random" else weights[:16]
            click.echo(
                f"  {name:<16} {s['extractor']:<20} shape {tuple(s['feature_shape'])} {s['dtype']}  "
                f"{s['videos']} videos / {s['rows']} rows"
            )
            click.echo(f"  {'':<16} {s['plan_text']}; weights {weights}")
            if s.get("provenance"):
                click.echo(f"  {'':<16} provenance {json.dumps(s['provenance'], sort_keys=True)}")
        click.echo(
            f"errors   {summary['errors']} records, {len(summary['failed_videos'])} failed videos"
            + (f": {', '.join(summary['failed_videos'][:10])}" if summary["failed_videos"] else "")
        )
        if summary["random_weight_streams"]:
            click.echo(
                f"WARNING: streams {summary['random_weight_streams']} were extracted with RANDOM "
                f"weights (tests/demo only)",
                err=True,
            )
        for note in summary["notes"]:
            click.echo(f"note     {note}")
        if verify:
            click.echo("verify   " + ("ok" if not problems else f"{len(problems)} problems"))
            for p in problems:
                click.echo(f"  {p}")
        if list_videos:
            for v in summary["video_ids"]:
                click.echo(v)
    if problems:
        sys.exit(1)


@click.group("import")
def import_() -> None:
    """Import published features (UnAV-100 .npy folders, AVE h5 files) into a store."""


@import_.command("unav-npy")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "store", required=True, type=click.Path(path_type=Path), help="Store directory.")
@click.option(
    "--annotations",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="UnAV-100 annotation JSON: durations, and only annotated videos are imported.",
)
@click.option(
    "--stream",
    "streams",
    multiple=True,
    help="Store stream(s) to import (i3d_rgb, i3d_flow, vggish, onepeace_video, onepeace_audio).",
)
def import_unav(folder: Path, store: Path, annotations: Path | None, streams: tuple[str, ...]) -> None:
    """Import <vid>_rgb.npy / _flow / _vggish / _one_peace_* files from FOLDER."""
    from avel.datasets.interop import import_unav_npy

    ann = None
    if annotations is not None:
        from avel.datasets.unav100 import load_unav100

        ann = load_unav100(annotations)
    with tqdm(desc="import", unit="video", disable=None) as bar:
        report = import_unav_npy(
            folder, store, annotations=ann, streams=streams or None, progress=lambda n: bar.update(n - bar.n)
        )
    _report_import(report, store)


@import_.command("ave-h5")
@click.option(
    "--annotations",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="AVE Annotations.txt (row order indexes the h5 rows).",
)
@click.option("--visual", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="visual_feature.h5")
@click.option("--audio", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="audio_feature.h5")
@click.option("--out", "store", required=True, type=click.Path(path_type=Path), help="Store directory.")
@click.option(
    "--dtype",
    default="float32",
    show_default=True,
    type=click.Choice(["float32", "float64"]),
    help="Stored dtype (the release's visual file is float64).",
)
def import_ave(annotations: Path, visual: Path | None, audio: Path | None, store: Path, dtype: str) -> None:
    """Import AVE visual_feature.h5 / audio_feature.h5 (key avadataset), one entry per video."""
    from avel.datasets.ave import load_ave
    from avel.datasets.interop import import_ave_h5

    if visual is None and audio is None:
        raise click.UsageError("give --visual and/or --audio")
    ann = load_ave(annotations)
    with tqdm(total=len(ann), desc="import", unit="row", disable=None) as bar:
        report = import_ave_h5(
            ann, store, visual_h5=visual, audio_h5=audio, dtype=dtype, progress=lambda n: bar.update(n - bar.n)
        )
    _report_import(report, store)


@click.group("export")
def export() -> None:
    """Export a store to the formats legacy code reads."""


@export.command("unav-npy")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar="STREAM=SUFFIX",
    help="Stream to file suffix, e.g. i3d_rgb=_rgb (default: the release names).",
)
def export_unav(store: Path, out: Path, mapping: tuple[str, ...]) -> None:
    """Write <vid><suffix>.npy files, one per video and stream."""
    from avel.datasets.interop import export_unav_npy
    from avel.datasets.store import FeatureStore

    streams = None
    if mapping:
        try:
            streams = dict(m.split("=", 1) for m in mapping)
        except ValueError:
            raise click.UsageError("--map takes STREAM=SUFFIX") from None
    st = FeatureStore(store)
    with tqdm(total=len(st), desc="export", unit="video", disable=None) as bar:
        n = export_unav_npy(st, out, streams=streams, progress=lambda k: bar.update(k - bar.n))
    click.echo(f"wrote {n} files to {out}")


@export.command("ave-h5")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--visual-stream", default="vgg19", show_default=True)
@click.option("--audio-stream", default="vggish", show_default=True)
def export_ave(store: Path, annotations: Path, out: Path, visual_stream: str, audio_stream: str) -> None:
    """Write visual_feature.h5 / audio_feature.h5 in Annotations.txt row order."""
    from avel.datasets.ave import load_ave
    from avel.datasets.interop import export_ave_h5
    from avel.datasets.store import FeatureStore

    st = FeatureStore(store)
    paths = export_ave_h5(
        st,
        load_ave(annotations),
        out,
        visual_stream=visual_stream if visual_stream in st.streams else None,
        audio_stream=audio_stream if audio_stream in st.streams else None,
    )
    for p in paths:
        click.echo(f"wrote {p}")


@click.group("store")
def store_group() -> None:
    """Maintain a feature store: upgrade, repair, compact."""


@store_group.command("upgrade")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
def store_upgrade(store: Path) -> None:
    """Convert a schema-version-1 store to version 2 in place (checks every shard first;
    rerun after an interruption to finish)."""
    from avel.datasets.store import upgrade_store

    with tqdm(desc="upgrade", unit="shard", disable=None) as bar:

        def progress(n: int, total: int) -> None:
            bar.total = total
            bar.update(n - bar.n)

        actions = upgrade_store(store, progress=progress)
    for line in actions:
        click.echo(line)


@store_group.command("repair")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
def store_repair(store: Path) -> None:
    """Rebuild a lost or damaged manifest.json / log from the log, the snapshot or the shards;
    adopt complete uncommitted shards. Never deletes a shard it cannot account for."""
    from avel.datasets.store import repair_store

    actions = repair_store(store)
    for line in actions or ["nothing to repair"]:
        click.echo(line)


@store_group.command("compact")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
def store_compact(store: Path) -> None:
    """Rewrite manifest.json from the whole log (writers do this when they close)."""
    from avel.datasets.store import compact_store

    compact_store(store)
    click.echo(f"compacted {store}/manifest.json")
