"""Frame-wise image families: torchvision (``tv_image``), timm (``timm_image``), open_clip (``clip_image``).

Every frame of a window is preprocessed by the library's own eval transform and embedded by the
model's image tower; the window's rows are pooled over time (``pooling``: ``mean`` / ``max`` /
``center``). With the default plan (``window_frames=1``) a row is one frame, as in
video_features' CLIP / ResNet / timm extractors.

Preprocessing (``preprocessing``):

* ``"pil"`` (default, exact): the library's transform object is called on each frame as a PIL
  image on the CPU, exactly as the library's eval pipeline does (timm / open_clip resize with
  PIL; torchvision presets convert PIL to tensors themselves).
* ``"tensor"``: the same transform steps (the preset object, or the Compose's Resize / CenterCrop
  / Normalize) applied to a whole ``float [0, 1]`` batch on the extractor's device. Faster, but
  antialiased tensor resizing is not PIL's filter: rows differ slightly from the ``pil`` path.

Layouts: ``preprocess`` takes ``B x L x H x W x 3`` uint8 and returns ``B x L x 3 x h x w`` float;
``forward`` returns ``B x D``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avel.extractors.base import DecodeSpec, ExtractorConfig
from avel.extractors.families import (
    FamilyExtractor,
    check_pooling,
    frames_to_pil,
    load_torchvision_weights,
    pool_frames,
    tensor_transform_ops,
    torchvision_classifier,
    uint8_frames_to_unit,
)


@dataclass(frozen=True)
class FrameImageConfig(ExtractorConfig):
    """Frame-wise image backbone.

    Args:
        model: library model name (``resnet50``, ``vit_base_patch16_224``, ``ViT-B-16``...).
        fps: decoded frames per second.
        window_frames: frames pooled into one row (1: one row per frame).
        stride_frames: frames between rows.
        pooling: ``mean`` / ``max`` / ``center`` over the window's frames.
        preprocessing: ``pil`` (exact library pipeline, CPU) or ``tensor`` (batched on the device).
        decode_short_side: optional short-side resize by the decoder (saves memory and transfer);
            None = native frames (exact library preprocessing).
        normalize: L2-normalise each frame embedding before pooling (CLIP zero-shot convention).
        model_cfg: open_clip only: an architecture config registered under ``model`` (tiny test
            models); empty = the library's own config of ``model``.
    """

    model: str = ""
    fps: float = 1.0
    window_frames: int = 1
    stride_frames: int = 1
    pooling: str = "mean"
    preprocessing: str = "pil"
    decode_short_side: int | None = None
    normalize: bool = False
    model_cfg: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("image backbone: config field 'model' (the library model name) is required")
        check_pooling("image backbone", self.pooling)
        if self.preprocessing not in ("pil", "tensor"):
            raise ValueError(f"image backbone: preprocessing must be 'pil' or 'tensor', got {self.preprocessing!r}")


class FrameImageExtractor(FamilyExtractor):
    """Shared frame-wise logic; subclasses set ``self.model``, ``self.transform``, ``self.dim``."""

    modality = "video"
    config_cls = FrameImageConfig

    transform: Any
    dim: int

    @property
    def decode_spec(self) -> DecodeSpec:
        return DecodeSpec("video", fps=self.config.fps, short_side=self.config.decode_short_side)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def library_preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """The library's eval transform on uint8 ``N x H x W x 3`` frames -> ``N x 3 x h x w``."""
        if self.config.preprocessing == "pil":
            return torch.stack([self.transform(img) for img in frames_to_pil(frames)])
        x = uint8_frames_to_unit(frames)  # N x 3 x H x W in [0, 1]
        if isinstance(self.transform, nn.Module) and not hasattr(self.transform, "transforms"):
            return self.transform(x)  # torchvision preset: takes float batches as they are
        for op in tensor_transform_ops(self.transform):
            x = op(x)
        return x

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``B x L x H x W x 3`` -> float ``B x L x 3 x h x w`` (on ``batch``'s device)."""
        if batch.dtype != torch.uint8 or batch.ndim != 5 or batch.shape[-1] != 3:
            raise ValueError(
                f"{self.name}: expected uint8 B x L x H x W x 3 windows, got {tuple(batch.shape)} {batch.dtype}"
            )
        b, length = batch.shape[:2]
        x = self.library_preprocess(batch.flatten(0, 1))
        return x.to(batch.device).reshape(b, length, *x.shape[1:])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``N x 3 x h x w`` -> ``N x D`` (the model's pooled features)."""
        return self.model(images)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``B x L x 3 x h x w`` -> ``B x D`` pooled over the L frames."""
        b, length = frames.shape[:2]
        rows = self.embed(frames.flatten(0, 1)).reshape(b, length, -1)  # B x L x D
        if self.config.normalize:
            rows = torch.nn.functional.normalize(rows, dim=-1)
        return pool_frames(rows, self.config.pooling)


class TorchvisionImage(FrameImageExtractor):
    """torchvision classification model, classifier removed; preset transform of its DEFAULT weights."""

    name = "tv_image"
    presets = {
        "full": {"model": "resnet50"},
        "tiny": {"model": "mobilenet_v3_small", "fps": 2.0, "window_frames": 2, "stride_frames": 2},
    }

    def __init__(self, config: FrameImageConfig) -> None:
        super().__init__(config)
        self.model, self.dim, stripped, self.transform = torchvision_classifier(config.model)
        self.ignored_prefixes = (stripped,)

    def load_pretrained(self, source: str) -> None:
        """``source``: a torchvision weights name, e.g. ``ResNet50_Weights.IMAGENET1K_V2`` (downloads)."""
        load_torchvision_weights(self.model, source)


class TimmImage(FrameImageExtractor):
    """``timm.create_model(model, pretrained=False, num_classes=0)``; eval transform from
    ``timm.data.resolve_data_config({}, model=...)`` + ``create_transform``."""

    name = "timm_image"
    presets = {
        "full": {"model": "vit_base_patch16_224"},
        "tiny": {"model": "test_vit", "fps": 2.0, "window_frames": 2, "stride_frames": 2},
    }

    def __init__(self, config: FrameImageConfig) -> None:
        super().__init__(config)
        import timm
        from timm.data import create_transform, resolve_data_config

        model: Any = timm.create_model(config.model, pretrained=False, num_classes=0)
        self.model = model
        self.dim = int(model.num_features)
        head = model.pretrained_cfg.get("classifier")
        self.ignored_prefixes = tuple(f"{h}." for h in ([head] if isinstance(head, str) else head or []))
        self.data_config = resolve_data_config({}, model=self.model)
        self.transform = create_transform(**self.data_config)

    def load_pretrained(self, source: str) -> None:
        """``source``: a timm name with a pretrained tag or ``hf-hub:...`` (downloads)."""
        import timm

        pretrained = timm.create_model(source, pretrained=True, num_classes=0)
        self.model.load_state_dict(pretrained.state_dict(), strict=True)


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _without_random_init_notice() -> Iterator[None]:
    """open_clip logs "No pretrained weights loaded ... Model initialized randomly" on the root
    logger for ``pretrained=None``. Our builds always pass None: the checkpoint is loaded and
    verified afterwards (``from_checkpoint``), the module is on the meta device (plans and
    specs), or it is a random-weight preset, which the store marks as such. The notice is
    dropped while the model is built, so that a real extraction does not claim random weights."""
    notice = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def _register_open_clip_config(name: str, model_cfg: dict) -> None:
    """Register ``model_cfg`` under ``name`` with open_clip (its loader reads JSON files)."""
    import open_clip

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(model_cfg))
        open_clip.add_model_config(path)


class OpenClipImage(FrameImageExtractor):
    """open_clip image tower (``encode_image``: the projected embedding) and text tower
    (:meth:`embed_text`, e.g. class names for a zero-shot baseline); transform = the library's
    ``preprocess_val`` of ``create_model_and_transforms(model, pretrained=None)``."""

    name = "clip_image"
    presets = {
        "full": {"model": "ViT-B-16"},
        "tiny": {
            "model": "avel-tiny-clip",
            "fps": 2.0,
            "window_frames": 2,
            "stride_frames": 2,
            "model_cfg": {
                "embed_dim": 32,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
            },
        },
    }

    model: Any  # the library's model: its own attributes (config, encode_text, ...)

    def __init__(self, config: FrameImageConfig) -> None:
        super().__init__(config)
        import open_clip

        if config.model_cfg:
            _register_open_clip_config(config.model, dict(config.model_cfg))
        with _without_random_init_notice():
            self.model, _, self.transform = open_clip.create_model_and_transforms(
                config.model, pretrained=None, device=torch.get_default_device()
            )
        self.dim = int(open_clip.get_model_config(config.model)["embed_dim"])

    def load_pretrained(self, source: str) -> None:
        """``source``: an open_clip pretrained tag (``laion2b_s34b_b88k``) or ``hf-hub:...`` (downloads)."""
        import open_clip

        name, pretrained = (source, None) if source.startswith("hf-hub:") else (self.config.model, source)
        model = open_clip.create_model(name, pretrained=pretrained)
        self.model.load_state_dict(model.state_dict(), strict=True)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    @torch.no_grad()
    def embed_text(self, texts: list[str], *, template: str = "{}") -> torch.Tensor:
        """Text-tower embeddings ``len(texts) x D`` of ``template.format(text)`` (L2-normalised when
        ``config.normalize``), e.g. class names for zero-shot scoring against image rows."""
        import open_clip

        device = next(self.model.parameters()).device
        tokenizer = open_clip.get_tokenizer(self.config.model)  # SigLIP's is an HF tokenizer (downloads)
        tokens = tokenizer([template.format(t) for t in texts]).to(device)
        out = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(out, dim=-1) if self.config.normalize else out
