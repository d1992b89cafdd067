"""Clip-level video families: torchvision video models (``tv_video``) and transformers video
models (``hf_video``: VideoMAE, TimeSformer, X-CLIP).

* ``tv_video``: ``torchvision.models.get_model(model, weights=None)`` with its classifier removed
  (R(2+1)D ``fc``, S3D ``classifier``, MViT / Swin3D ``head``: the row is the pooled feature the
  classifier would see). Preprocessing is the ``VideoClassification`` preset object of
  ``get_model_weights(model).DEFAULT.transforms()`` called on the uint8 window batch (resize,
  centre crop, scale, normalise, ``B x C x T x h x w``).
* ``hf_video``: ``AutoModel`` of a transformers config (``model_type``), preprocessing by the
  model's own processor (``AutoVideoProcessor`` for VideoMAE / TimeSformer, the CLIP image
  processor for X-CLIP's frames), run on the extractor's device. Row (``output``): ``mean`` of
  the last hidden states (VideoMAE's mean pooling, before its classifier's ``fc_norm``),
  ``cls`` (first token: TimeSformer), or ``embedding`` (X-CLIP ``get_video_features``);
  ``layer`` picks another hidden state for ``mean`` / ``cls``.

Layouts: ``preprocess`` takes ``B x L x H x W x 3`` uint8 windows; ``forward`` returns ``B x D``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from avel.extractors.base import DecodeSpec, ExtractorConfig
from avel.extractors.families import (
    FamilyExtractor,
    guard_local_datasets_folder,
    load_torchvision_weights,
    torchvision_classifier,
)


@dataclass(frozen=True)
class TorchvisionVideoConfig(ExtractorConfig):
    """torchvision video backbone.

    Args:
        model: ``r2plus1d_18`` | ``r3d_18`` | ``mc3_18`` | ``s3d`` | ``mvit_v1_b`` | ``mvit_v2_s`` |
            ``swin3d_t`` | ``swin3d_s`` | ``swin3d_b``.
        fps, window_frames, stride_frames: the clip plan (the K400 models were trained on 16-frame
            clips; ``s3d`` needs at least 14 frames, ``mvit`` exactly 16 at 224 px).
        decode_short_side: optional decoder resize; None = native frames (the preset resizes).
    """

    model: str = "r2plus1d_18"
    fps: float = 15.0
    window_frames: int = 16
    stride_frames: int = 16
    decode_short_side: int | None = None


class TorchvisionVideo(FamilyExtractor):
    """torchvision video classifier without its last layer: ``B x L x H x W x 3`` -> ``B x D``."""

    name = "tv_video"
    modality = "video"
    config_cls = TorchvisionVideoConfig
    presets = {"full": {}, "tiny": {"fps": 4.0, "window_frames": 4, "stride_frames": 4}}

    def __init__(self, config: TorchvisionVideoConfig) -> None:
        super().__init__(config)
        self.model, self.dim, stripped, self.transform = torchvision_classifier(config.model)
        self.ignored_prefixes = (stripped,)

    @property
    def decode_spec(self) -> DecodeSpec:
        return DecodeSpec("video", fps=self.config.fps, short_side=self.config.decode_short_side)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def load_pretrained(self, source: str) -> None:
        """``source``: a torchvision weights name, e.g. ``R2Plus1D_18_Weights.KINETICS400_V1`` (downloads)."""
        load_torchvision_weights(self.model, source)

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``B x L x H x W x 3`` -> the preset's ``B x 3 x L x h x w`` float."""
        if batch.dtype != torch.uint8 or batch.ndim != 5 or batch.shape[-1] != 3:
            raise ValueError(
                f"{self.name}: expected uint8 B x L x H x W x 3 windows, got {tuple(batch.shape)} {batch.dtype}"
            )
        return self.transform(batch.permute(0, 1, 4, 2, 3))  # preset takes B x T x C x H x W

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(clips).flatten(1)


HF_VIDEO_OUTPUTS = ("mean", "cls", "embedding")


