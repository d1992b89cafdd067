"""VGGish (Hershey et al. 2017) audio embeddings with the TF VGGish log-mel frontend in torch.

Frontend (TF ``vggish_input`` / ``mel_features``, computed on the device): mono 16 kHz float
waveform in [-1, 1] -> frames of 400 samples every 160 -> periodic Hann
(``0.5 - 0.5 cos(2 pi n / 400)``) -> ``|rfft_512|`` (magnitude) -> HTK mel matrix
(``1127 ln(1 + f / 700)``, 64 bands 125-7500 Hz, triangles evaluated at the 257 linear bin
centres ``linspace(0, 8000, 257)``, DC bin zeroed) -> ``log(mel + 0.01)`` -> 96 x 64 example.

Windows: one plan row = one example. An example spans 96 STFT frames = ``95 * 160 + 400 = 15600``
samples (0.975 s) although its nominal length (the plan window, row times) is 0.96 s; the
extractor therefore declares ``context_samples = 240`` (zeros past the end of the audio). With
hop 0.32 s (UnAV-100) or 0.96 s this reproduces TF's framing exactly; the only difference is
that a final row whose last 240 samples lie past the end of the audio is kept (zero-filled)
where TF would drop it.

Model (torchvggish key layout, checkpoint ``vggish-10086976.pth``): conv 64-M-128-M-256-256-M-
512-512-M (3x3, pad 1, ReLU, 2x2 max pool) -> ``N x 512 x 6 x 4`` -> NHWC flatten 12288 ->
Linear 4096 -> ReLU -> Linear 4096 -> ReLU -> Linear 128 [-> ReLU].

Final ReLU (``final_relu``, default ``True``): the embedding passes through a ReLU, as in
torchvggish, both video_features versions and the TF slim VGGish of 2017-2019 (its ``arg_scope``
gave the last fully connected layer a ReLU; a later TF revision set ``activation_fn=None``). The
released AVE VGGish features (``audio_feature_noisy.h5``) hold no negative value in 227,840 and
about 65 % exact zeros, so they are post-ReLU; ``final_relu=False`` gives the raw pre-activation
embedding of the later TF revision. PCA + 8-bit quantisation (``postprocess=True``, file
``vggish_pca_params-970ea276.pth``) is off by default, as for the released features.

Layouts: ``preprocess`` takes ``B x 15600`` float32 waveforms (window + context), returns
``B x 1 x 96 x 64`` log-mel examples; ``forward`` returns ``B x 128``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from avel.extractors import weights as W
from avel.extractors.base import Extractor, ExtractorConfig
from avel.extractors.fusion import pack_conv_relu_

VGGISH_CHECKPOINT = "vggish-10086976.pth"
VGGISH_PCA_CHECKPOINT = "vggish_pca_params-970ea276.pth"


def hertz_to_mel(f_hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale ``1127 ln(1 + f / 700)``."""
    return 1127.0 * torch.log1p(f_hz / 700.0)


