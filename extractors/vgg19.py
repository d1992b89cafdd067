"""VGG-19 pool5 features (AVE visual features).

Architecture: torchvision VGG configuration "E" ``features`` (indices identical to torchvision:
convs at 0,2 | 5,7 | 10,12,14,16 | 19,21,23,25 | 28,30,32,34, max pools at 4, 9, 18, 27, 36);
output of index 36 (pool5) = ``N x 512 x 7 x 7`` at 224 x 224. Checkpoint
``vgg19-dcbb9e9d.pth`` (torchvision): the ``classifier.*`` keys are accepted, their shapes
checked, and not loaded.

AVE setup (default): 16 fps, 16 frames per 1-s segment, the 16 pool5 maps averaged -> one
``7 x 7 x 512`` row (channels last, as the released Keras ``block5_pool`` features) per second.

Preprocessing variants (``preprocessing``):

* ``"ave_keras"`` (default; the original AVE features): frames resized to 224 x 224 ignoring the
  aspect ratio (CPU, one PIL bilinear resize of the full frame: the exact interpolation of the
  original frame dump is unknown, Keras ``load_img`` defaults to nearest), RGB -> BGR, subtract the caffe means
  [103.939, 116.779, 123.68] (B, G, R), no scaling.
* ``"torchvision"``: short side 256 (bilinear), centre crop 224 (CPU), ``x / 255`` then ImageNet
  mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225).

Layouts: ``preprocess`` takes ``B x 16 x 224 x 224 x 3`` uint8 and returns
``B x 16 x 3 x 224 x 224`` float; ``forward`` returns ``B x 7 x 7 x 512``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from avel.extractors import weights as W
from avel.extractors.base import DecodeSpec, Extractor, ExtractorConfig, check_frame_options
from avel.extractors.fusion import pack_conv_relu_
from avel.extractors.preprocess import to_float_channels_first

VGG19_CHECKPOINT = "vgg19-dcbb9e9d.pth"
VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# torchvision classifier shapes for the full (width 1) model, checked but not loaded.
_CLASSIFIER_SHAPES = {
    "classifier.0.weight": (4096, 25088),
    "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096),
    "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}


def vgg19_features(width_divisor: int = 1) -> nn.Sequential:
    """torchvision ``vgg19().features`` (no batch norm); channels divided by ``width_divisor``."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG19_LAYERS:
        if isinstance(v, str):  # "M"
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, v // width_divisor, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = v // width_divisor
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class VGG19Config(ExtractorConfig):
    """VGG-19 settings.

    Args:
        fps: decoded frames per second (16 for AVE).
        window_frames: frames averaged into one row (16 = one 1-s AVE segment).
        stride_frames: frames between rows (16: non-overlapping seconds).
        preprocessing: ``"ave_keras"`` or ``"torchvision"`` (see module doc).
        image_size: network input side (224).
        resize_short_side: short side before the centre crop (torchvision variant only; 256).
        width_divisor: 1 = faithful; tiny divides channels.
        frame_selection: ``"ffmpeg_fps"`` (default: the native frame nearest each 16-fps slot, as
            an ffmpeg ``fps`` / ``-r`` conversion picks it) or ``"previous"`` (last frame at or
            before the slot).
        resize: ``"pil"`` (default: one PIL bilinear resize of the full decoded frame) or
            ``"torch"`` (decoder-side scaling, then torch's antialiased bilinear resize).
    """

    fps: float = 16.0
    window_frames: int = 16
    stride_frames: int = 16
    preprocessing: str = "ave_keras"
    image_size: int = 224
    resize_short_side: int = 256
    width_divisor: int = 1
    frame_selection: str = "ffmpeg_fps"
    resize: str = "pil"

    def __post_init__(self) -> None:
        check_frame_options("vgg19", self.frame_selection, self.resize)
        if self.preprocessing not in ("ave_keras", "torchvision"):
            raise ValueError(f"vgg19: preprocessing must be 'ave_keras' or 'torchvision', got {self.preprocessing!r}")


