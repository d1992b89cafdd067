"""``avel demo``: the whole loop on the embedded synthetic benchmark.

    synth (UnAV-100 format, real mp4) -> validate -> extract (tiny random-weight presets)
    -> info -> train (LoCo, small config) -> evaluate on test (mAP table) -> plots
    -> new backbone (backbone files, added to the same store) -> retrain -> compare (test mAP
       of both runs, run reports) -> predict on a new video (results JSON + figure)

Every stage is a library call the other commands also use; the demo only chains them and
times them. Random-weight extractors are used because no pretrained weights can be
downloaded here: the features still carry the synthetic signatures (colour, shape, motion,
pitch), which is what the demo needs, and the store records ``weights: random``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import click

from avel.cli.options import int_option

DEMO_EXTRACTORS = {
    # frame-wise VGG-19 (tiny) on the UnAV-100 time grid: 0.96-s windows every 0.32 s
    "vgg19": {"fps": 12.5, "window_frames": 12, "stride_frames": 4},
    # VGGish (tiny) with the UnAV-100 hop
    "vggish": {"hop_s": 0.32},
}


# The new-backbone stage: backbone files (configs/backbones) put on the UnAV-100 time grid of the
# published demo streams (0.96-s windows every 0.32 s), so the dense models can pair them.
DEMO_BACKBONES = "clip_vit_b16,wav2vec2_base_torchaudio"
GRID_VIDEO = {"fps": 12.5, "window_frames": 12, "stride_frames": 4}
GRID_AUDIO = {"window_s": 0.96, "hop_s": 0.32}


def _stage(name: str, timings: dict, fn):
    click.echo(f"== {name}", err=True)
    t0 = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - t0, 1)
    click.echo(f"   {name}: {timings[name]} s", err=True)
    return out


@click.command("demo")
@click.option("--out", default="demo-output", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@int_option("--videos", default=96, min=10, help="Synthetic videos.")
@int_option("--epochs", default=12, min=1, help="Training epochs of each model.")
@click.option("--model", default="loco", show_default=True, help="Registered dense model to train.")
@int_option("--seed", default=0, help="Seed of the synthetic data and of training.")
@int_option("--workers", default=2, min=1, help="Synthesis processes.")
@click.option(
    "--backbones",
    default=DEMO_BACKBONES,
    show_default=True,
    help="VISUAL,AUDIO backbone (files in configs/backbones) for the new-backbone stage; 'none' skips it.",
)
@click.option(
    "--max-duration-s",
    default=16.0,
    show_default=True,
    type=click.FloatRange(min=2.0),
    help="Longest synthetic video (the shortest is half of it, at most 8 s).",
)
def demo(
    out: Path, videos: int, epochs: int, model: str, seed: int, workers: int, backbones: str, max_duration_s: float
) -> None:
    """Run synth -> extract -> train -> eval -> plots on the synthetic benchmark, then
    new backbone -> retrain -> compare -> predict on a new video."""
    from avel.datasets.store import FeatureStore
    from avel.datasets.synth import SynthConfig, generate
    from avel.datasets.validate import validate
    from avel.pipeline.extract import ExtractConfig, run_extract

    timings: dict[str, float] = {}
    data = out / "data"
    store = out / "store"
    ann_path = data / "unav100_annotations.json"
    if not ann_path.exists():
        _stage(
            "synth",
            timings,
            lambda: generate(
                SynthConfig(
                    kind="unav100",
                    videos=videos,
                    seed=seed,
                    min_duration_s=min(8.0, max_duration_s / 2),
                    max_duration_s=max_duration_s,
                ),
                data,
                workers=workers,
            ),
        )
    problems = _stage("validate", timings, lambda: validate("unav100", ann_path, video_dir=data / "videos"))
    if problems:
        raise click.ClickException(f"synthetic annotations failed validation: {problems[:3]}")
    cfg = ExtractConfig(
        dataset="unav100",
        videos=str(data / "videos"),
        annotations=str(ann_path),
        extractors=list(DEMO_EXTRACTORS),
        random_weights=True,
        preset="tiny",
        extractor_options=DEMO_EXTRACTORS,
        out=str(store),
        runner="local",
        batch_size=64,
        device="cpu",
    )
    report = _stage("extract", timings, lambda: run_extract(cfg))
    if report["videos_failed"]:
        raise click.ClickException(f"extraction failed for {report['videos_failed']} videos; see {store}/errors.jsonl")
    summary = FeatureStore(store).summary()
    click.echo(
        f"store {store}: {summary['videos']} videos, streams "
        + ", ".join(f"{n} {tuple(s['feature_shape'])} {s['plan_text']}" for n, s in summary["streams"].items()),
        err=True,
    )
    result: dict[str, Any] = {
        "timings_s": timings,
        "store": str(store),
        "extract": {k: report[k] for k in ("videos_ok", "windows", "windows_per_s")},
    }
    train_result = _train(out, store, ann_path, model=model, epochs=epochs, seed=seed, timings=timings)
    if train_result is not None:
        result.update(train_result)
    if backbones.strip().lower() != "none":
        result["new_backbone"] = _new_backbone(
            out,
            data,
            store,
            ann_path,
            backbones,
            model=model,
            epochs=epochs,
            seed=seed,
            timings=timings,
            base=train_result,
            max_duration_s=max_duration_s,
        )
    result["timings_s"] = timings
    result["total_s"] = round(sum(timings.values()), 1)
    (out / "demo_result.json").write_text(json.dumps(result, indent=1, default=float))
    click.echo(json.dumps(result, indent=1, default=float))


def _train(
    out: Path,
    store: Path,
    ann_path: Path,
    *,
    model: str,
    epochs: int,
    seed: int,
    timings: dict,
    streams: tuple[str, str] = ("vgg19", "vggish"),
    tag: str = "",
):
    from avel.training.config import config_from_dict
    from avel.training.run import train

    run_dir = out / f"run-{model}{tag}"
    cfg = config_from_dict(
        {
            "task": "dense",
            "seed": seed,
            "tensorboard": False,
            "log_every_steps": 10,
            "model": {"name": model, "options": demo_model_options(model)},
            "data": {
                "visual_streams": [streams[0]],
                "audio_streams": [streams[1]],
                "max_seq_len": 64,
                "standardize": True,
            },
            "optim": {
                "epochs": epochs,
                "warmup_epochs": 1,
                "batch_size": 8,
                "lr": 1e-3,
                "weight_decay": 1e-4,
                "ema_decay": 0.99,
            },
        },
        source="avel demo",
    )
    if (run_dir / "last.pt").exists():
        import shutil

        shutil.rmtree(run_dir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRAINING ON RANDOM-WEIGHT FEATURES")
        summary = _stage(
            f"train {model}{tag}",
            timings,
            lambda: train(
                cfg,
                store=store,
                annotations=ann_path,
                out=run_dir,
                progress=lambda rec: click.echo(
                    f"   epoch {rec['epoch']}: loss {rec.get('train_total', 0):.3f} "
                    f"val mAP {rec.get('val_score', float('nan')):.3f}",
                    err=True,
                ),
            ),
        )
    test = summary.get("test", {})
    click.echo(
        "   test mAP: "
        + "  ".join(f"{k} {v:.3f}" for k, v in test.items() if k.startswith("mAP@") or k == "average_mAP"),
        err=True,
    )
    plots = _stage(f"plots{tag}", timings, lambda: _plots(run_dir, store, ann_path))
    return {"train": summary, "plots": plots, "run": str(run_dir)}


def _new_backbone(
    out: Path,
    data: Path,
    store: Path,
    ann_path: Path,
    backbones: str,
    *,
    model: str,
    epochs: int,
    seed: int,
    timings: dict,
    base: dict | None,
    max_duration_s: float,
) -> dict:
    """Same videos, new backbone: extract it into the same store, retrain, compare, predict on a new video."""
    from avel.cli.predict import per_class_ap
    from avel.datasets.synth import SynthConfig, generate
    from avel.extractors import get
    from avel.models.figures import write_run_report
    from avel.pipeline.extract import ExtractConfig, config_for_store, run_extract
    from avel.training.predict import predict

    names = [b.strip() for b in backbones.split(",") if b.strip()]
    if len(names) != 2:
        raise click.UsageError(f"--backbones takes VISUAL,AUDIO (two backbone names), got {backbones!r}")
    modalities = [get(n).modality for n in names]
    if modalities != ["video", "audio"]:
        raise click.UsageError(
            f"--backbones: {names[0]} must be a video and {names[1]} an audio backbone, got {modalities}"
        )
    grid = {names[0]: GRID_VIDEO, names[1]: GRID_AUDIO}
    cfg = config_for_store(
        store,
        ExtractConfig(
            extractors=names,
            random_weights=True,
            preset="tiny",
            extractor_options=grid,
            runner="local",
            batch_size=64,
            device="cpu",
        ),
    )
    report = _stage("extract new backbone", timings, lambda: run_extract(cfg))
    if report["videos_failed"]:
        raise click.ClickException(
            f"new-backbone extraction failed for {report['videos_failed']} videos; see {store}/errors.jsonl"
        )
    tag = "-" + "+".join(names)
    new = _train(
        out,
        store,
        ann_path,
        model=model,
        epochs=epochs,
        seed=seed,
        timings=timings,
        streams=(names[0], names[1]),
        tag=tag,
    )
    runs = {"vgg19+vggish": (base or {}).get("run"), "+".join(names): new["run"]}
    compare = {}
    for label, run in runs.items():
        if run is None:
            continue
        summary = json.loads((Path(run) / "summary.json").read_text())
        compare[label] = {
            "test_average_mAP": summary.get("test", {}).get("average_mAP"),
            "best_validation_score": summary.get("best_validation_score"),
            "report": str(write_run_report(run, per_class_ap=per_class_ap(Path(run)))),
        }
    click.echo(
        "   compare (test average mAP): "
        + "  ".join(
            f"{k} {v['test_average_mAP']:.3f}" for k, v in compare.items() if v["test_average_mAP"] is not None
        ),
        err=True,
    )
    fresh = out / "new_video"
    if not any(fresh.glob("videos/*.mp4")):
        generate(
            SynthConfig(
                kind="unav100",
                videos=1,
                seed=seed + 1000,
                min_duration_s=min(8.0, max_duration_s / 2),
                max_duration_s=max_duration_s,
            ),
            fresh,
        )
    video = sorted(fresh.glob("videos/*.mp4"))[0]
    pred = _stage(
        "predict new video",
        timings,
        lambda: predict(new["run"], [video], out / "predict", random_weights=True, min_score=0.0),
    )
    click.echo(f"   predict: {pred.results_path}, figure {pred.plots[0] if pred.plots else '-'}", err=True)
    return {
        "run": new["run"],
        "train": new["train"],
        "compare": compare,
        "predict": {"video": str(video), "results": str(pred.results_path), "plots": [str(p) for p in pred.plots]},
    }


# Small widths so the demo trains in minutes on two CPU cores (the architectures are unchanged;
# the papers' sizes are the dataclass defaults).
SMALL_MODEL_OPTIONS: dict[str, dict] = {
    "loco": {
        "encoder": {"embed_dim": 64, "num_heads": 4},
        "decoder": {"num_blocks": 1, "num_heads": 4},
        "head": {"head_dim": 64},
    },
    "unav": {"encoder": {"embed_dim": 64, "num_heads": 4}, "tdm": {"class_dim": 8}, "head": {"head_dim": 64}},
    "ccnet": {"encoder": {"embed_dim": 64, "num_heads": 4}, "tdm": {"class_dim": 8}, "head": {"head_dim": 64}},
}


def demo_model_options(model: str) -> dict:
    if model not in SMALL_MODEL_OPTIONS:
        raise click.UsageError(f"the demo has small settings for {sorted(SMALL_MODEL_OPTIONS)}, not {model!r}")
    return SMALL_MODEL_OPTIONS[model]


def _plots(run_dir: Path, store: Path, ann_path: Path) -> list[str]:
    """Timelines (ground truth vs top predictions) for the first test videos."""
    import numpy as np

    from avel.datasets.unav100 import load_unav100
    from avel.models.metrics.results_io import read_results
    from avel.models.visualize import plot_timeline

    ann = load_unav100(ann_path)
    preds = read_results(run_dir / "predictions_test.json", classes=ann.classes).predictions
    written = []
    for sample in ann.subset("test")[:4]:
        gt = np.array([(g.start_s, g.end_s, g.label_id) for g in sample.segments], np.float64).reshape(-1, 3)
        path = plot_timeline(
            run_dir / "plots" / f"{sample.video_id}_timeline.png",
            ground_truth=gt,
            predictions=preds.get(sample.video_id, np.zeros((0, 4))),
            classes=ann.classes,
            duration_s=sample.duration_s,
            title=sample.video_id,
        )
        written.append(str(path))
    return written
