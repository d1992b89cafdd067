"""``avel predict``: a trained run on new raw videos.

    card = read_model_card(run)              # the streams that trained the model
    extractors = run_extractors(card, ...)   # the same extractors, configs and weights (else refused)
    features: OUT/features (a folder store; the local runner, one video at a time, no Ray)
    model: RUN/best.pt (EMA weights when the run kept them), built from its model spec
    OUT/results.json                         # dense: UnAV-100 result JSON; AVE: per-second labels
    OUT/plots/<video>.png                    # one figure per video

A rerun on videos already in ``OUT/features`` (streams equal to the card's) builds no extractor.

Reproducing a stream means: the extractor named in the card, built from the card's config, with
weights whose digest equals the card's ``weights_sha256`` (a random-weight stream only with
``random_weights=True``, rebuilt by ``random_init`` with the extraction's seed); sampling plan and
row shape must agree too. Any difference is an error listing it: features of another
configuration would silently feed the model inputs it never saw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avel.pipeline.reproduce import PredictError, card_streams, mismatches, run_extractors
from avel.training.model_card import read_model_card, read_stream_stats

__all__ = ["PredictError", "PredictResult", "load_run_model", "mismatches", "predict", "run_extractors", "video_inputs"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


def video_inputs(paths: Sequence[str | Path]) -> dict[str, Path]:
    """``{video_id: file}`` of video files and folders (searched recursively); ids are file stems."""
    from avel.datasets.folder import video_files

    files: dict[str, Path] = {}
    for p in map(Path, paths):
        found = list(video_files(p)) if p.is_dir() else [(p.stem, p)] if p.is_file() else None
        if found is None:
            raise FileNotFoundError(f"{p}: no such video file or folder")
        for vid, f in found:
            if vid in files and files[vid] != f:
                raise PredictError(f"two videos map to id {vid!r}: {files[vid]} and {f}; rename one")
            files[vid] = Path(f)
    if not files:
        raise PredictError(f"no videos found in {', '.join(map(str, paths))}")
    return files


def load_run_model(run_dir: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The run's best (else last) checkpoint as an eval model, and the checkpoint's config."""
    from avel.models.registry import build_model

    run = Path(run_dir)
    path = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no best.pt or last.pt")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    spec = ckpt["model_spec"]
    model = build_model(spec["name"], options=spec["options"])
    model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    return model.to(device).eval(), ckpt["config"]


@dataclass
class PredictResult:
    results_path: Path
    plots: list[Path]
    report: dict[str, Any]


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    weights: Mapping[str, str] | None = None,
    random_weights: bool = False,
    device: str = "auto",
    batch_size: int = 16,
    top_k: int = 3,
    min_score: float = 0.05,
    plots: bool = True,
) -> PredictResult:
    """Extract the run's streams from ``inputs``, apply the model, write results and plots (module doc)."""
    from avel.datasets.store import FeatureStore, StoreWriter
    from avel.pipeline.engine import run_local
    from avel.pipeline.jobs import plan_jobs

    card = read_model_card(run_dir)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    files = video_inputs(inputs)
    out = Path(out)
    store_root = out / "features"
    streams = [e["stream"] for _, e in card_streams(card)]
    plan = plan_jobs(files, store_root=store_root, streams=streams, retry_failed=True)
    report: dict[str, Any] = {}
    if plan.todo or not _store_matches_card(store_root, card):
        # build (and verify) the extractors only when something is left to extract
        extractors = run_extractors(card, weights=weights, random_weights=random_weights, device=dev)
        writer = StoreWriter(
            store_root,
            dataset="folder",
            streams={se.stream: se.spec() for se in extractors},
            extra={"predict": {"run": str(run_dir)}},
        )
        report = run_local(plan.todo, extractors, writer, batch_size=batch_size, device=dev).as_dict()
    store = FeatureStore(store_root)
    ready = [v for v in files if all(store.has(v, s) for s in streams)]
    failed = sorted(set(files) - set(ready))
    model, _ = load_run_model(run_dir, dev)
    stats = read_stream_stats(run_dir)
    if card["task"] == "dense":
        payload, figures = _predict_dense(card, model, store, ready, stats, dev, out, top_k, min_score, plots)
    else:
        payload, figures = _predict_ave(card, model, store, ready, stats, dev, out, plots)
    payload["external_data"] = {
        "run": str(run_dir),
        "streams": [e for _, e in card_streams(card)],
        "failed_videos": failed,
    }
    results_path = out / "results.json"
    results_path.write_text(json.dumps(payload, indent=1, default=float))
    return PredictResult(
        results_path,
        figures,
        {**report, "videos": len(files), "predicted": len(ready), "failed": failed, "reused": len(plan.done)},
    )


def _store_matches_card(store_root: Path, card: Mapping[str, Any]) -> bool:
    """True when ``store_root`` holds every card stream with the card's extractor, config, weights and plan."""
    from avel.datasets.store import MANIFEST, FeatureStore

    if not (store_root / MANIFEST).is_file():
        return False
    specs = FeatureStore(store_root).streams
    for _, e in card_streams(card):
        spec = specs.get(e["stream"])
        if spec is None or (
            spec.extractor,
            dict(spec.config),
            spec.weights_sha256,
            spec.plan.to_dict(),
            list(spec.feature_shape),
        ) != (e["extractor"], dict(e["config"]), e["weights_sha256"], dict(e["plan"]), list(e["feature_shape"])):
            return False
    return True


