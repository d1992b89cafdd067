"""``avel eval``: dense localization mAP of a results file against annotations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from avel.cli.options import annotations_option, predictions_option, split_option


def _thresholds(text: str | None):
    import numpy as np

    if text is None:
        return np.linspace(0.1, 0.9, 9)
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint="--tiou") from None
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise click.BadParameter(f"thresholds must lie in (0, 1], got {text!r}", param_hint="--tiou")
    return values


@click.command("eval")
@predictions_option(required=False)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Training run directory: reads RUN_DIR/predictions_<split>.json.",
)
@annotations_option()
@click.option(
    "--dataset", default="unav100", show_default=True, type=click.Choice(["unav100"]), help="Annotation format."
)
@split_option("Subset of the annotations to evaluate (train, validation, test).")
@click.option("--tiou", "tiou_text", default=None, help="Comma-separated tIoU thresholds (default 0.1,0.2,...,0.9).")
@click.option("--per-class", is_flag=True, help="Also print the per-class AP table.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result (mAPs, per-class APs, counts) as JSON.")
def eval_(
    predictions_path: Path | None,
    run_dir: Path | None,
    annotations_path: Path,
    dataset: str,
    split: str,
    tiou_text: str | None,
    per_class: bool,
    as_json: bool,
) -> None:
    """Evaluate dense localization predictions with the ActivityNet / UnAV mAP protocol.

    Give the predictions either as --predictions FILE or as --run RUN_DIR (then the file
    RUN_DIR/predictions_<split>.json written by `avel train` is used). Labels may be class names or
    integer ids. Predictions for videos outside the split count as false positives, as in the
    reference evaluator; their number is reported.

    Exit code 0 on success, 2 on usage errors, 3 when the predictions or annotations cannot be
    read (one line naming the file and key).
    """
    from avel.datasets.unav100 import load_unav100
    from avel.models.metrics.dense_map import evaluate_detection
    from avel.models.metrics.results_io import read_results

    if (predictions_path is None) == (run_dir is None):
        raise click.UsageError("give exactly one of --predictions FILE or --run RUN_DIR")
    if run_dir is not None:
        predictions_path = run_dir / f"predictions_{split}.json"
    if predictions_path is None:  # unreachable after the check above; narrows the type
        raise click.UsageError("give exactly one of --predictions FILE or --run RUN_DIR")
    thresholds = _thresholds(tiou_text)
    annotations = load_unav100(annotations_path)
    samples = annotations.subset(split)
    if not samples:
        raise click.UsageError(f"{annotations_path}: no videos in split {split!r}")
    results = read_results(predictions_path, classes=annotations.classes)
    ground_truth = {s.video_id: [(g.start_s, g.end_s, g.label_id) for g in s.segments] for s in samples}
    res = evaluate_detection(
        ground_truth, results.predictions, tiou_thresholds=thresholds, num_classes=annotations.num_classes
    )
    split_videos = set(ground_truth)
    outside = sorted(v for v in results.predictions if v not in split_videos)
    missing = sum(1 for v in split_videos if v not in results.predictions)
    if as_json:
        out = res.to_dict(annotations.classes)
        out.update(
            {
                "predictions_file": str(predictions_path),
                "annotations": str(annotations_path),
                "split": split,
                "videos_without_predictions": missing,
                "videos_outside_split": len(outside),
            }
        )
        click.echo(json.dumps(out, indent=1))
    else:
        click.echo(f"{predictions_path} on {annotations_path} ({split}):")
        click.echo(res.format_summary())
        if per_class:
            click.echo(res.format_per_class(annotations.classes))
    if outside:
        click.echo(
            f"warning: {len(outside)} predicted video(s) are not in split {split!r} "
            f"(counted as false positives), e.g. {outside[0]!r}",
            err=True,
        )
    if missing:
        click.echo(f"note: {missing} of {len(split_videos)} videos of split {split!r} have no predictions", err=True)
    sys.exit(0)
