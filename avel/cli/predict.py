"""``avel predict``: a trained run on new videos; ``avel report``: a run's report page."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("predict")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@click.option(
    "--weights",
    multiple=True,
    metavar="NAME=PATH",
    help="Checkpoint of a stream's extractor (stream or extractor name; repeatable).",
)
@click.option(
    "--random-weights",
    is_flag=True,
    help="Rebuild streams the run extracted with random weights (tests and demos only).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1), help="Windows per batch.")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Detections per figure.")
@click.option("--min-score", default=0.05, show_default=True, type=float, help="Figure score threshold.")
@click.option("--no-plots", is_flag=True, help="Skip the per-video figures.")
def predict(
    run_dir: Path,
    inputs: tuple[Path, ...],
    out: Path,
    weights: tuple[str, ...],
    random_weights: bool,
    device: str,
    batch_size: int,
    top_k: int,
    min_score: float,
    no_plots: bool,
) -> None:
    """Localize events in new videos (files or folders) with the model of RUN_DIR.

    The run's streams are extracted with exactly its extractors, configs and weights (read from
    RUN_DIR/model_card.json; a different config or weights digest is refused), on the local
    runner. Writes OUT/results.json (dense models: UnAV-100 result JSON; AVE models: per-second
    labels), OUT/plots/<video>.png and the features in OUT/features (reused on a rerun).
    Exit code 1 when a video failed or the run cannot be applied, 2 on usage errors.
    """
    from avel.training.predict import PredictError
    from avel.training.predict import predict as run

    given = {}
    for item in weights:
        if "=" not in item:
            raise click.UsageError(f"--weights takes NAME=PATH, got {item!r}")
        k, v = item.split("=", 1)
        given[k] = v
    try:
        res = run(
            run_dir,
            inputs,
            out,
            weights=given,
            random_weights=random_weights,
            device=device,
            batch_size=batch_size,
            top_k=top_k,
            min_score=min_score,
            plots=not no_plots,
        )
    except (PredictError, FileNotFoundError, KeyError, ValueError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(
        json.dumps(
            {
                "results": str(res.results_path),
                "plots": [str(p) for p in res.plots],
                **{k: res.report[k] for k in ("videos", "predicted", "failed", "wall_s") if k in res.report},
            },
            indent=1,
            default=str,
        )
    )
    if res.report["failed"]:
        click.echo(f"{len(res.report['failed'])} video(s) failed; see {out}/features/errors.jsonl", err=True)
        sys.exit(1)


def per_class_ap(run_dir: Path, split: str = "test") -> dict[str, float] | None:
    """``{class: AP averaged over tIoU 0.1:0.9}`` of a dense run's ``predictions_<split>.json``
    against the annotations its model card names; None when either is missing."""
    from avel.models.metrics.dense_map import evaluate_detection
    from avel.models.metrics.results_io import read_results
    from avel.training.model_card import read_model_card

    try:
        card = read_model_card(run_dir)
    except FileNotFoundError:
        return None
    preds = run_dir / f"predictions_{split}.json"
    if card["task"] != "dense" or not preds.is_file() or not Path(card["annotations"]).is_file():
        return None
    from avel.datasets.unav100 import load_unav100

    ann = load_unav100(card["annotations"])
    gt = {s.video_id: [(g.start_s, g.end_s, g.label_id) for g in s.segments] for s in ann.subset(split)}
    res = evaluate_detection(
        gt, read_results(preds, classes=ann.classes).predictions, num_classes=ann.num_classes, subset=list(gt)
    )
    return {row["label"]: row["average_ap"] for row in res.to_dict(ann.classes)["per_class"] if row["num_gt"]}


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True, help="Split whose predictions give the AP bars.")
def report(run_dir: Path, split: str) -> None:
    """Write RUN_DIR/report/report.html: streams, summary, training curves, per-class AP bars
    (dense runs: predictions_<split>.json against the annotations named in the model card)."""
    from avel.models.figures import write_run_report

    click.echo(str(write_run_report(run_dir, per_class_ap=per_class_ap(run_dir, split))))
