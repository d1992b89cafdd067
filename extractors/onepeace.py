"""ONE-PEACE feature extractors: checkpoints, preprocessing and windowed extraction.

Extractors (registry names), all 1536-d at full size:

* ``onepeace_image`` (:class:`OnePeaceImageExtractor`): the pretrained image encoder on every frame
  (256 x 256 bicubic, CLIP norm), L2-normalised projected CLS (or the CLS itself), averaged over
  the frames of each window.
* ``onepeace_audio`` (:class:`OnePeaceAudioExtractor`): the pretrained audio encoder on each
  layer-normalised 1-s window of 16 kHz audio (hop 0.25 s), L2-normalised projected CLS.
* ``onepeace_video_k400`` (:class:`OnePeaceVideoK400Extractor`): the Kinetics-400 fine-tuned video
  model with temporal adapters on each 16-frame window (16 fps, stride 4), mean of the per-frame
  CLS after the final LayerNorm, no projection -- how the UniAV / LoCo visual features
  (``one_peace_video_finetune``) were made.

Full-size models are built on the meta device and filled from the checkpoint; on CUDA the weights
are cast to bf16 and the forward runs under autocast (``amp_dtype``), on CPU in fp32.

Checkpoints (official files):

* ``one-peace.pt`` -- fairseq checkpoint of the pretrained model; tensors in ``ckpt["model"]`` with keys
  ``encoder_wrapper.*``, ``image_proj.*``, ``audio_proj.*`` (plus the text branch, the pretraining
  decoder and buffers, which are skipped). Used by ``onepeace_image`` and ``onepeace_audio``.
* ``onepeace_video_k400.pth`` -- mmaction checkpoint of the Kinetics-400 fine-tuned video model;
  tensors in ``ckpt["state_dict"]`` with keys ``backbone.image_adapter.*``, ``backbone.encoder.*`` and
  the class head ``cls_head.*`` (skipped). Used by ``onepeace_video_k400``.

Loading and verification go through :mod:`avel.extractors.weights`, as for every extractor:
fairseq checkpoints pickle an ``argparse.Namespace`` (``ckpt["args"]``) and, in the hydra era, a
config container that may reference fairseq/omegaconf classes; mmaction checkpoints pickle an
mmcv ``meta`` dict. :func:`avel.extractors.weights.load_checkpoint_file` reads them without running
pickled code (unknown globals become inert placeholders in the metadata we never read), and
:func:`avel.extractors.weights.load_verified` checks keys, shapes and the ``rp_bucket`` index
buffers before loading.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from typing_extensions import Self

from avel.extractors.base import CheckpointReport, DecodeSpec, Extractor, ExtractorConfig
from avel.extractors.onepeace_model import (
    AUDIO_FEATURE_SPEC,
    CLIP_MEAN,
    CLIP_STD,
    K400_MEAN_255,
    K400_STD_255,
    OnePeaceConfig,
    OnePeaceModel,
    OnePeaceVideoConfig,
    OnePeaceVideoModel,
)
from avel.extractors.weights import (
    CheckpointMismatch,
    checkpoint_sha256,
    compare_state_dicts,
    load_checkpoint_file,
    load_verified,
)

ONEPEACE_CKPT_NAME = "one-peace.pt"
ONEPEACE_VIDEO_CKPT_NAME = "onepeace_video_k400.pth"


CheckpointError = CheckpointMismatch
"""What a ONE-PEACE checkpoint that does not match raises (the one error of every extractor)."""


# ---------------------------------------------------------------------------------------------
# key selection
# ---------------------------------------------------------------------------------------------
def _modal_prefix_skip(modalities: Iterable[str], with_projection: bool) -> re.Pattern:
    """Checkpoint keys of parts we do not build (text, pretraining decoder, unused modality, projections)."""
    unused = [m for m in ("text", "image", "audio") if m not in set(modalities)]
    alternatives = [
        r"decoder_wrapper\.",
        r"logit_scale$",
        r"decoder_\w+_embed\.",
        r"\w+_mask_token$",
        r"\w+_mask_head\.",
        r"encoder_wrapper\.fusion_model\.version$",
        r"encoder_wrapper\.audio_adapter\.mask_embedding$",
        r"encoder_wrapper\.image_adapter\.position_idx$",
        r"encoder_wrapper\.\w+_adapter\.rp_bucket$",
    ]
    for m in unused:
        alternatives += [
            rf"{m}_proj\.",
            rf"encoder_wrapper\.{m}_adapter\.",
            rf"encoder_wrapper\.fusion_model\.layers\.\d+\.{m}_ffn\.",
            rf"encoder_wrapper\.fusion_model\.{m}_layer_norm\.",
        ]
    if not with_projection:
        alternatives.append(r"\w+_proj\.")
    return re.compile("^(?:" + "|".join(alternatives) + ")")


def select_onepeace_state(
    model_state: Mapping[str, Any], modalities: Iterable[str], *, with_projection: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Pick the tensors of the image/audio encoders from a fairseq ``ckpt["model"]``.

    Renames the legacy single table ``*_adapter.rel_pos_table.weight`` to
    ``*_adapter.rel_pos_table_list.0.weight`` (as the reference's state-dict upgrade does). Keys of
    the text branch, the pretraining decoder, ``logit_scale``, mask tokens and modalities that are not
    built are skipped (and ``*_proj`` when ``with_projection`` is False); every other key is
    returned, so unknown keys surface as 'unexpected'.

    Returns:
        (tensors keyed like :class:`OnePeaceModel`, index buffers ``rp_bucket`` keyed like its buffers).
    """
    modalities = tuple(modalities)
    skip = _modal_prefix_skip(modalities, with_projection)
    state: dict[str, torch.Tensor] = {}
    buffers: dict[str, torch.Tensor] = {}
    for key, value in model_state.items():
        key = re.sub(r"^(encoder_wrapper\.\w+_adapter\.)rel_pos_table\.weight$", r"\1rel_pos_table_list.0.weight", key)
        m = re.match(r"^encoder_wrapper\.(\w+)_adapter\.rp_bucket$", key)
        if m and m.group(1) in modalities:
            buffers[key] = value
        if skip.match(key):
            continue
        state[key] = value
    return state, buffers


