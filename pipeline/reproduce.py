"""Rebuild the extractors that made a trained run's streams, and prove they reproduce them.

A run's model card (:mod:`avel.training.model_card`) records per stream the extractor name, its
config, weights digest, sampling plan and row shape. :func:`run_extractors` builds each
extractor from that config (weights from the caller, a backbone file's ``weights:``, or random
weights when the card says ``random`` and the caller allows it) and refuses any difference
(:func:`mismatches`). Used by ``avel predict`` (:mod:`avel.training.predict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class PredictError(ValueError):
    """The run cannot be applied to these videos as asked (mismatching extractor, missing weights...)."""


def card_streams(card: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(role, entry)`` of every stream of a model card, visual first."""
    return [(role, e) for role in ("visual", "audio") for e in card["streams"][role]]


def mismatches(entry: Mapping[str, Any], ext: Any) -> list[str]:
    """Differences between a card stream entry and an extractor instance (empty: it reproduces the stream)."""
    diffs = []
    want_cfg, have_cfg = dict(entry["config"]), ext.config.to_dict()
    for key in sorted(set(want_cfg) | set(have_cfg)):
        if want_cfg.get(key) != have_cfg.get(key):
            diffs.append(f"config.{key}: run {want_cfg.get(key)!r}, here {have_cfg.get(key)!r}")
    if entry["weights_sha256"] != ext.weights_sha256:
        diffs.append(f"weights_sha256: run {entry['weights_sha256']}, here {ext.weights_sha256}")
    if dict(entry["plan"]) != ext.plan.to_dict():
        diffs.append(f"plan: run {entry['plan']}, here {ext.plan.to_dict()}")
    if list(entry["feature_shape"]) != list(ext.feature_shape):
        diffs.append(f"feature_shape: run {entry['feature_shape']}, here {list(ext.feature_shape)}")
    return diffs


def run_extractors(
    card: Mapping[str, Any],
    *,
    weights: Mapping[str, str] | None = None,
    random_weights: bool = False,
    device: str | torch.device = "cpu",
) -> list[Any]:
    """The run's streams as :class:`~avel.pipeline.engine.StreamExtractor` s, verified against the card.

    Args:
        card: the run's model card.
        weights: ``{stream or extractor name: checkpoint}``; default: a backbone file's ``weights:``.
        random_weights: allow rebuilding streams the card records as ``random`` (tests, demo).
        device: extractor device.

    Raises:
        PredictError: an extractor is unknown, has no weights, or does not reproduce its stream.
    """
    from avel.extractors import get
    from avel.pipeline.engine import StreamExtractor

    weights = dict(weights or {})
    out = []
    for _, entry in card_streams(card):
        stream, name = entry["stream"], entry["extractor"]
        try:
            cls = get(name)
        except KeyError:
            raise PredictError(
                f"stream {stream!r} was made by extractor {name!r}, which is not registered here "
                f"(a backbone file? put it in configs/backbones or AVEL_BACKBONES)"
            ) from None
        cfg = dict(entry["config"])
        preset = cfg.pop("preset", "full")
        source = weights.get(stream) or weights.get(name)
        digest = entry["weights_sha256"]
        try:
            if source:
                ext = cls.from_checkpoint(source, device=device, preset=preset, **cfg)
            elif digest == "random":
                if not random_weights:
                    raise PredictError(
                        f"stream {stream!r} was extracted with random weights; pass --random-weights "
                        f"to rebuild them (tests and demos only)"
                    )
                ext = cls.random_init(device=device, preset=preset, **cfg)
            elif default_weights := getattr(cls, "default_weights", None):  # backbone files name theirs
                ext = cls.from_checkpoint(default_weights, device=device, preset=preset, **cfg)
            else:
                raise PredictError(
                    f"stream {stream!r} needs the weights of {name!r} with sha256 {digest}: pass "
                    f"--weights {stream}=PATH"
                )
        except (TypeError, ValueError, FileNotFoundError) as e:
            if isinstance(e, PredictError):
                raise
            raise PredictError(f"stream {stream!r} ({name}): {e}") from e
        diffs = mismatches(entry, ext)
        if diffs:
            raise PredictError(
                f"stream {stream!r}: extractor {name!r} does not reproduce the run's features:\n  " + "\n  ".join(diffs)
            )
        out.append(StreamExtractor(stream, ext))
    return out
