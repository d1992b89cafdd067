"""The extractor contract: a new extractor is a config and a forward; the base derives the rest."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import avel.extractors as E
from avel.extractors.base import PROBE_SIDE, DecodeSpec, Extractor, ExtractorConfig


@dataclass(frozen=True)
class LoudnessConfig(ExtractorConfig):
    sample_rate: int = 8000
    window_s: float = 0.5
    hop_s: float = 0.25
    dim: int = 6


class LoudnessExtractor(Extractor[LoudnessConfig]):
    """Audio: RMS of 4 sub-windows -> Linear(4, dim)."""

    name = "test_loudness"
    modality = "audio"

    def __init__(self, config: LoudnessConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(4, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.reshape(x.shape[0], 4, -1).pow(2).mean(-1).sqrt()  # B x 4
        return self.proj(rms)


@dataclass(frozen=True)
class ColorConfig(ExtractorConfig):
    fps: float = 4.0
    window_frames: int = 4
    stride_frames: int = 2


class ColorExtractor(Extractor[ColorConfig]):
    """Video: mean colour of each frame of the window, channels last: ``B x T x 3``."""

    name = "test_color"
    modality = "video"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


def test_a_config_and_a_forward_make_an_audio_extractor():
    ext = LoudnessExtractor.random_init(seed=1, dim=5)
    assert LoudnessExtractor.config_cls is LoudnessConfig  # from the type parameter
    assert ext.plan.describe() == "audio 8000 Hz, window 0.5 s, hop 0.25 s"
    assert ext.decode_spec == DecodeSpec("audio", sample_rate=8000)
    assert ext.feature_shape == (5,)  # traced on the meta device
    cut = ext.windows(torch.randn(8000))  # 1 s -> rows at 0, 0.25, 0.5 s
    rows = ext.extract(cut.data)
    assert rows.shape == (3, 5) and rows.dtype == torch.float32
    assert ext.describe()["feature_shape"] == [5] and ext.describe()["weights_sha256"] == E.RANDOM_WEIGHTS


def test_a_config_and_a_forward_make_a_video_extractor():
    ext = ColorExtractor.build()
    assert ext.decode_spec == DecodeSpec("video", fps=4.0)  # native frame size
    assert ext.feature_shape == (4, 3)
    frames = torch.randint(0, 256, (9, 10, 12, 3), dtype=torch.uint8)
    rows = ext.extract(ext.windows(frames).data)
    assert rows.shape == (3, 4, 3)
    torch.testing.assert_close(rows[1, 0], frames[2].float().mean(dim=(0, 1)))
    assert PROBE_SIDE == 224


def test_forward_is_abstract():
    class NoForward(Extractor[ColorConfig]):
        name = "test_no_forward"

    with pytest.raises(TypeError, match="abstract"):
        NoForward.build()


def test_a_config_without_window_fields_needs_its_own_plan():
    class Planless(Extractor[ExtractorConfig]):
        name = "test_planless"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(TypeError, match=r"lacks the video window fields \(fps, window_frames, stride_frames\)"):
        _ = Planless.build().plan


def test_config_cls_must_agree_with_the_type_parameter():
    with pytest.raises(TypeError, match="config_cls ColorConfig differs from its type parameter LoudnessConfig"):

        class Bad(Extractor[LoudnessConfig]):
            config_cls = ColorConfig


# RAFT makes tracing i3d / i3d_flow take seconds; i3d_rgb covers the I3D trunk.
TRACED = ["i3d_rgb", "vgg19", "vggish", "onepeace_image", "onepeace_audio", "onepeace_video_k400"]


@pytest.mark.parametrize("name", TRACED)
def test_declared_feature_shapes_agree_with_the_traced_ones(name):
    ext = E.get(name).build(device="meta", preset="tiny")
    assert ext.feature_shape == ext.traced_feature_shape()