def select_video_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Pick the backbone tensors from the mmaction ``ckpt["state_dict"]`` of the K400 model.

    Strips a ``module.`` (DataParallel) prefix carried by every key and the ``backbone.`` prefix,
    skips ``cls_head.*``; ``image_adapter.rp_bucket`` is returned as an index buffer to compare.
    """
    state: dict[str, torch.Tensor] = {}
    buffers: dict[str, torch.Tensor] = {}
    if state_dict and all(str(k).startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    for key, value in state_dict.items():
        if key.startswith("cls_head."):
            continue
        key = key[len("backbone.") :] if key.startswith("backbone.") else key
        if key.endswith("rp_bucket"):
            buffers[key] = value
            continue
        state[key] = value
    return state, buffers


def _fairseq_onepeace_state(
    ckpt: Mapping[str, Any], path: str | Path, cfg: OnePeaceConfig
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """:func:`select_onepeace_state` of the loaded fairseq checkpoint ``path`` for the branches of ``cfg``.

    Raises:
        CheckpointError: the file has no ``model`` dict (not a fairseq checkpoint).
    """
    if not isinstance(ckpt.get("model"), Mapping):
        raise CheckpointError(
            f"{path}: no 'model' dict in the checkpoint (top-level keys {sorted(map(str, ckpt))}); "
            f"expected the fairseq checkpoint {ONEPEACE_CKPT_NAME}"
        )
    return select_onepeace_state(ckpt["model"], cfg.modalities, with_projection=cfg.with_projection)


def _video_k400_state(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """:func:`select_video_state` of a loaded K400 checkpoint: its ``state_dict`` (mmaction), else its
    ``model`` dict, else the file itself as a plain state dict (converted files)."""
    for container in ("state_dict", "model"):
        if isinstance(ckpt.get(container), Mapping):
            return select_video_state(ckpt[container])
    return select_video_state(ckpt)


def load_onepeace(
    path: str | Path,
    cfg: OnePeaceConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> OnePeaceModel:
    """Build :class:`OnePeaceModel` on the meta device and fill it from ``one-peace.pt``.

    Args:
        path: fairseq checkpoint (official file ``one-peace.pt``).
        cfg: architecture; default :meth:`OnePeaceConfig.full`.
        device: where the loaded model goes.
        dtype: cast parameters to this dtype (default: keep the checkpoint's dtype).
    """
    cfg = cfg or OnePeaceConfig.full()
    state, buffers = _fairseq_onepeace_state(load_checkpoint_file(path), path, cfg)
    with torch.device("meta"):
        model = OnePeaceModel(cfg)
    load_verified(model, state, expected_file=ONEPEACE_CKPT_NAME, extractor="onepeace", source=path, buffers=buffers)
    return model.to(device=device, dtype=dtype).eval()


def load_onepeace_video(
    path: str | Path,
    cfg: OnePeaceVideoConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> OnePeaceVideoModel:
    """Build :class:`OnePeaceVideoModel` on the meta device and fill it from ``onepeace_video_k400.pth``.

    Accepts the mmaction layout (``ckpt["state_dict"]``, keys ``backbone.*``) and, for converted files,
    a plain backbone state dict or ``ckpt["model"]``.
    """
    cfg = cfg or OnePeaceVideoConfig.full()
    state, buffers = _video_k400_state(load_checkpoint_file(path))
    with torch.device("meta"):
        model = OnePeaceVideoModel(cfg)
    load_verified(
        model,
        state,
        expected_file=ONEPEACE_VIDEO_CKPT_NAME,
        extractor="onepeace_video_k400",
        source=path,
        buffers=buffers,
    )
    return model.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------
def _as_uint8_frames(frames: Any) -> torch.Tensor:
    """``N x H x W x 3`` uint8 (numpy or torch) -> ``N x 3 x H x W`` uint8 tensor."""
    t = torch.as_tensor(frames)
    if t.dim() != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected RGB frames of shape N x H x W x 3, got {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got {t.dtype}")
    return t.permute(0, 3, 1, 2).contiguous()


def preprocess_images(frames: Any, *, size: int = 256) -> torch.Tensor:
    """ONE-PEACE image preprocessing: resize to ``size x size`` (bicubic, aspect not kept), CLIP norm.

    Mirrors the reference ``Resize((S, S), BICUBIC)`` on a PIL image followed by ``ToTensor`` and
    ``Normalize(CLIP mean/std)``: torch's antialiased uint8 bicubic resize follows PIL's filter
    (within one grey level) and yields uint8 before scaling to [0, 1].

    Args:
        frames: ``N x H x W x 3`` uint8 RGB frames.
        size: output side (256 for the released model).
    Returns:
        ``N x 3 x size x size`` float32.
    """
    x = _as_uint8_frames(frames)
    if tuple(x.shape[-2:]) != (size, size):
        if x.device.type == "cpu":
            x = torch.nn.functional.interpolate(
                x, size=(size, size), mode="bicubic", align_corners=False, antialias=True
            )
        else:  # uint8 antialiased resize is CPU-only; the float kernel skips PIL's per-pass clipping
            x = (
                torch.nn.functional.interpolate(
                    x.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True
                )
                .round_()
                .clamp_(0, 255)
            )
    x = x.float() / 255.0
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def preprocess_video_k400(frames: Any, *, size: int = 256) -> torch.Tensor:
    """Test-time preprocessing of the K400 model (mmaction ``Resize(-1, 256)``, ``CenterCrop(256)``).

    Short side resized to ``size`` keeping the aspect ratio (new side ``int(side * size / short + 0.5)``,
    bilinear without antialiasing on uint8, as OpenCV's ``INTER_LINEAR``), centre crop ``size x size``
    (offset ``(side - size) // 2``), then normalised with mean (122.771, 116.746, 104.094) and std
    (68.5, 66.632, 70.323) on the 0-255 scale.

    Args:
        frames: ``N x H x W x 3`` uint8 RGB frames.
        size: short side and crop size (256).
    Returns:
        ``N x 3 x size x size`` float32.
    """
    x = _as_uint8_frames(frames)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    if (new_h, new_w) != (h, w):
        if x.device.type == "cpu":
            x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        else:
            x = (
                torch.nn.functional.interpolate(x.float(), size=(new_h, new_w), mode="bilinear", align_corners=False)
                .round_()
                .clamp_(0, 255)
            )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size].float()
    mean = torch.tensor(K400_MEAN_255, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(K400_STD_255, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def normalize_waveform(wav: torch.Tensor) -> torch.Tensor:
    """Layer-normalise each waveform over its samples (``F.layer_norm(wav, wav.shape)`` in the reference).

    Args:
        wav: ``N`` or ``B x N`` float samples.
    Returns:
        same shape, zero mean and unit variance per waveform (eps 1e-5).
    """
    wav = torch.as_tensor(wav, dtype=torch.float32)
    return torch.nn.functional.layer_norm(wav, wav.shape[-1:])


# ---------------------------------------------------------------------------------------------
# extraction runtime
# ---------------------------------------------------------------------------------------------
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_amp_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"`` -> bf16 on CUDA, fp32 elsewhere; else one of ``bf16``, ``fp16``, ``fp32``."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _AMP_DTYPES:
        raise ValueError(f"amp_dtype must be 'auto' or one of {sorted(_AMP_DTYPES)}, got {name!r}")
    return _AMP_DTYPES[name]


def autocast_for(device: torch.device, dtype: torch.dtype):
    """Autocast context for ``dtype`` on ``device`` (a no-op for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# extractors
# ---------------------------------------------------------------------------------------------
_OUTPUTS = ("embedding", "cls")


OnePeaceConfigT = TypeVar(
    "OnePeaceConfigT", bound="OnePeaceImageConfig | OnePeaceAudioConfig | OnePeaceVideoK400Config"
)


class _OnePeaceExtractor(Extractor[OnePeaceConfigT]):
    """Shared loading and precision handling of the ONE-PEACE extractors.

    The wrapped encoder is ``self.model`` (an :class:`OnePeaceModel` or :class:`OnePeaceVideoModel`);
    checkpoint keys are matched against ``self.model`` in the official layout (no prefix).
    """

    model: torch.nn.Module

    @classmethod
    def _checkpoint_path(cls, path: str | Path | Mapping[str, str | Path]) -> Path:
        name = cls.checkpoint_files["model"]
        if isinstance(path, Mapping):
            if "model" not in path:
                raise FileNotFoundError(f"{cls.name}: checkpoint mapping needs the role 'model' (official file {name})")
            path = path["model"]
        path = Path(path)
        if path.is_dir():
            path = path / name
        if not path.is_file():
            raise FileNotFoundError(f"{cls.name}: checkpoint {path} not found (expected the official file {name})")
        return path

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | Mapping[str, str | Path],
        *,
        device: str | torch.device = "cpu",
        preset: str = "full",
        checked: CheckpointReport | None = None,
        **config: Any,
    ) -> Self:
        """Ready eval module with verified official weights (see :func:`load_checkpoint_file`).

        Args:
            path: the official file (``checkpoint_files["model"]``), a directory holding it, or
                ``{"model": path}``.
            device: where the module lives. Weights are cast to the compute dtype of that device
                (``amp_dtype``; bf16 on CUDA by default, fp32 on CPU).
            preset: config preset (``"full"`` for the official weights).
            checked: an earlier :meth:`check_checkpoint` of the same file in this process; only
                its file is checked to be the same: the file is read again, because the load
                needs the checkpoint's index buffers, which the report does not keep (its
                sha256 is not computed again).
            **config: config field overrides.

        Raises:
            CheckpointError: missing / unexpected / mis-shaped keys (naming the official file).
            FileNotFoundError: the file is missing.
        """
        cfg = cls.make_config(preset, **config)
        file, module, state, buffers = cls._read_checkpoint(path, cfg)
        if checked is not None:
            checked.require_same(cls.name, {"model": file})
        load_verified(
            module.model,
            state,
            expected_file=cls.checkpoint_files["model"],
            extractor=cls.name,
            source=file,
            buffers=buffers,
        )
        device = torch.device(device)
        module.to(device=device, dtype=resolve_amp_dtype(cfg.amp_dtype, device))
        module.weights_sha256 = checkpoint_sha256(file)
        return module.eval()

    @classmethod
    def check_checkpoint(
        cls, path: str | Path | Mapping[str, str | Path], *, preset: str = "full", **config: Any
    ) -> CheckpointReport:
        """Keys and shapes of the checkpoint against the module, built on the meta device.

        Same file handling and key selection as :meth:`from_checkpoint`; never raises for a
        mismatch. Keys in the report are module keys (the official names under ``model.``).
        """
        cfg = cls.make_config(preset, **config)
        file, module, state, buffers = cls._read_checkpoint(path, cfg)
        missing, unexpected, mismatched = compare_state_dicts(
            module.model.state_dict(),
            state,
            expected_buffers=dict(module.model.named_buffers()),
            actual_buffers=buffers,
        )
        pre = "model."
        return CheckpointReport(
            extractor=cls.name,
            files={"model": file},
            expected_files={"model": cls.checkpoint_files["model"]},
            sha256={"model": checkpoint_sha256(file)},
            missing=[pre + k for k in missing],
            unexpected=[pre + k for k in unexpected],
            mismatched=[(pre + k, a, b) for k, a, b in mismatched],
            state={pre + k: v for k, v in state.items()},
        )

    @classmethod
    def _read_checkpoint(
        cls, path: str | Path | Mapping[str, str | Path], cfg: OnePeaceConfigT
    ) -> tuple[Path, Self, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(file, module on the meta device, selected tensors, index buffers) for ``cfg``."""
        file = cls._checkpoint_path(path)
        with torch.device("meta"):
            module = cls(cfg)
        ckpt = load_checkpoint_file(file)
        state, buffers = cls._select_state(ckpt, file, module)
        return file, module, state, buffers

    @classmethod
    def _select_state(
        cls, ckpt: Mapping[str, Any], file: Path, module: _OnePeaceExtractor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(tensors keyed like ``module.model``, checkpoint index buffers to compare) from the loaded file."""
        raise NotImplementedError

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.config.embed_dim,)

    def _frame_windows(
        self, batch: torch.Tensor, preprocess_frames: Callable[..., torch.Tensor], size: int
    ) -> torch.Tensor:
        """``B x T x H x W x 3`` uint8 -> ``B x T x 3 x size x size``, ``preprocess_frames`` on every frame."""
        if batch.dim() != 5 or batch.shape[-1] != 3:
            raise ValueError(f"{self.name}: expected a batch of windows B x T x H x W x 3, got {tuple(batch.shape)}")
        b, t = batch.shape[:2]
        frames = preprocess_frames(batch.flatten(0, 1), size=size)  # (B*T) x 3 x S x S
        return frames.view(b, t, *frames.shape[1:])

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        param_dtype = next(self.model.parameters()).dtype
        if param_dtype != torch.float32:
            return param_dtype
        return resolve_amp_dtype(self.config.amp_dtype, device)


_TRANSFORMER_FIELDS = ("embed_dim", "ffn_embed_dim", "layers", "attention_heads")

FairseqConfigT = TypeVar("FairseqConfigT", bound="OnePeaceImageConfig | OnePeaceAudioConfig")


class _FairseqOnePeaceExtractor(_OnePeaceExtractor[FairseqConfigT]):
    """Extractors whose weights come from the pretrained fairseq checkpoint ``one-peace.pt``.

    Each builds one branch of :class:`OnePeaceModel`: ``branch`` (``"image"`` or ``"audio"``), with the
    transformer size, the projection when ``output == "embedding"``, and the ``branch_fields`` of its
    config, which carry the same names in :class:`OnePeaceConfig`.
    """

    checkpoint_files = {"model": ONEPEACE_CKPT_NAME}
    branch: ClassVar[str]
    branch_fields: ClassVar[tuple[str, ...]]

    model: OnePeaceModel

    def __init__(self, config: FairseqConfigT) -> None:
        super().__init__(config)
        fields = {name: getattr(config, name) for name in (*_TRANSFORMER_FIELDS, *self.branch_fields)}
        self.model = OnePeaceModel(
            OnePeaceConfig(modalities=(self.branch,), with_projection=config.output == "embedding", **fields)
        )

    @classmethod
    def _select_state(cls, ckpt, file, module):
        return _fairseq_onepeace_state(ckpt, file, module.model.cfg)


def _check_output(output: str) -> None:
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")


@dataclass(frozen=True)
class OnePeaceImageConfig(ExtractorConfig):
    """Frame-wise ONE-PEACE image features pooled over each video window.

    Args:
        embed_dim, ffn_embed_dim, layers, attention_heads: transformer size (1536, 6144, 40, 24).
        image_size: frames are resized to ``image_size x image_size`` (256, bicubic, CLIP norm).
        pos_bucket_size: grid side of the learned absolute positions (16).
        fps, window_frames, stride_frames: the sampling plan (UnAV-100: 16 fps, 16 / 4).
        output: ``"embedding"`` = L2-normalised ``image_proj(CLS after image_layer_norm)`` (the
            retrieval embedding); ``"cls"`` = the CLS token after ``image_layer_norm``.
        frame_batch: frames per forward pass (memory bound on the device).
        decode_short_side: optional CPU short-side resize before the device-side bicubic resize
            (saves memory for large videos; ``None`` = decode at native size, exact preprocessing).
        amp_dtype: compute precision: ``"auto"`` (bf16 on CUDA, fp32 on CPU), ``bf16``, ``fp16``, ``fp32``.

    A window's feature is the mean of its frames' features (the mean of L2-normalised embeddings
    is not re-normalised). This is our choice for a frame model on a window plan; the UniAV /
    LoCo visual features come from the K400 video model (``onepeace_video_k400``).
    """

    embed_dim: int = 1536
    ffn_embed_dim: int = 6144
    layers: int = 40
    attention_heads: int = 24
    image_size: int = 256
    pos_bucket_size: int = 16
    fps: float = 16.0
    window_frames: int = 16
    stride_frames: int = 4
    output: str = "embedding"
    frame_batch: int = 64
    decode_short_side: int | None = None
    amp_dtype: str = "auto"

    def __post_init__(self) -> None:
        _check_output(self.output)
        if self.frame_batch < 1:
            raise ValueError(f"frame_batch must be >= 1, got {self.frame_batch}")


_TINY_ARCH = {"embed_dim": 64, "ffn_embed_dim": 128, "layers": 2, "attention_heads": 2}


class OnePeaceImageExtractor(_FairseqOnePeaceExtractor[OnePeaceImageConfig]):
    """``onepeace_image``: ONE-PEACE image encoder on every frame, averaged per window.

    ``preprocess``: ``B x T x H x W x 3`` uint8 -> ``B x T x 3 x S x S`` (bicubic to S = 256, CLIP
    normalisation). ``forward``: -> ``B x 1536``.
    """

    name = "onepeace_image"
    modality = "video"
    presets = {
        "full": {},
        "tiny": {
            **_TINY_ARCH,
            "image_size": 64,
            "pos_bucket_size": 4,
            "window_frames": 4,
            "stride_frames": 2,
            "frame_batch": 8,
        },
    }

    branch = "image"
    branch_fields = ("image_size", "pos_bucket_size")

    @property
    def decode_spec(self) -> DecodeSpec:
        return DecodeSpec("video", fps=self.config.fps, short_side=self.config.decode_short_side)

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        return self._frame_windows(batch, preprocess_images, self.config.image_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``B x T x 3 x S x S`` -> ``B x D``: per-frame features averaged over the T frames."""
        b, t = frames.shape[:2]
        flat = frames.flatten(0, 1)
        dtype = self._compute_dtype(flat.device)
        project = self.config.output == "embedding"
        out = []
        with autocast_for(flat.device, dtype):
            for chunk in flat.split(self.config.frame_batch):
                out.append(
                    self.model.embed(chunk.to(dtype), modality="image", project=project, normalize=project).float()
                )
        return torch.cat(out).view(b, t, -1).mean(dim=1)


@dataclass(frozen=True)
class OnePeaceAudioConfig(ExtractorConfig):
    """ONE-PEACE audio features of 1-s windows every 0.25 s (UnAV-100 / UniAV / LoCo plan).

    Args:
        embed_dim, ffn_embed_dim, layers, attention_heads: transformer size (1536, 6144, 40, 24).
        audio_feature_spec: conv stack (channels, kernel, stride) on the waveform.
        audio_conv_pos_groups: groups of the conv positional embedding (16).
        audio_rel_bucket_size, audio_max_positions: relative position buckets (512 over 1024).
        sample_rate, window_s, hop_s: the sampling plan (16000 Hz, 1.0 s, 0.25 s).
        output: ``"embedding"`` = L2-normalised ``audio_proj(CLS after audio_layer_norm)``
            (the reference's ``extract_audio_features``); ``"cls"`` = CLS after ``audio_layer_norm``.
        normalize: waveform layer norm per ``"window"`` (each window is one model input, as the
            reference normalises each input clip) or ``"none"`` (the caller normalised already).
        amp_dtype: ``"auto"`` (bf16 on CUDA, fp32 on CPU), ``bf16``, ``fp16``, ``fp32``.

    Inputs shorter than one window are zero-padded (project convention, :func:`cut_audio_windows`);
    the reference hub instead tiles clips shorter than 1 s.
    """

    embed_dim: int = 1536
    ffn_embed_dim: int = 6144
    layers: int = 40
    attention_heads: int = 24
    audio_feature_spec: tuple[tuple[int, int, int], ...] = AUDIO_FEATURE_SPEC
    audio_conv_pos_groups: int = 16
    audio_rel_bucket_size: int = 512
    audio_max_positions: int = 1024
    sample_rate: int = 16000
    window_s: float = 1.0
    hop_s: float = 0.25
    output: str = "embedding"
    normalize: str = "window"
    amp_dtype: str = "auto"

    def __post_init__(self) -> None:
        _check_output(self.output)
        if self.normalize not in ("window", "none"):
            raise ValueError(f"normalize must be 'window' or 'none', got {self.normalize!r}")
        if self.sample_rate != 16000:
            raise ValueError(f"ONE-PEACE audio expects 16 kHz input, got sample_rate {self.sample_rate}")
        object.__setattr__(self, "audio_feature_spec", tuple(tuple(int(v) for v in s) for s in self.audio_feature_spec))


class OnePeaceAudioExtractor(_FairseqOnePeaceExtractor[OnePeaceAudioConfig]):
    """``onepeace_audio``: ONE-PEACE audio encoder on each window.

    ``preprocess``: ``B x N`` float samples -> layer-normalised ``B x N``. ``forward``: -> ``B x 1536``.
    """

    name = "onepeace_audio"
    modality = "audio"
    presets = {
        "full": {},
        "tiny": {
            **_TINY_ARCH,
            "audio_feature_spec": OnePeaceConfig.tiny().audio_feature_spec,
            "audio_rel_bucket_size": 8,
            "audio_max_positions": 64,
        },
    }

    branch = "audio"
    branch_fields = ("audio_feature_spec", "audio_conv_pos_groups", "audio_rel_bucket_size", "audio_max_positions")

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() != 2 or not batch.is_floating_point():
            raise ValueError(
                f"{self.name}: expected a float batch of windows B x N, got {tuple(batch.shape)} {batch.dtype}"
            )
        batch = batch.float()
        return normalize_waveform(batch) if self.config.normalize == "window" else batch

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``B x N`` -> ``B x D``."""
        dtype = self._compute_dtype(wav.device)
        project = self.config.output == "embedding"
        with autocast_for(wav.device, dtype):
            return self.model.embed(wav.to(dtype), modality="audio", project=project, normalize=project).float()


@dataclass(frozen=True)
class OnePeaceVideoK400Config(ExtractorConfig):
    """Features of the Kinetics-400 fine-tuned ONE-PEACE video model (UniAV / LoCo visual stream).

    Args:
        embed_dim, ffn_embed_dim, layers, attention_heads: transformer size (1536, 6144, 40, 24).
        image_size: frame side (256); the decoder resizes the short side to it and centre-crops.
        bucket_size: patch grid side (16 = 256 / 16).
        adapter_ratio, adapter_scale: AIM adapters (0.25, 0.5).
        fps, window_frames, stride_frames: the plan (16 fps, 16-frame windows, stride 4); a window is
            one clip, so ``window_frames`` is also the model's number of frames.
        amp_dtype: ``"auto"`` (bf16 on CUDA, fp32 on CPU), ``bf16``, ``fp16``, ``fp32``.

    A window's feature is the mean over its frames of the CLS token after ``image_layer_norm``, no
    projection (what the reference backbone hands to its I3D head; 1536-d).
    """

    embed_dim: int = 1536
    ffn_embed_dim: int = 6144
    layers: int = 40
    attention_heads: int = 24
    image_size: int = 256
    bucket_size: int = 16
    adapter_ratio: float = 0.25
    adapter_scale: float = 0.5
    fps: float = 16.0
    window_frames: int = 16
    stride_frames: int = 4
    amp_dtype: str = "auto"


class OnePeaceVideoK400Extractor(_OnePeaceExtractor[OnePeaceVideoK400Config]):
    """``onepeace_video_k400``: the K400 video model on each 16-frame window.

    ``preprocess``: ``B x T x H x W x 3`` uint8 -> ``B x 3 x T x S x S`` (short side S, centre crop,
    K400 normalisation; the decoder normally did the resize and crop). ``forward``: -> ``B x 1536``.
    """

    name = "onepeace_video_k400"
    modality = "video"
    checkpoint_files = {"model": ONEPEACE_VIDEO_CKPT_NAME}
    presets = {
        "full": {},
        "tiny": {**_TINY_ARCH, "image_size": 64, "bucket_size": 4, "window_frames": 4, "stride_frames": 2},
    }

    model: OnePeaceVideoModel

    def __init__(self, config: OnePeaceVideoK400Config) -> None:
        super().__init__(config)
        c = config
        self.model = OnePeaceVideoModel(
            OnePeaceVideoConfig(
                embed_dim=c.embed_dim,
                ffn_embed_dim=c.ffn_embed_dim,
                layers=c.layers,
                attention_heads=c.attention_heads,
                num_frames=c.window_frames,
                image_size=c.image_size,
                bucket_size=c.bucket_size,
                adapter_ratio=c.adapter_ratio,
                adapter_scale=c.adapter_scale,
            )
        )

    @classmethod
    def _select_state(cls, ckpt, file, module):
        return _video_k400_state(ckpt)

    @property
    def decode_spec(self) -> DecodeSpec:
        return DecodeSpec(
            "video", fps=self.config.fps, short_side=self.config.image_size, center_crop=self.config.image_size
        )

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        return self._frame_windows(batch, preprocess_video_k400, self.config.image_size).transpose(1, 2)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x S x S`` -> ``B x D``."""
        dtype = self._compute_dtype(clips.device)
        with autocast_for(clips.device, dtype):
            return self.model(clips.to(dtype)).float()
