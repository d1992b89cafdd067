"""Training tasks: dense audio-visual event localization (UnAV-100-like) and AVE.

A task turns a store + annotations into datasets, tells the model builder what the data
dictates (input dims from the store manifest, classes from the annotations, sequence length),
evaluates a model on a split and writes its predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from avel.datasets.annotations import AnnotationSet
from avel.datasets.fileio import atomic_write_text
from avel.datasets.store import FeatureStore
from avel.datasets.torch_dataset import AveFeatureDataset, DenseFeatureDataset, stream_statistics
from avel.training.config import TrainConfig
from avel.training.trainer import move_to, trainable


def _train_stats(store: FeatureStore, annotations: AnnotationSet, cfg: TrainConfig, streams: list[str]):
    """Per-stream mean / std over the training videos when ``data.standardize`` is on."""
    if not cfg.data.standardize:
        return None
    videos = list(dict.fromkeys(s.video_id for s in annotations.subset(cfg.data.train_subset)))
    return stream_statistics(store, videos, streams)


class DenseTask:
    """UnAV-100-style dense localization; selection metric: average mAP over tIoU 0.1:0.9."""

    name = "dense"

    def __init__(self, store: FeatureStore, annotations: AnnotationSet) -> None:
        self.store = store
        self.annotations = annotations

    def build_datasets(self, cfg: TrainConfig) -> dict[str, DenseFeatureDataset]:
        d = cfg.data
        common = dict(
            visual_streams=d.visual_streams,
            audio_streams=d.audio_streams,
            max_seq_len=d.max_seq_len,
            stats=_train_stats(self.store, self.annotations, cfg, d.visual_streams + d.audio_streams),
        )
        crop: tuple[float, float] | None = None
        if d.crop_ratio:
            low, high = d.crop_ratio  # (min, max) fraction kept
            crop = (float(low), float(high))
        out = {
            "train": DenseFeatureDataset(
                self.store,
                self.annotations,
                subset=d.train_subset,
                training=True,
                crop_ratio=crop,
                seed=cfg.seed,
                **common,
            ),
            "validation": DenseFeatureDataset(self.store, self.annotations, subset=d.val_subset, **common),
        }
        if self.annotations.subset(d.test_subset):
            out["test"] = DenseFeatureDataset(self.store, self.annotations, subset=d.test_subset, **common)
        return out

    def model_options(self, cfg: TrainConfig, train_set: DenseFeatureDataset) -> dict[str, Any]:
        return {
            "visual_dim": train_set.visual_dim,
            "audio_dim": train_set.audio_dim,
            "num_classes": train_set.num_classes,
            "max_seq_len": cfg.data.max_seq_len,
        }

    def collate(self, dataset: DenseFeatureDataset):
        return dataset.collate

    def predict(self, model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, list[dict]]:
        """ActivityNet-style results: ``{video_id: [{"segment": [s, e], "label": id, "score": p}]}``."""
        results: dict[str, list[dict]] = {}
        for batch in loader:
            batch = move_to(batch, device)
            preds = trainable(model).predict(model(batch), batch)
            for vid, dets in zip(batch["video_ids"], preds):
                entries = results.setdefault(vid, [])
                for start_s, end_s, label_id, score in dets:
                    entries.append(
                        {"segment": [float(start_s), float(end_s)], "label": int(label_id), "score": float(score)}
                    )
        return results

    def collect(self, model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, list[dict]]:
        """Raw predictions of a shard (see :meth:`predict`)."""
        return self.predict(model, loader, device)

    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, *, subset: str
    ) -> tuple[dict[str, Any], Any]:
        return self.score([self.predict(model, loader, device)], subset=subset)

    def score(self, parts: list[dict[str, list[dict]]], *, subset: str) -> tuple[dict[str, Any], Any]:
        """mAP metrics and the results payload from the predictions of consecutive shards."""
        from avel.models.metrics.dense_map import evaluate_detection

        results: dict[str, list[dict]] = {}
        for part in parts:
            for vid, entries in part.items():
                results.setdefault(vid, []).extend(entries)
        samples = self.annotations.subset(subset)
        ground_truth = {s.video_id: [(g.start_s, g.end_s, g.label_id) for g in s.segments] for s in samples}
        predictions = {
            vid: [(e["segment"][0], e["segment"][1], e["label"], e["score"]) for e in entries]
            for vid, entries in results.items()
        }
        res = evaluate_detection(
            ground_truth, predictions, num_classes=self.annotations.num_classes, subset=list(ground_truth)
        )
        metrics = {"score": float(res.average_map), "average_mAP": float(res.average_map)}
        for t, m in zip(res.tiou_thresholds, res.map_per_threshold):
            metrics[f"mAP@{t:.1f}"] = float(m)
        payload = {
            "version": "avel",
            "results": {
                vid: [{**e, "label": self.annotations.classes[e["label"]]} for e in entries]
                for vid, entries in results.items()
            },
        }
        return metrics, payload

    def save_predictions(self, predictions: Any, path: Path) -> None:
        atomic_write_text(path, json.dumps(predictions))


class AveTask:
    """AVE segment classification (fully / weakly supervised); metric: segment accuracy."""

    name = "ave"

    def __init__(self, store: FeatureStore, annotations: AnnotationSet) -> None:
        self.store = store
        self.annotations = annotations

    def build_datasets(self, cfg: TrainConfig) -> dict[str, AveFeatureDataset]:
        d = cfg.data
        if len(d.visual_streams) != 1 or len(d.audio_streams) != 1:
            raise ValueError("the AVE task takes exactly one visual and one audio stream")
        common = dict(
            visual_stream=d.visual_streams[0],
            audio_stream=d.audio_streams[0],
            stats=_train_stats(self.store, self.annotations, cfg, d.visual_streams + d.audio_streams),
        )
        extra = None
        if d.extra_background_audio:
            import h5py

            with h5py.File(d.extra_background_audio, "r") as f:
                audio = f["avadataset"][()]
            visual = None
            if d.extra_background_visual:
                with h5py.File(d.extra_background_visual, "r") as f:
                    visual = f["avadataset"][()]
            extra = (audio, visual)
        out = {
            "train": AveFeatureDataset(
                self.store, self.annotations, subset=d.train_subset, extra_background=extra, **common
            ),
            "validation": AveFeatureDataset(self.store, self.annotations, subset=d.val_subset, **common),
        }
        if self.annotations.subset(d.test_subset):
            out["test"] = AveFeatureDataset(self.store, self.annotations, subset=d.test_subset, **common)
        return out

    def model_options(self, cfg: TrainConfig, train_set: AveFeatureDataset) -> dict[str, Any]:
        vspec = self.store.streams[cfg.data.visual_streams[0]]
        aspec = self.store.streams[cfg.data.audio_streams[0]]
        if len(vspec.feature_shape) not in (1, 3):
            raise ValueError(
                f"AVE visual stream {cfg.data.visual_streams[0]!r} must hold H x W x C region "
                f"features (VGG-19 pool5) or D-dim pooled rows (one region), got shape "
                f"{vspec.feature_shape}"
            )
        h, w, c = vspec.feature_shape if len(vspec.feature_shape) == 3 else (1, 1, vspec.feature_shape[0])
        return {
            "visual_dim": c,
            "num_regions": h * w,
            "audio_dim": aspec.feature_dim,
            "num_classes": train_set.num_classes,
            "background_id": train_set.background_id,
        }

    def collate(self, dataset: AveFeatureDataset):
        return dataset.collate

    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, *, subset: str
    ) -> tuple[dict[str, Any], Any]:
        """Segment accuracy (fully / weakly supervised: background counted as a class) or, for
        models in the CML setting, A2V / V2A exact-window accuracy (score: their mean)."""
        return self.score([self.collect(model, loader, device)], subset=subset)

    def collect(self, model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, list]:
        """Per batch, on CPU: sample ids, segment predictions and labels, or (CML) the
        segment distances and event masks."""
        out: dict[str, list] = {"sample_ids": [], "seg_preds": [], "seg_labels": [], "distances": [], "masks": []}
        for batch in loader:
            batch = move_to(batch, device)
            pred = trainable(model).predict(model(batch), batch)
            labels = batch["segment_labels"].cpu()
            out["sample_ids"] += batch["sample_ids"]
            if isinstance(pred, dict):  # CML: distances between every visual and audio segment
                out["distances"].append(torch.as_tensor(pred["distances"]).cpu())
                out["masks"].append(labels != self.annotations.background_id)
            else:
                out["seg_preds"].append(torch.as_tensor(pred).cpu())
                out["seg_labels"].append(labels)
        return out

    def score(self, parts: list[dict[str, list]], *, subset: str) -> tuple[dict[str, Any], Any]:
        """Accuracy metrics and predictions from the :meth:`collect` results of consecutive shards."""
        from avel.models.metrics.ave import cml_accuracy, segment_accuracy

        sample_ids = [i for part in parts for i in part["sample_ids"]]
        seg_preds = [t for part in parts for t in part["seg_preds"]]
        seg_labels = [t for part in parts for t in part["seg_labels"]]
        distances = [t for part in parts for t in part["distances"]]
        masks = [t for part in parts for t in part["masks"]]
        if distances:
            res = cml_accuracy(torch.cat(distances), torch.cat(masks))
            metrics = {
                "score": res.average,
                "a2v_accuracy": res.a2v,
                "v2a_accuracy": res.v2a,
                "cml_videos": res.num_videos,
                "cml_excluded": res.num_excluded,
            }
            return metrics, {"cml": metrics, "sample_ids": sample_ids}
        pred, labels = torch.cat(seg_preds), torch.cat(seg_labels)
        accuracy = segment_accuracy(pred, labels)
        predictions = dict(zip(sample_ids, pred.tolist()))
        return (
            {"score": accuracy, "segment_accuracy": accuracy, "segments": int(labels.numel())},
            {"segment_predictions": predictions},
        )

    def save_predictions(self, predictions: Any, path: Path) -> None:
        atomic_write_text(path, json.dumps(predictions))
