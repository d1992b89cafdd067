"""The model card of a run: which streams (extractor, config, weights digest) trained it.

``RUN/model_card.json`` is written by :func:`avel.training.run.fit_and_test` before the first
epoch; ``avel predict`` reads it to extract exactly these streams from new videos and refuses
extractors whose configuration or weights differ. With ``data.standardize`` the per-stream
training mean / std are saved beside it (``RUN/stream_stats.npz``, arrays ``<stream>.mean`` /
``<stream>.std``) so new videos are standardized like the training videos.

Card fields::

    format: "avel-model-card/1"
    task, model {name, options}, classes, background_id, standardize
    store, annotations: the paths the run was trained from
    streams: {visual: [...], audio: [...]}, each
        {stream, extractor, config, weights_sha256, plan, feature_shape, decode}
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from avel.datasets.store import FeatureStore

CARD = "model_card.json"
STATS = "stream_stats.npz"
FORMAT = "avel-model-card/1"


def stream_entry(store: FeatureStore, stream: str) -> dict[str, Any]:
    """The card entry of one store stream (what an extractor must reproduce)."""
    if stream not in store.streams:
        raise KeyError(f"stream {stream!r} is not in {store.root}; streams: {sorted(store.streams)}")
    spec = store.streams[stream]
    provenance = dict(spec.provenance or {})
    return {
        "stream": stream,
        "extractor": spec.extractor,
        "config": dict(spec.config),
        "weights_sha256": spec.weights_sha256,
        "plan": spec.plan.to_dict(),
        "feature_shape": list(spec.feature_shape),
        "decode": provenance.get("decode"),
    }


def build_model_card(
    *,
    task: str,
    model_name: str,
    options: Mapping[str, Any],
    store: FeatureStore,
    visual_streams: list[str],
    audio_streams: list[str],
    classes: list[str],
    background_id: int | None,
    annotations: str | Path,
    standardize: bool,
) -> dict[str, Any]:
    """The card as a JSON-ready dict (see module doc)."""
    return {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "task": task,
        "model": {"name": model_name, "options": dict(options)},
        "classes": list(classes),
        "background_id": background_id,
        "standardize": bool(standardize),
        "store": str(store.root),
        "annotations": str(annotations),
        "streams": {
            "visual": [stream_entry(store, s) for s in visual_streams],
            "audio": [stream_entry(store, s) for s in audio_streams],
        },
    }


def write_model_card(
    run_dir: str | Path, card: Mapping[str, Any], stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> Path:
    """Write ``RUN/model_card.json`` (and ``RUN/stream_stats.npz`` when ``stats``)."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if stats:
        arrays: dict[str, Any] = {
            f"{s}.{k}": v for s, (mean, std) in stats.items() for k, v in (("mean", mean), ("std", std))
        }
        np.savez(run / STATS, **arrays)
    path = run / CARD
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def read_model_card(run_dir: str | Path) -> dict[str, Any]:
    """The card of a run directory; errors name the file."""
    path = Path(run_dir) / CARD
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no model card (runs trained before model cards existed have none; "
            f"retrain, or write one with avel.training.model_card)"
        )
    card = json.loads(path.read_text(encoding="utf-8"))
    if card.get("format") != FORMAT:
        raise ValueError(f"{path}: key 'format' is {card.get('format')!r}, expected {FORMAT!r}")
    return card


def read_stream_stats(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{stream: (mean, std)}`` saved with the card (empty when the run did not standardize)."""
    path = Path(run_dir) / STATS
    if not path.is_file():
        return {}
    with np.load(path) as z:
        names = {k.rsplit(".", 1)[0] for k in z.files}
        return {s: (z[f"{s}.mean"], z[f"{s}.std"]) for s in names}