class VGG19Extractor(Extractor[VGG19Config]):
    """VGG-19 pool5, frames of a window averaged: ``B x L x 224 x 224 x 3`` uint8 -> ``B x 7 x 7 x 512``."""

    name = "vgg19"
    modality = "video"
    presets = {
        "full": {},
        # resize "torch": decoder-side scaling, cheaper than native frames + PIL (tests, demo)
        "tiny": {
            "fps": 4.0,
            "window_frames": 4,
            "stride_frames": 4,
            "image_size": 64,
            "resize_short_side": 72,
            "width_divisor": 16,
            "resize": "torch",
        },
    }
    checkpoint_files = {"model": VGG19_CHECKPOINT}

    mean: torch.Tensor  # 3 x 1 x 1 buffer
    std: torch.Tensor  # 3 x 1 x 1 buffer

    def __init__(self, config: VGG19Config) -> None:
        super().__init__(config)
        self.features = vgg19_features(config.width_divisor)
        bgr = config.preprocessing == "ave_keras"
        mean = torch.tensor(CAFFE_BGR_MEAN if bgr else IMAGENET_MEAN, device="cpu")
        std = torch.ones(3, device="cpu") if bgr else torch.tensor(IMAGENET_STD, device="cpu")
        self.register_buffer("mean", mean.view(3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(3, 1, 1), persistent=False)

    @property
    def decode_spec(self) -> DecodeSpec:
        c = self.config
        if c.preprocessing == "ave_keras":
            return DecodeSpec(
                "video",
                fps=c.fps,
                size_hw=(c.image_size, c.image_size),
                frame_selection=c.frame_selection,
                resize=c.resize,
            )
        return DecodeSpec(
            "video",
            fps=c.fps,
            short_side=c.resize_short_side,
            center_crop=c.image_size,
            frame_selection=c.frame_selection,
            resize=c.resize,
        )

    @property
    def feature_shape(self) -> tuple[int, ...]:
        side = self.config.image_size // 32
        return (side, side, 512 // self.config.width_divisor)

    @classmethod
    def ignored_checkpoint_prefixes(cls, config: VGG19Config) -> tuple[str, ...]:
        return ("classifier.",)

    @classmethod
    def convert_checkpoint(
        cls, states: Mapping[str, Mapping[str, torch.Tensor]], config: VGG19Config
    ) -> dict[str, torch.Tensor]:
        state = dict(states["model"])
        if config.width_divisor == 1:
            bad = [
                f"{k} expected {s} got {tuple(state[k].shape)}"
                for k, s in _CLASSIFIER_SHAPES.items()
                if k in state and tuple(state[k].shape) != s
            ]
            if bad:
                raise W.CheckpointMismatch(
                    f"vgg19: classifier shapes differ from {VGG19_CHECKPOINT}: {bad}",
                    missing=[],
                    unexpected=[],
                    mismatched=[],
                )
        return state

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``B x L x S x S x 3`` -> normalised float ``B x L x 3 x S x S``."""
        s = self.config.image_size
        if batch.dtype != torch.uint8 or batch.ndim != 5 or tuple(batch.shape[2:]) != (s, s, 3):
            raise ValueError(
                f"vgg19: expected uint8 B x L x {s} x {s} x 3 windows (decode_spec resizes), got "
                f"{tuple(batch.shape)} {batch.dtype}"
            )
        x = to_float_channels_first(batch)  # B x L x 3 x S x S in [0, 255]
        if self.config.preprocessing == "ave_keras":
            x = x.flip(-3)  # RGB -> BGR
        else:
            x = x / 255.0
        return (x - self.mean) / self.std

    def fuse_for_inference(self) -> VGG19Extractor:
        """Each convolution + ReLU of ``features`` on a prepacked oneDNN weight for float32 CPU
        inference (:func:`avel.extractors.fusion.pack_conv_relu_`; rows within float rounding,
        tested); in place, for inference only; returns ``self``."""
        pack_conv_relu_(self.features)
        return self

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``B x L x 3 x S x S`` -> mean over L of pool5, channels last ``B x S/32 x S/32 x 512``."""
        b, length = frames.shape[:2]
        maps = self.features(frames.flatten(0, 1))  # B*L x 512 x 7 x 7
        maps = maps.reshape(b, length, *maps.shape[1:]).mean(dim=1)  # B x 512 x 7 x 7
        return maps.permute(0, 2, 3, 1)