@dataclass(frozen=True)
class HFVideoConfig(ExtractorConfig):
    """transformers video backbone.

    Args:
        model_type: transformers model type: ``videomae`` | ``timesformer`` | ``xclip``.
        architecture: config fields of a random-init architecture (test presets); weights given
            to ``from_checkpoint`` (a ``save_pretrained`` directory or a hub id) bring their own.
        processor: processor fields overriding the class defaults (random init only).
        output: ``mean`` | ``cls`` | ``embedding`` (see module doc).
        layer: hidden state index for ``mean`` / ``cls`` (-1: the last).
        fps, window_frames, stride_frames: the clip plan (``window_frames`` = the model's
            ``num_frames``, 16 for VideoMAE-B, 8 for TimeSformer-B / X-CLIP-B/32).
        decode_short_side: optional decoder resize; None = native frames.
    """

    model_type: str = "videomae"
    architecture: dict = field(default_factory=dict)
    processor: dict = field(default_factory=dict)
    output: str = "mean"
    layer: int = -1
    fps: float = 15.0
    window_frames: int = 16
    stride_frames: int = 16
    decode_short_side: int | None = None

    def __post_init__(self) -> None:
        if self.model_type not in ("videomae", "timesformer", "xclip"):
            raise ValueError(f"hf_video: model_type must be videomae, timesformer or xclip, got {self.model_type!r}")
        if self.output not in HF_VIDEO_OUTPUTS:
            raise ValueError(f"hf_video: output must be one of {HF_VIDEO_OUTPUTS}, got {self.output!r}")


def hf_processor_class(model_type: str, kind: str) -> type:
    """The torchvision-backed processor class transformers maps ``model_type`` to (``kind``:
    ``video`` / ``image``)."""
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES

    table = VIDEO_PROCESSOR_MAPPING_NAMES if kind == "video" else IMAGE_PROCESSOR_MAPPING_NAMES
    entry = table[model_type]
    name = entry.get("torchvision") if isinstance(entry, dict) else entry
    if name is None:
        raise ValueError(f"transformers has no {kind} processor for model type {model_type!r}")
    return getattr(transformers, name)


class HFVideo(FamilyExtractor):
    """transformers video model: ``B x L x H x W x 3`` uint8 -> ``B x D``."""

    name = "hf_video"
    modality = "video"
    config_cls = HFVideoConfig
    presets = {
        "full": {},
        "tiny": {
            "fps": 4.0,
            "window_frames": 4,
            "stride_frames": 4,
            "architecture": {
                "image_size": 32,
                "patch_size": 8,
                "num_frames": 4,
                "tubelet_size": 2,
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
            },
            "processor": {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
        },
    }

    model: Any  # the library's model: its own attributes (config, encode_text, ...)

    def __init__(self, config: HFVideoConfig) -> None:
        super().__init__(config)
        guard_local_datasets_folder()
        from transformers import AutoConfig, AutoModel

        self.model = AutoModel.from_config(AutoConfig.for_model(config.model_type, **config.architecture))
        self._set_processor(hf_processor_class(config.model_type, self._processor_kind())(**config.processor))

    def _processor_kind(self) -> str:
        return "image" if self.config.model_type == "xclip" else "video"

    def _set_processor(self, processor: Any) -> None:
        self.processor = processor

    def load_pretrained(self, source: str) -> None:
        """``source``: a ``save_pretrained`` directory or a hub id holding model and processor."""
        from transformers import AutoImageProcessor, AutoModel, AutoVideoProcessor

        self.model = AutoModel.from_pretrained(source)
        loader = AutoImageProcessor if self._processor_kind() == "image" else AutoVideoProcessor
        self._set_processor(loader.from_pretrained(source))

    @property
    def decode_spec(self) -> DecodeSpec:
        return DecodeSpec("video", fps=self.config.fps, short_side=self.config.decode_short_side)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        cfg = self.model.config
        if self.config.output == "embedding":
            return (int(cfg.projection_dim),)
        return (int(getattr(cfg, "hidden_size", None) or cfg.vision_config.hidden_size),)

    def library_preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """The processor on uint8 ``B x L x H x W x 3`` -> ``pixel_values`` ``B x L x 3 x h x w``."""
        clips = batch.permute(0, 1, 4, 2, 3)  # B x L x 3 x H x W
        if self._processor_kind() == "image":
            out = self.processor(images=list(clips.flatten(0, 1)), return_tensors="pt", device=batch.device)
            pv = out["pixel_values"]
            return pv.reshape(*clips.shape[:2], *pv.shape[1:])
        return self.processor(videos=list(clips), return_tensors="pt", device=batch.device)["pixel_values"]

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8 or batch.ndim != 5 or batch.shape[-1] != 3:
            raise ValueError(
                f"{self.name}: expected uint8 B x L x H x W x 3 windows, got {tuple(batch.shape)} {batch.dtype}"
            )
        return self.library_preprocess(batch).to(batch.device)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.output == "embedding":
            out = self.model.get_video_features(pixel_values=pixel_values)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        res = self.model(pixel_values=pixel_values, output_hidden_states=c.layer != -1)
        hidden = res.last_hidden_state if c.layer == -1 else res.hidden_states[c.layer]  # B x N x D
        return hidden.mean(dim=1) if c.output == "mean" else hidden[:, 0]