def tf_mel_matrix(
    *,
    num_mel_bins: int = 64,
    num_spectrogram_bins: int = 257,
    sample_rate: int = 16000,
    lower_hz: float = 125.0,
    upper_hz: float = 7500.0,
) -> torch.Tensor:
    """``num_spectrogram_bins x num_mel_bins`` float64 matrix built as TF VGGish's
    ``spectrogram_to_mel_matrix``: triangles in mel space between ``num_mel_bins + 2`` equally
    spaced edges, evaluated at the linear bin frequencies ``linspace(0, sr/2, bins)``; row 0 (DC) = 0."""
    if not 0.0 <= lower_hz < upper_hz <= sample_rate / 2:
        raise ValueError(
            f"mel band edges must satisfy 0 <= lower ({lower_hz}) < upper ({upper_hz}) <= nyquist ({sample_rate / 2})"
        )
    bins_mel = hertz_to_mel(
        torch.linspace(0.0, sample_rate / 2, num_spectrogram_bins, dtype=torch.float64, device="cpu")
    )
    edges = torch.linspace(
        1127.0 * math.log1p(lower_hz / 700.0),
        1127.0 * math.log1p(upper_hz / 700.0),
        num_mel_bins + 2,
        dtype=torch.float64,
        device="cpu",
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # num_mel_bins each
    lower_slope = (bins_mel[:, None] - lower) / (center - lower)
    upper_slope = (upper - bins_mel[:, None]) / (upper - center)
    m = torch.clamp(torch.minimum(lower_slope, upper_slope), min=0.0)
    m[0, :] = 0.0
    return m


class VGGishFrontend(nn.Module):
    """TF VGGish log-mel: ``B x S`` waveform -> ``B x F x num_mel_bins`` (F = 1 + (S - win) // hop).

    Args:
        sample_rate: 16000.
        stft_window_samples: 400 (25 ms).
        stft_hop_samples: 160 (10 ms).
        fft_length: 512 (next power of two of the window).
        num_mel_bins / lower_hz / upper_hz: 64 bands, 125-7500 Hz.
        log_offset: 0.01.
    """

    window: torch.Tensor  # stft_window_samples buffer (periodic Hann)
    mel_matrix: torch.Tensor  # 257 x 64 buffer

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        stft_window_samples: int = 400,
        stft_hop_samples: int = 160,
        fft_length: int = 512,
        num_mel_bins: int = 64,
        lower_hz: float = 125.0,
        upper_hz: float = 7500.0,
        log_offset: float = 0.01,
    ) -> None:
        super().__init__()
        self.win, self.hop, self.fft_length, self.log_offset = (
            stft_window_samples,
            stft_hop_samples,
            fft_length,
            log_offset,
        )
        n = torch.arange(stft_window_samples, dtype=torch.float64, device="cpu")
        window = 0.5 - 0.5 * torch.cos(2 * math.pi / stft_window_samples * n)  # periodic Hann
        self.register_buffer("window", window.float(), persistent=False)
        mel = tf_mel_matrix(
            num_mel_bins=num_mel_bins,
            num_spectrogram_bins=fft_length // 2 + 1,
            sample_rate=sample_rate,
            lower_hz=lower_hz,
            upper_hz=upper_hz,
        )
        self.register_buffer("mel_matrix", mel.float(), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.shape[-1] < self.win:
            raise ValueError(f"VGGish frontend needs >= {self.win} samples, got {wave.shape[-1]}")
        frames = wave.float().unfold(-1, self.win, self.hop) * self.window  # B x F x win
        mag = torch.fft.rfft(frames, n=self.fft_length).abs()  # B x F x 257
        return torch.log(mag @ self.mel_matrix + self.log_offset)  # B x F x 64


class VGGishNet(nn.Module):
    """torchvggish ``VGG`` with keys ``features.*`` / ``embeddings.*``.

    Args:
        width_divisor: 1 = faithful; >1 divides conv channels and hidden sizes (tiny).
        embedding_size: 128.
        final_relu: apply ReLU to the embedding (torchvggish, video_features, the released
            features) or not (the later TF revision).
        example_hw: input example size (96, 64).
    """

    def __init__(
        self,
        *,
        width_divisor: int = 1,
        embedding_size: int = 128,
        final_relu: bool = True,
        example_hw: tuple[int, int] = (96, 64),
    ) -> None:
        super().__init__()
        d = width_divisor
        layers: list[nn.Module] = []
        c_in = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if isinstance(v, str):  # "M"
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, v // d, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = v // d
        self.features = nn.Sequential(*layers)
        h, w = example_hw[0] // 16, example_hw[1] // 16
        hidden = 4096 // d
        head: list[nn.Module] = [
            nn.Linear(c_in * h * w, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, embedding_size),
        ]
        if final_relu:
            head.append(nn.ReLU(inplace=True))
        self.embeddings = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 1 x 96 x 64`` -> ``B x 128``."""
        x = self.features(x)  # B x 512 x 6 x 4
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # NHWC flatten, as TF
        return self.embeddings(x)


@dataclass(frozen=True)
class VGGishConfig(ExtractorConfig):
    """VGGish settings.

    Args:
        sample_rate: 16000 (TF VGGish).
        window_s: nominal example length (0.96 s = 96 frames of 10 ms).
        hop_s: example hop: 0.96 (TF default), 0.32 (UnAV-100), 1.0 (AVE, one per segment).
        num_frames: STFT frames per example (96).
        num_mel_bins: 64.
        lower_hz / upper_hz: mel range 125-7500 Hz.
        stft_window_samples / stft_hop_samples / fft_length: 400 / 160 / 512.
        log_offset: 0.01.
        width_divisor: 1 = faithful; tiny divides channels / hidden sizes.
        embedding_size: 128.
        final_relu: ReLU on the embedding; default True (torchvggish, video_features, the
            released UnAV-100 / AVE features, which hold no negative value).
        postprocess: PCA + clip [-2, 2] + 8-bit quantisation (``vggish_pca_params-970ea276.pth``).
    """

    sample_rate: int = 16000
    window_s: float = 0.96
    hop_s: float = 0.96
    num_frames: int = 96
    num_mel_bins: int = 64
    lower_hz: float = 125.0
    upper_hz: float = 7500.0
    stft_window_samples: int = 400
    stft_hop_samples: int = 160
    fft_length: int = 512
    log_offset: float = 0.01
    width_divisor: int = 1
    embedding_size: int = 128
    final_relu: bool = True
    postprocess: bool = False


class VGGishExtractor(Extractor[VGGishConfig]):
    """VGGish embeddings: ``B x 15600`` float32 16 kHz waveforms -> ``B x 128`` (see module doc)."""

    name = "vggish"
    modality = "audio"
    presets = {"full": {}, "tiny": {"width_divisor": 16, "embedding_size": 16}}
    checkpoint_files = {"model": VGGISH_CHECKPOINT, "pca": VGGISH_PCA_CHECKPOINT}

    def __init__(self, config: VGGishConfig) -> None:
        super().__init__(config)
        c = config
        if abs(c.window_s * c.sample_rate - c.num_frames * c.stft_hop_samples) > 0.5:
            raise ValueError(
                f"vggish: window_s ({c.window_s}) must equal num_frames * stft_hop_samples / "
                f"sample_rate ({c.num_frames * c.stft_hop_samples / c.sample_rate})"
            )
        self.frontend = VGGishFrontend(
            sample_rate=c.sample_rate,
            stft_window_samples=c.stft_window_samples,
            stft_hop_samples=c.stft_hop_samples,
            fft_length=c.fft_length,
            num_mel_bins=c.num_mel_bins,
            lower_hz=c.lower_hz,
            upper_hz=c.upper_hz,
            log_offset=c.log_offset,
        )
        self.net = VGGishNet(
            width_divisor=c.width_divisor,
            embedding_size=c.embedding_size,
            final_relu=c.final_relu,
            example_hw=(c.num_frames, c.num_mel_bins),
        )
        if c.postprocess:  # identity PCA until the checkpoint's is loaded (random-weight presets keep it)
            self.pca_eigen_vectors = nn.Parameter(torch.eye(c.embedding_size), requires_grad=False)
            self.pca_means = nn.Parameter(torch.zeros(c.embedding_size, 1), requires_grad=False)

    @property
    def context_samples(self) -> int:  # type: ignore[override]
        return self.config.stft_window_samples - self.config.stft_hop_samples

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.config.embedding_size,)

    # -- weights ---------------------------------------------------------------------------
    @classmethod
    def roles_for(cls, config: VGGishConfig) -> tuple[str, ...]:
        return ("model", "pca") if config.postprocess else ("model",)

    @classmethod
    def convert_checkpoint(
        cls, states: Mapping[str, Mapping[str, torch.Tensor]], config: VGGishConfig
    ) -> dict[str, torch.Tensor]:
        out = {f"net.{k}": v for k, v in states["model"].items()}
        if "pca" in states:
            pca = states["pca"]
            for key in ("pca_eigen_vectors", "pca_means"):
                if key not in pca:
                    raise W.CheckpointMismatch(
                        f"vggish: {VGGISH_PCA_CHECKPOINT} lacks {key!r}; keys: {sorted(pca)}",
                        missing=[key],
                        unexpected=[],
                        mismatched=[],
                    )
            out["pca_eigen_vectors"] = pca["pca_eigen_vectors"]
            out["pca_means"] = pca["pca_means"].reshape(-1, 1)
        return out

    # -- compute ---------------------------------------------------------------------------
    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """``B x (window + context)`` float waveform -> ``B x 1 x 96 x 64`` log-mel examples."""
        c = self.config
        need = self.plan.window_units + self.context_samples
        if batch.ndim != 2 or batch.shape[1] != need or not batch.is_floating_point():
            raise ValueError(f"vggish: expected float B x {need} waveforms, got {tuple(batch.shape)} {batch.dtype}")
        logmel = self.frontend(batch)  # B x 96 x 64
        assert logmel.shape[1] == c.num_frames, logmel.shape
        return logmel.unsqueeze(1)

    def fuse_for_inference(self) -> VGGishExtractor:
        """Each convolution + ReLU of the network on a prepacked oneDNN weight for float32 CPU
        inference (:func:`avel.extractors.fusion.pack_conv_relu_`; rows within float rounding,
        tested); the frontend and the fully connected layers stay; in place, for inference
        only; returns ``self``."""
        pack_conv_relu_(self.net.features)
        return self

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """``B x 1 x 96 x 64`` -> ``B x 128`` (raw, or PCA-quantised values in [0, 255] as float)."""
        emb = self.net(examples)
        if self.config.postprocess:
            emb = (self.pca_eigen_vectors @ (emb.t() - self.pca_means)).t()
            emb = torch.round((emb.clamp(-2.0, 2.0) + 2.0) * (255.0 / 4.0))
        return emb