def _annotations(card: Mapping[str, Any], video_ids: Sequence[str]):
    from avel.datasets.annotations import AnnotationSet, Sample

    return AnnotationSet(
        "folder",
        list(card["classes"]),
        [Sample(v, v, None, None, []) for v in video_ids],
        background_id=card.get("background_id"),
    )


def _predict_dense(card, model, store, video_ids, stats, device, out, top_k, min_score, plots):
    from torch.utils.data import DataLoader

    from avel.datasets.torch_dataset import DenseFeatureDataset
    from avel.training.tasks import DenseTask

    classes = list(card["classes"])
    results: dict[str, list[dict]] = {}
    figures: list[Path] = []
    if video_ids:
        visual = [e["stream"] for e in card["streams"]["visual"]]
        audio = [e["stream"] for e in card["streams"]["audio"]]
        ds = DenseFeatureDataset(
            store,
            _annotations(card, video_ids),
            subset=None,
            visual_streams=visual,
            audio_streams=audio,
            max_seq_len=int(card["model"]["options"].get("max_seq_len", 0) or 0),
            stats=stats,
        )
        with torch.no_grad():
            raw = DenseTask(store, ds.annotations).predict(
                model, DataLoader(ds, batch_size=1, collate_fn=ds.collate), device
            )
        for vid in video_ids:
            dets = sorted(raw.get(vid, []), key=lambda d: -d["score"])
            results[vid] = [{"segment": d["segment"], "label": classes[d["label"]], "score": d["score"]} for d in dets]
            if plots:
                from avel.models.figures import plot_video

                figures.append(
                    plot_video(
                        out / "plots" / f"{_safe(vid)}.png",
                        video_id=vid,
                        classes=classes,
                        predictions=[(*d["segment"], d["label"], d["score"]) for d in dets],
                        duration_s=float(store.meta(vid).duration_s or 0) or None,
                        top_k=top_k,
                        min_score=min_score,
                        similarity=_similarity_strip(store, vid, visual, audio),
                    )
                )
    return {"version": "avel-predict", "results": results}, figures


def _predict_ave(card, model, store, video_ids, stats, device, out, plots):
    """Per-row labels of AVE models: the rows of each video in consecutive 10-row clips (the last
    clip padded by repeating its last row; padded rows are dropped from the output)."""
    from avel.datasets.torch_dataset import _standardize, align_rows

    classes = list(card["classes"])
    bg = card.get("background_id")
    vname, aname = card["streams"]["visual"][0]["stream"], card["streams"]["audio"][0]["stream"]
    labels: dict[str, list[dict]] = {}
    figures: list[Path] = []
    for vid in video_ids:
        arrays = align_rows(
            vid,
            {
                "v": _standardize(store.read(vid, vname), stats.get(vname)),
                "a": _standardize(store.read(vid, aname), stats.get(aname)),
            },
        )
        v, a = arrays["v"].astype(np.float32), arrays["a"].astype(np.float32)
        n = v.shape[0]
        start_s, end_s = store.times(vid, vname)
        preds: list[int] = []
        for k in range(0, n, 10):
            idx = np.minimum(np.arange(k, k + 10), n - 1)
            batch = {
                "sample_ids": [vid],
                "video_ids": [vid],
                "visual": torch.from_numpy(v[idx])[None].to(device),
                "audio": torch.from_numpy(a[idx])[None].to(device),
                "segment_labels": torch.full((1, 10), bg if bg is not None else 0, device=device),
                "video_labels": torch.zeros(1, len(classes), device=device),
                "is_background_video": torch.tensor([False]),
            }
            with torch.no_grad():
                pred = model.predict(model(batch), batch)
            if isinstance(pred, dict):
                raise PredictError(
                    "this AVE model is a cross-modal localization (CML) model: it matches clips "
                    "across modalities and gives no per-second labels"
                )
            preds += [int(x) for x in torch.as_tensor(pred).reshape(-1)[: min(10, n - k)].tolist()]
        labels[vid] = [
            {
                "start_s": float(s),
                "end_s": float(e),
                "label": classes[p] if p < len(classes) else "background",
                "label_id": p,
            }
            for s, e, p in zip(start_s[:n], end_s[:n], preds)
        ]
        if plots:
            from avel.models.figures import plot_video

            events = [(float(s), float(e), p, 1.0) for s, e, p in zip(start_s[:n], end_s[:n], preds) if p != bg]
            figures.append(
                plot_video(
                    out / "plots" / f"{_safe(vid)}.png",
                    video_id=vid,
                    classes=classes,
                    predictions=events,
                    duration_s=float(end_s[n - 1]),
                    top_k=n,
                    min_score=0.0,
                )
            )
    return {"version": "avel-predict-ave", "labels": labels}, figures


def _similarity_strip(store, vid: str, visual: list[str], audio: list[str]) -> np.ndarray | None:
    """Per-row cosine similarity of the visual and audio rows when they share a dimension, else None."""
    from avel.models.visualize import cross_similarity

    if len(visual) != 1 or len(audio) != 1:
        return None
    v = store.read(vid, visual[0]).reshape(store.num_rows(vid, visual[0]), -1)
    a = store.read(vid, audio[0]).reshape(store.num_rows(vid, audio[0]), -1)
    if v.shape[1] != a.shape[1]:
        return None
    n = min(len(v), len(a))
    return np.diag(cross_similarity(v[:n], a[:n]))


def _safe(video_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in video_id)
