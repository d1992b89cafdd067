"""Audio families: transformers audio models (``hf_audio``: AST, Wav2Vec2, HuBERT, CLAP) and
torchaudio pipelines (``torchaudio_audio``: ``WAV2VEC2_*``, ``HUBERT_*``, ``WAVLM_*`` bundles).

* ``hf_audio``: ``AutoModel`` of a transformers config (``model_type``); each window goes through
  the model's own feature extractor (``AutoFeatureExtractor``: AST Kaldi fbank, Wav2Vec2
  zero-mean/unit-variance normalisation, CLAP log-mel) on the CPU, as a batch. Row
  (``output``): ``pooler`` (AST: mean of the CLS and distillation tokens), ``mean`` of the hidden
  states over time (Wav2Vec2 / HuBERT), ``cls`` (first token) or ``embedding``
  (CLAP ``get_audio_features``, the projected audio embedding); ``layer`` picks a hidden state.
* ``torchaudio_audio``: ``torchaudio.models.wav2vec2_model(**bundle params)`` (random init) or
  ``bundle.get_model()`` (downloads); the bundle's own waveform normalisation
  (``layer_norm`` when ``bundle._normalize_waveform``, as ``bundle.get_model()`` does inside its
  wrapper) and sample rate; row = mean over time of ``extract_features`` output ``layer``.

Layouts: windows are float32 mono ``B x window_samples``; ``forward`` returns ``B x D``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from avel.datasets.sampling import SamplingPlan
from avel.extractors.base import DecodeSpec, ExtractorConfig
from avel.extractors.families import FamilyExtractor, guard_local_datasets_folder

HF_AUDIO_OUTPUTS = ("pooler", "mean", "cls", "embedding")


@dataclass(frozen=True)
class HFAudioConfig(ExtractorConfig):
    """transformers audio backbone.

    Args:
        model_type: ``audio-spectrogram-transformer`` | ``wav2vec2`` | ``hubert`` | ``clap``.
        architecture: config fields of a random-init architecture (test presets).
        processor: feature extractor fields overriding the class defaults (random init only).
        output: ``pooler`` | ``mean`` | ``cls`` | ``embedding`` (module doc).
        layer: hidden state index for ``mean`` / ``cls`` (-1: the last).
        sample_rate: audio sample rate (the feature extractor's ``sampling_rate``; 16 kHz for
            AST / Wav2Vec2 / HuBERT, 48 kHz for CLAP).
        window_s, hop_s: the window plan.
    """

    model_type: str = "audio-spectrogram-transformer"
    architecture: dict = field(default_factory=dict)
    processor: dict = field(default_factory=dict)
    output: str = "pooler"
    layer: int = -1
    sample_rate: int = 16000
    window_s: float = 1.0
    hop_s: float = 1.0

    def __post_init__(self) -> None:
        if self.output not in HF_AUDIO_OUTPUTS:
            raise ValueError(f"hf_audio: output must be one of {HF_AUDIO_OUTPUTS}, got {self.output!r}")


class HFAudio(FamilyExtractor):
    """transformers audio model: ``B x S`` float waveforms -> ``B x D``."""

    name = "hf_audio"
    modality = "audio"
    config_cls = HFAudioConfig
    presets = {
        "full": {},
        "tiny": {
            "window_s": 0.5,
            "hop_s": 0.5,
            "architecture": {
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "num_mel_bins": 16,
                "max_length": 48,
                "patch_size": 8,
                "frequency_stride": 8,
                "time_stride": 8,
            },
            "processor": {"num_mel_bins": 16, "max_length": 48},
        },
    }

    model: Any  # the library's model: its own attributes (config, encode_text, ...)

    def __init__(self, config: HFAudioConfig) -> None:
        super().__init__(config)
        guard_local_datasets_folder()
        import transformers
        from transformers import AutoConfig, AutoModel
        from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING_NAMES

        self.model = AutoModel.from_config(AutoConfig.for_model(config.model_type, **config.architecture))
        # The feature extractor always runs on the CPU. Its first use imports modules that create
        # tensors at import time (torchaudio.compliance.kaldi's EPSILON): under build(device="meta")
        # they would be meta tensors for the rest of the process.
        with torch.device("cpu"):
            cls = getattr(transformers, FEATURE_EXTRACTOR_MAPPING_NAMES[config.model_type])
            self.processor = cls(**{"sampling_rate": config.sample_rate, **config.processor})
        self._check_rate()

    def _check_rate(self) -> None:
        rate = int(getattr(self.processor, "sampling_rate", self.config.sample_rate))
        if rate != self.config.sample_rate:
            raise ValueError(
                f"hf_audio: the feature extractor expects {rate} Hz, config sample_rate is {self.config.sample_rate}"
            )

    def load_pretrained(self, source: str) -> None:
        """``source``: a ``save_pretrained`` directory or a hub id holding model and feature extractor."""
        from transformers import AutoFeatureExtractor, AutoModel

        self.model = AutoModel.from_pretrained(source)
        with torch.device("cpu"):  # see __init__
            self.processor = AutoFeatureExtractor.from_pretrained(source)
        self._check_rate()

    @property
    def decode_spec(self) -> DecodeSpec:
        return DecodeSpec("audio", sample_rate=self.config.sample_rate)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        cfg = self.model.config
        if self.config.output == "embedding":
            return (int(cfg.projection_dim),)
        return (int(cfg.hidden_size),)

    def library_preprocess(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The feature extractor on ``B x S`` windows (CPU) -> the model's keyword inputs."""
        waves = [w.detach().cpu().numpy() for w in batch]
        out = self.processor(waves, sampling_rate=self.config.sample_rate, return_tensors="pt")
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    def preprocess(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if batch.ndim != 2 or not batch.is_floating_point():
            raise ValueError(f"{self.name}: expected float B x S windows, got {tuple(batch.shape)} {batch.dtype}")
        return {k: v.to(batch.device) for k, v in self.library_preprocess(batch).items()}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        if c.output == "embedding":
            out = self.model.get_audio_features(**inputs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        res = self.model(**inputs, output_hidden_states=c.layer != -1)
        if c.output == "pooler":
            return res.pooler_output
        hidden = res.last_hidden_state if c.layer == -1 else res.hidden_states[c.layer]  # B x N x D
        return hidden.mean(dim=1) if c.output == "mean" else hidden[:, 0]


@dataclass(frozen=True)
class TorchaudioConfig(ExtractorConfig):
    """torchaudio pipeline backbone.

    Args:
        bundle: ``torchaudio.pipelines`` bundle name (``WAV2VEC2_BASE``, ``HUBERT_BASE``, ``WAVLM_BASE``...).
        params: overrides of the bundle's architecture parameters (tiny test presets only).
        layer: ``extract_features`` output index (-1: the last transformer layer).
        window_s, hop_s: the window plan (sample rate = the bundle's).
    """

    bundle: str = "WAV2VEC2_BASE"
    params: dict = field(default_factory=dict)
    layer: int = -1
    window_s: float = 1.0
    hop_s: float = 1.0


class TorchaudioAudio(FamilyExtractor):
    """torchaudio wav2vec2-style bundle: ``B x S`` float waveforms -> ``B x D``."""

    name = "torchaudio_audio"
    modality = "audio"
    config_cls = TorchaudioConfig
    presets = {
        "full": {},
        "tiny": {
            "window_s": 0.5,
            "hop_s": 0.5,
            "params": {
                "extractor_conv_layer_config": [[32, 10, 5], [32, 3, 2], [32, 2, 2]],
                "encoder_embed_dim": 32,
                "encoder_pos_conv_kernel": 16,
                "encoder_pos_conv_groups": 4,
                "encoder_num_layers": 2,
                "encoder_num_heads": 2,
                "encoder_ff_interm_features": 64,
            },
        },
    }

    model: Any  # the library's model: its own attributes (config, encode_text, ...)

    def __init__(self, config: TorchaudioConfig) -> None:
        super().__init__(config)
        import torchaudio.pipelines as P
        from torchaudio.models import wav2vec2_model

        bundle = getattr(P, config.bundle, None)
        if bundle is None or not hasattr(bundle, "_params"):
            raise ValueError(f"torchaudio_audio: {config.bundle!r} is not a wav2vec2-style torchaudio.pipelines bundle")
        self.bundle: Any = bundle
        params: dict[str, Any] = {**bundle._params, **config.params}
        if "extractor_conv_layer_config" in config.params:
            params["extractor_conv_layer_config"] = [tuple(x) for x in config.params["extractor_conv_layer_config"]]
        self.model = wav2vec2_model(**params)
        self.dim = int(params["encoder_embed_dim"])

    def load_pretrained(self, source: str) -> None:
        """``source``: the bundle name (``WAV2VEC2_BASE``): ``bundle.get_model()`` (downloads)."""
        import torchaudio.pipelines as P

        model = getattr(P, source).get_model()
        inner = getattr(model, "model", model)  # get_model wraps models that normalise the waveform
        self.model.load_state_dict(inner.state_dict(), strict=True)

    @property
    def plan(self) -> SamplingPlan:
        c = self.config
        return SamplingPlan.audio(sample_rate=int(self.bundle.sample_rate), window_s=c.window_s, hop_s=c.hop_s)

    @property
    def decode_spec(self) -> DecodeSpec:
        return DecodeSpec("audio", sample_rate=int(self.bundle.sample_rate))

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """The bundle's waveform normalisation (layer norm over each window for the large models)."""
        if batch.ndim != 2 or not batch.is_floating_point():
            raise ValueError(f"{self.name}: expected float B x S windows, got {tuple(batch.shape)} {batch.dtype}")
        if self.bundle._normalize_waveform:
            return torch.nn.functional.layer_norm(batch, batch.shape[-1:])
        return batch

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        feats, _ = self.model.extract_features(waves)  # list of B x N x D, one per layer
        return feats[self.config.layer].mean(dim=1)
