"""ONE-PEACE encoders (Wang et al. 2023, arXiv:2305.11172): vision, audio and the Kinetics-400 video model.

Inference-only port of the public OFA-Sys/ONE-PEACE encoders, written from the description of the
reference code (``one_peace/models/...`` and ``one_peace_vision/video/...``). Module and parameter
names follow the official checkpoints so that their state dicts load key for key:

* :class:`OnePeaceModel` mirrors the fairseq model of ``one-peace.pt`` (``dict['model']``):
  ``encoder_wrapper.image_adapter.*``, ``encoder_wrapper.audio_adapter.*``,
  ``encoder_wrapper.fusion_model.layers.{i}.*``, ``encoder_wrapper.fusion_model.{image,audio}_layer_norm.*``,
  ``image_proj.*``, ``audio_proj.*``. The text branch (text adapter, ``text_ffn``, ``text_proj``) is not built.
* :class:`OnePeaceVideoModel` mirrors the mmaction backbone of ``onepeace_video_k400.pth``
  (``state_dict['backbone.*']``): ``image_adapter.*`` with a temporal embedding and
  ``encoder.layers.{i}.*`` with AIM-style ``T_Adapter`` / ``S_Adapter`` / ``MLP_Adapter``.

Shared transformer layer (pre-LN, 'magneto' sub-LN, layer scale)::

    h = x + gamma_1 * out_proj(LN_attn(MHA(self_attn_layer_norm(x), rel_pos_bias)))
    y = h + gamma_2 * FFN_m(final_layer_norm(h))
    FFN_m(z) = fc(LN_ffn(GELU(z W0) * (z W1)))        # GeGLU, one FFN per modality m

Attention: q and v projections have a bias, k does not; head dim 64 at full size; every LayerNorm uses
eps 1e-5 (torch default, as in the reference). GELU is exact (erf). Dropout and drop-path are
identity at inference and therefore not built. Attention uses ``F.scaled_dot_product_attention``
with the relative position bias as an additive float mask (same result as the reference's explicit
``softmax(q k^T / sqrt(d) + bias) v``).

Tensor layout inside this module is batch first (``B x L x D``); the reference runs ``L x B x D``.
Index tables (relative position buckets) are computed on the CPU at construction, also when the
model is built under ``torch.device("meta")``, and are non-persistent buffers: they are recomputed,
never loaded (the loader checks the checkpoint's copies against them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

#: wav2vec2-style conv stack of the official audio adapter: (channels, kernel, stride) per layer.
AUDIO_FEATURE_SPEC: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2

#: CLIP normalisation used by ONE-PEACE for images (on [0, 1] pixels).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

#: Normalisation of the Kinetics-400 video model's mmaction pipeline (on [0, 255] pixels).
K400_MEAN_255: tuple[float, float, float] = (122.771, 116.746, 104.094)
K400_STD_255: tuple[float, float, float] = (68.5, 66.632, 70.323)

#: Total stride of the hMLP stem (4 * 2 * 2): one patch token per 16 x 16 pixels.
PATCH_SIZE = 16

LN_EPS = 1e-5


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnePeaceConfig:
    """Architecture of the ONE-PEACE image/audio encoder (defaults: the released 4B model).

    Args:
        embed_dim: transformer width D (1536).
        ffn_embed_dim: GeGLU hidden width F (6144).
        layers: number of transformer layers (40).
        attention_heads: attention heads (24, head dim 64).
        modalities: which branches to build, a subset of ``("image", "audio")``; each adds its
            adapter, its per-layer FFN (``{m}_ffn``), its final LayerNorm and its projection.
        image_size: square input side in pixels (256); the patch grid is ``image_size // 16``
            and the relative position table is built for that grid (``rel_bucket_size`` in the
            reference is set to ``patch_image_size // 16``).
        pos_bucket_size: side of the learned absolute position grid of ``pos_embed`` (16 ->
            257 x D). If the input grid differs, the grid is resized bicubically as in the reference.
        audio_feature_spec: conv stack (channels, kernel, stride) on the raw 16 kHz waveform.
        audio_conv_pos_depth: number of conv positional-embedding layers (5).
        audio_conv_pos_width: total receptive width; kernel per layer is
            ``max(3, width // depth)`` (95 // 5 = 19).
        audio_conv_pos_groups: groups of each positional conv (16).
        audio_rel_bucket_size: audio relative-position bucket size (512 -> table of 2*512-1+3 = 1026 rows).
        audio_max_positions: side of the precomputed audio bucket matrix (1024 tokens incl. CLS).
        with_projection: build ``image_proj`` / ``audio_proj`` (D x D, bias), used for the
            L2-normalised retrieval embedding.
    """

    embed_dim: int = 1536
    ffn_embed_dim: int = 6144
    layers: int = 40
    attention_heads: int = 24
    modalities: tuple[str, ...] = ("image", "audio")
    image_size: int = 256
    pos_bucket_size: int = 16
    audio_feature_spec: tuple[tuple[int, int, int], ...] = AUDIO_FEATURE_SPEC
    audio_conv_pos_depth: int = 5
    audio_conv_pos_width: int = 95
    audio_conv_pos_groups: int = 16
    audio_rel_bucket_size: int = 512
    audio_max_positions: int = 1024
    with_projection: bool = True

    def __post_init__(self) -> None:
        if self.embed_dim % self.attention_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by attention_heads {self.attention_heads}")
        if self.embed_dim % 4:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by 4 (hMLP stem width D/4)")
        bad = set(self.modalities) - {"image", "audio"}
        if bad or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of ('image', 'audio'), got {self.modalities}")
        if self.image_size % PATCH_SIZE:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {PATCH_SIZE}")
        if self.embed_dim % self.audio_conv_pos_groups:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by audio_conv_pos_groups {self.audio_conv_pos_groups}"
            )
        if not self.audio_rel_bucket_size < self.audio_max_positions:
            raise ValueError("audio_rel_bucket_size must be < audio_max_positions")

    @property
    def grid_size(self) -> int:
        """Patches per image side."""
        return self.image_size // PATCH_SIZE

    @property
    def conv_pos_kernel(self) -> int:
        return max(3, self.audio_conv_pos_width // self.audio_conv_pos_depth)

    @classmethod
    def full(cls, **overrides) -> OnePeaceConfig:
        """The released ONE-PEACE configuration (``one-peace.pt``)."""
        return replace(cls(), **overrides)

    @classmethod
    def tiny(cls, **overrides) -> OnePeaceConfig:
        """Same code at toy size for CPU tests (64-d, 2 layers, 2 heads, 64 x 64 images).

        The audio conv stack keeps the official kernels and strides (so 1 s still gives 49 frames)
        with 32 channels; relative buckets 8 over 64 positions (1 s = 50 tokens fits).
        """
        base = cls(
            embed_dim=64,
            ffn_embed_dim=128,
            layers=2,
            attention_heads=2,
            image_size=64,
            pos_bucket_size=4,
            audio_feature_spec=tuple((32, k, s) for _, k, s in AUDIO_FEATURE_SPEC),
            audio_conv_pos_groups=16,
            audio_rel_bucket_size=8,
            audio_max_positions=64,
        )
        return replace(base, **overrides)


@dataclass(frozen=True)
class OnePeaceVideoConfig:
    """Architecture of the Kinetics-400 fine-tuned ONE-PEACE video backbone (``onepeace_video_k400.pth``).

    Args:
        embed_dim, ffn_embed_dim, layers, attention_heads: as :class:`OnePeaceConfig`.
        num_frames: frames per clip; fixes the learned ``temporal_embedding`` (16 for the K400 model).
        image_size: square frame side (256); grid ``image_size // 16`` must equal ``bucket_size``.
        bucket_size: patch grid side of ``pos_embed`` and of the shared relative position table (16).
        adapter_ratio: bottleneck ratio of the T/S/MLP adapters (0.25 -> 384 at D = 1536).
        adapter_scale: weight of the MLP adapter branch (``adapter_scale=0.5`` in onepeace_k400.py).
    """

    embed_dim: int = 1536
    ffn_embed_dim: int = 6144
    layers: int = 40
    attention_heads: int = 24
    num_frames: int = 16
    image_size: int = 256
    bucket_size: int = 16
    adapter_ratio: float = 0.25
    adapter_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.embed_dim % self.attention_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by attention_heads {self.attention_heads}")
        if self.image_size != PATCH_SIZE * self.bucket_size:
            raise ValueError(
                f"image_size {self.image_size} must equal 16 * bucket_size ({PATCH_SIZE * self.bucket_size})"
            )

    @classmethod
    def full(cls, **overrides) -> OnePeaceVideoConfig:
        return replace(cls(), **overrides)

    @classmethod
    def tiny(cls, **overrides) -> OnePeaceVideoConfig:
        """64-d, 2 layers, 2 heads, 4 frames of 64 x 64 (CPU tests)."""
        return replace(
            cls(
                embed_dim=64, ffn_embed_dim=128, layers=2, attention_heads=2, num_frames=4, image_size=64, bucket_size=4
            ),
            **overrides,
        )


# ---------------------------------------------------------------------------------------------
# relative position index tables
# ---------------------------------------------------------------------------------------------
def image_rel_pos_index(grid_size: int) -> torch.Tensor:
    """2-D relative position bucket index for ``grid_size**2`` patches plus a leading CLS token.

    Patch pair (i, j) with row/col offsets (dr, dc) = (r_i - r_j, c_i - c_j) maps to
    ``(dr + G - 1) * (2G - 1) + (dc + G - 1)``. With ``N = (2G-1)**2 + 3`` table rows, the CLS row
    (CLS attending to patches) uses ``N - 3``, the CLS column ``N - 2`` and CLS-to-CLS ``N - 1``.

    Returns:
        ``(G*G + 1) x (G*G + 1)`` int64 tensor (CPU).
    """
    g = grid_size
    num_rel = (2 * g - 1) ** 2 + 3
    rows, cols = torch.meshgrid(torch.arange(g, device="cpu"), torch.arange(g, device="cpu"), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()  # G*G
    d_row = rows[:, None] - rows[None, :] + g - 1
    d_col = cols[:, None] - cols[None, :] + g - 1
    index = torch.zeros(g * g + 1, g * g + 1, dtype=torch.long, device="cpu")
    index[1:, 1:] = d_row * (2 * g - 1) + d_col
    index[0, :] = num_rel - 3
    index[:, 0] = num_rel - 2
    index[0, 0] = num_rel - 1
    return index


def audio_rel_pos_index(bucket_size: int, max_positions: int) -> torch.Tensor:
    """1-D log-bucketed relative position index for ``max_positions`` tokens (token 0 = CLS).

    For offset ``r = i - j``: offsets with ``|r| <= bucket_size // 2`` keep their own bucket; larger
    offsets are compressed logarithmically,
    ``sign(r) * (mid + ceil(log(|r| / mid) / log((max_positions - 1) / mid) * (mid - 1)))`` with
    ``mid = bucket_size // 2``; the bucket is shifted by ``bucket_size - 1``. Then the CLS row, CLS
    column and CLS-to-CLS entries are set to ``2*bucket_size - 1``, ``+1`` and ``+2``
    (table of ``2*bucket_size + 2`` rows).

    Returns:
        ``max_positions x max_positions`` int64 tensor (CPU).
    """
    if not bucket_size < max_positions:
        raise ValueError(f"bucket_size {bucket_size} must be < max_positions {max_positions}")
    pos = torch.arange(max_positions, dtype=torch.long, device="cpu")
    rel = pos[:, None] - pos[None, :]
    mid = bucket_size // 2
    abs_rel = rel.abs()
    # clamp small offsets away from 0 before the log; they are replaced by `rel` below anyway
    safe_abs = torch.where(abs_rel < mid, torch.full_like(abs_rel, max(mid - 1, 1)), abs_rel)
    log_bucket = mid + torch.ceil(torch.log(safe_abs / mid) / math.log((max_positions - 1) / mid) * (mid - 1)).long()
    bucket = torch.where(abs_rel <= mid, rel, log_bucket * torch.sign(rel)) + bucket_size - 1
    num_rel = 2 * bucket_size - 1
    bucket[0, :] = num_rel
    bucket[:, 0] = num_rel + 1
    bucket[0, 0] = num_rel + 2
    return bucket


def conv_stack_length(n_samples: int, spec: Sequence[tuple[int, int, int]] = AUDIO_FEATURE_SPEC) -> int:
    """Frames produced by the audio conv stack for ``n_samples`` (no padding): per layer
    ``L = floor((L - kernel) / stride) + 1``. 16000 samples -> 49 frames with the official spec."""
    length = n_samples
    for _, kernel, stride in spec:
        length = (length - kernel) // stride + 1
    return length


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
class _TransposeLast(nn.Module):
    """Swap the last two dims (keeps the reference's module indices, hence the key names)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


class LayerNorm2D(nn.Module):
    """LayerNorm over channels of an ``N x C x H x W`` map (key ``layer_norm.*``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(channels, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def hmlp_stem(embed_dim: int) -> nn.Sequential:
    """hMLP patch stem: Conv(3, D/4, 4, s4) LN GELU Conv(D/4, D/4, 2, s2) LN GELU Conv(D/4, D, 2, s2).

    Keys ``0.*, 1.layer_norm.*, 3.*, 4.layer_norm.*, 6.*``; total stride 16."""
    quarter = embed_dim // 4
    return nn.Sequential(
        nn.Conv2d(3, quarter, kernel_size=4, stride=4),
        LayerNorm2D(quarter),
        nn.GELU(),
        nn.Conv2d(quarter, quarter, kernel_size=2, stride=2),
        LayerNorm2D(quarter),
        nn.GELU(),
        nn.Conv2d(quarter, embed_dim, kernel_size=2, stride=2),
    )


class GeGLU(nn.Module):
    """``GELU(x W0) * (x W1)`` without biases (keys ``wi_0``, ``wi_1``)."""

    def __init__(self, embed_dim: int, ffn_dim: int):
        super().__init__()
        self.wi_0 = nn.Linear(embed_dim, ffn_dim, bias=False)
        self.wi_1 = nn.Linear(embed_dim, ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.wi_0(x)) * self.wi_1(x)


def geglu_ffn(embed_dim: int, ffn_dim: int) -> nn.Sequential:
    """GeGLU FFN with the 'scale_fc' LayerNorm: keys ``0.wi_0, 0.wi_1, 2.{weight,bias}, 3.{weight,bias}``
    (index 1 is the reference's activation dropout, identity at inference)."""
    return nn.Sequential(
        GeGLU(embed_dim, ffn_dim), nn.Identity(), nn.LayerNorm(ffn_dim, eps=LN_EPS), nn.Linear(ffn_dim, embed_dim)
    )


class MultiheadAttention(nn.Module):
    """Self-attention with q/v bias (no k bias) and the magneto LayerNorm ``ln`` before ``out_proj``."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.ln = nn.LayerNorm(embed_dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            x: ``B x L x D``.
            attn_bias: additive bias broadcastable to ``B x H x L x L`` (e.g. ``1 x H x L x L``), or None.
        Returns:
            ``B x L x D``.
        """
        b, length, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # B x L x D -> B x H x L x Dh
            return t.view(b, length, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # B x H x L x Dh
        out = out.transpose(1, 2).reshape(b, length, d)
        return self.out_proj(self.ln(out))


class TransformerLayer(nn.Module):
    """Pre-LN layer shared by all modalities; only the FFN (``{m}_ffn``) is modality specific."""

    def __init__(self, embed_dim: int, ffn_dim: int, num_heads: int, modalities: Sequence[str]):
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dim, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.gamma_1 = nn.Parameter(torch.ones(embed_dim))
        self.gamma_2 = nn.Parameter(torch.ones(embed_dim))
        for m in modalities:
            self.add_module(f"{m}_ffn", geglu_ffn(embed_dim, ffn_dim))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None, modality: str) -> torch.Tensor:
        """``B x L x D`` -> ``B x L x D`` for tokens of one ``modality``."""
        x = x + self.gamma_1 * self.self_attn(self.self_attn_layer_norm(x), attn_bias)
        ffn = getattr(self, f"{modality}_ffn")
        return x + self.gamma_2 * ffn(self.final_layer_norm(x))


# ---------------------------------------------------------------------------------------------
# adapters
# ---------------------------------------------------------------------------------------------
def _resize_pos_grid(pos_embed: torch.Tensor, src: int, dst: int) -> torch.Tensor:
    """Bicubic resize of a ``(src*src + 1) x D`` position table (row 0 = CLS) to ``dst x dst``."""
    if src == dst:
        return pos_embed
    cls_pos, grid = pos_embed[:1], pos_embed[1:]
    grid = grid.reshape(1, src, src, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(dst, dst), mode="bicubic").to(pos_embed.dtype)
    return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(dst * dst, -1)], dim=0)


class ImageAdapter(nn.Module):
    """hMLP stem + CLS + absolute position embedding + 2-D relative position table (one, shared)."""

    rp_bucket: torch.Tensor  # relative-position bucket index buffer

    def __init__(self, cfg: OnePeaceConfig):
        super().__init__()
        d = cfg.embed_dim
        self.grid_size = cfg.grid_size
        self.pos_bucket_size = cfg.pos_bucket_size
        self.embed_images = hmlp_stem(d)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(cfg.pos_bucket_size**2 + 1, d))
        num_rel = (2 * cfg.grid_size - 1) ** 2 + 3
        self.rel_pos_table_list = nn.ModuleList([nn.Embedding(num_rel, cfg.attention_heads)])
        self.register_buffer("rp_bucket", image_rel_pos_index(cfg.grid_size), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            images: ``B x 3 x S x S`` normalised pixels, ``S = image_size``.
        Returns:
            tokens ``B x (1 + G*G) x D`` and relative bias ``1 x H x (1+G*G) x (1+G*G)``.
        """
        if (
            images.dim() != 4
            or images.shape[1] != 3
            or images.shape[2] != images.shape[3]
            or images.shape[2] // PATCH_SIZE != self.grid_size
        ):
            side = self.grid_size * PATCH_SIZE
            raise ValueError(f"expected images of shape B x 3 x {side} x {side}, got {tuple(images.shape)}")
        b = images.shape[0]
        patches = self.embed_images(images).flatten(2).transpose(1, 2)  # B x G*G x D
        x = torch.cat([self.cls_embedding.expand(b, -1, -1).to(patches.dtype), patches], dim=1)
        x = x + _resize_pos_grid(self.pos_embed, self.pos_bucket_size, self.grid_size)
        bias = self.rel_pos_table_list[0](self.rp_bucket).permute(2, 0, 1).unsqueeze(0)  # 1 x H x L x L
        return x, bias


class ConvFeatureExtractor(nn.Module):
    """wav2vec2 conv stack: per layer Conv1d (no bias) -> LayerNorm over channels -> GELU.

    Keys ``conv_layers.{i}.0.weight`` and ``conv_layers.{i}.2.1.{weight,bias}``."""

    def __init__(self, spec: Sequence[tuple[int, int, int]]):
        super().__init__()
        self.conv_layers = nn.ModuleList()
        in_ch = 1
        for i, item in enumerate(spec):
            if len(item) != 3:
                raise ValueError(f"audio_feature_spec[{i}] must be (channels, kernel, stride), got {item}")
            ch, kernel, stride = item
            self.conv_layers.append(
                nn.Sequential(
                    nn.Conv1d(in_ch, ch, kernel, stride=stride, bias=False),
                    nn.Identity(),
                    nn.Sequential(_TransposeLast(), nn.LayerNorm(ch, eps=LN_EPS), _TransposeLast()),
                    nn.GELU(),
                )
            )
            in_ch = ch

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``B x N`` samples -> ``B x C x T`` frames."""
        x = wav.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x


class _ConvPosLayer(nn.Sequential):
    """Grouped Conv1d (bias) -> LayerNorm without affine -> GELU on ``B x D x T`` (key ``0.*``)."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__(
            nn.Conv1d(dim, dim, kernel_size=kernel, padding=kernel // 2, groups=groups),
            nn.Identity(),
            _TransposeLast(),
            nn.LayerNorm(dim, eps=LN_EPS, elementwise_affine=False),
            _TransposeLast(),
            nn.GELU(),
        )
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)
        if self.remove:  # 'SamePad': an even kernel yields one extra frame
            x = x[:, :, : -self.remove]
        for module in list(self)[2:]:
            x = module(x)
        return x


class AudioAdapter(nn.Module):
    """Conv feature stack -> LN -> Linear(C, D); conv positional embedding; CLS; 1-D relative table."""

    rp_bucket: torch.Tensor  # relative-position bucket index buffer

    def __init__(self, cfg: OnePeaceConfig):
        super().__init__()
        d = cfg.embed_dim
        self.feature_spec = tuple((int(c), int(k), int(s)) for c, k, s in cfg.audio_feature_spec)
        feat_dim = self.feature_spec[-1][0]
        self.embed_audios = nn.Sequential(
            ConvFeatureExtractor(self.feature_spec),
            _TransposeLast(),
            nn.LayerNorm(feat_dim, eps=LN_EPS),
            nn.Linear(feat_dim, d),
        )
        k = cfg.conv_pos_kernel
        self.embed_positions = nn.Sequential(
            _TransposeLast(),
            *[_ConvPosLayer(d, k, cfg.audio_conv_pos_groups) for _ in range(cfg.audio_conv_pos_depth)],
            _TransposeLast(),
        )
        self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, d))
        self.max_positions = cfg.audio_max_positions
        self.rel_pos_table_list = nn.ModuleList([nn.Embedding(2 * cfg.audio_rel_bucket_size + 2, cfg.attention_heads)])
        self.register_buffer(
            "rp_bucket", audio_rel_pos_index(cfg.audio_rel_bucket_size, cfg.audio_max_positions), persistent=False
        )

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            wav: ``B x N`` layer-normalised 16 kHz waveforms of equal length (no padding).
        Returns:
            tokens ``B x (1 + T) x D`` (T from :func:`conv_stack_length`) and bias ``1 x H x (1+T) x (1+T)``.
        """
        if wav.dim() != 2:
            raise ValueError(f"expected waveforms of shape B x N, got {tuple(wav.shape)}")
        frames = conv_stack_length(wav.shape[1], self.feature_spec)
        if frames < 1:
            raise ValueError(f"waveform of {wav.shape[1]} samples is too short for the audio conv stack")
        if frames + 1 > self.max_positions:
            raise ValueError(
                f"{frames + 1} audio tokens exceed audio_max_positions {self.max_positions} "
                f"(ONE-PEACE uses at most 15 s of audio)"
            )
        b = wav.shape[0]
        x = self.embed_audios(wav)  # B x T x D
        pos = self.embed_positions(x)  # B x T x D
        pos = torch.cat([self.cls_pos_embed.expand(b, -1, -1).to(pos.dtype), pos], dim=1)
        x = torch.cat([self.cls_embedding.expand(b, -1, -1).to(x.dtype), x], dim=1) + pos
        length = x.shape[1]
        bias = self.rel_pos_table_list[0](self.rp_bucket[:length, :length]).permute(2, 0, 1).unsqueeze(0)
        return x, bias


# ---------------------------------------------------------------------------------------------
# pretrained ONE-PEACE (one-peace.pt)
# ---------------------------------------------------------------------------------------------
class FusionModel(nn.Module):
    """The shared transformer (``fusion_model``) with final per-modality LayerNorms."""

    def __init__(self, cfg: OnePeaceConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                TransformerLayer(cfg.embed_dim, cfg.ffn_embed_dim, cfg.attention_heads, cfg.modalities)
                for _ in range(cfg.layers)
            ]
        )
        for m in cfg.modalities:
            self.add_module(f"{m}_layer_norm", nn.LayerNorm(cfg.embed_dim, eps=LN_EPS))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor, modality: str) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attn_bias, modality)
        return getattr(self, f"{modality}_layer_norm")(x)


class EncoderWrapper(nn.Module):
    """Adapters + fusion model (``encoder_wrapper`` in the checkpoint)."""

    def __init__(self, cfg: OnePeaceConfig):
        super().__init__()
        if "image" in cfg.modalities:
            self.image_adapter = ImageAdapter(cfg)
        if "audio" in cfg.modalities:
            self.audio_adapter = AudioAdapter(cfg)
        self.fusion_model = FusionModel(cfg)


class OnePeaceModel(nn.Module):
    """ONE-PEACE image and audio encoders with the checkpoint's module names.

    Args:
        cfg: architecture; :meth:`OnePeaceConfig.full` for the released model,
            :meth:`OnePeaceConfig.tiny` for tests.
    """

    def __init__(self, cfg: OnePeaceConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder_wrapper = EncoderWrapper(cfg)
        if cfg.with_projection:
            for m in cfg.modalities:
                self.add_module(f"{m}_proj", nn.Linear(cfg.embed_dim, cfg.embed_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Random initialisation (truncated normal for weights, as in the reference's init; zero
        relative tables would make tests blind to the bias path, so they are drawn too)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)):
                if module.weight.device.type != "meta":
                    nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                bias = getattr(module, "bias", None)  # nn.Embedding has none
                if isinstance(bias, torch.Tensor) and bias.device.type != "meta":
                    nn.init.zeros_(bias)
        for name, p in self.named_parameters():
            if p.device.type == "meta":
                continue
            if name.endswith(("cls_embedding", "pos_embed", "cls_pos_embed")):
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
            elif name.endswith(("gamma_1", "gamma_2")):
                nn.init.constant_(p, 0.1)

    def _require(self, modality: str) -> None:
        if modality not in self.cfg.modalities:
            raise ValueError(f"this model was built without the {modality!r} branch (modalities={self.cfg.modalities})")

    def encode(self, inputs: torch.Tensor, *, modality: str) -> torch.Tensor:
        """Token features after the final ``{modality}_layer_norm``.

        Args:
            inputs: images ``B x 3 x S x S`` (``modality="image"``) or waveforms ``B x N`` (``"audio"``).
            modality: ``"image"`` or ``"audio"``.
        Returns:
            ``B x L x D`` (token 0 = CLS).
        """
        self._require(modality)
        adapter = getattr(self.encoder_wrapper, f"{modality}_adapter")
        x, bias = adapter(inputs)
        return self.encoder_wrapper.fusion_model(x, bias, modality)

    def embed(
        self, inputs: torch.Tensor, *, modality: str, project: bool = True, normalize: bool = True
    ) -> torch.Tensor:
        """Clip embedding from the CLS token.

        Args:
            inputs: as :meth:`encode`.
            modality: ``"image"`` or ``"audio"``.
            project: apply ``{modality}_proj`` (the retrieval head).
            normalize: L2-normalise the result (as the retrieval model does after the projection).
        Returns:
            ``B x D``.
        """
        cls = self.encode(inputs, modality=modality)[:, 0]  # B x D
        if project:
            if not self.cfg.with_projection:
                raise ValueError("project=True needs a model built with with_projection=True")
            cls = getattr(self, f"{modality}_proj")(cls)
        return F.normalize(cls.float(), dim=-1) if normalize else cls


# ---------------------------------------------------------------------------------------------
# Kinetics-400 video model (onepeace_video_k400.pth)
# ---------------------------------------------------------------------------------------------
class BottleneckAdapter(nn.Module):
    """AIM adapter ``D_fc2(GELU(D_fc1(x)))`` (+ x when ``skip_connect``)."""

    def __init__(self, dim: int, ratio: float, skip_connect: bool):
        super().__init__()
        self.skip_connect = skip_connect
        hidden = int(dim * ratio)
        self.D_fc1 = nn.Linear(dim, hidden)
        self.D_fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.D_fc2(F.gelu(self.D_fc1(x)))
        return x + y if self.skip_connect else y


class VideoImageAdapter(nn.Module):
    """Per-frame hMLP stem + CLS + ``pos_embed`` + ``temporal_embedding``; one shared relative table."""

    rp_bucket: torch.Tensor  # relative-position bucket index buffer

    def __init__(self, cfg: OnePeaceVideoConfig):
        super().__init__()
        d = cfg.embed_dim
        self.num_frames = cfg.num_frames
        self.grid_size = cfg.bucket_size
        self.embed_images = hmlp_stem(d)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(cfg.bucket_size**2 + 1, d))
        self.temporal_embedding = nn.Parameter(torch.zeros(1, cfg.num_frames, d))
        self.rel_pos_table = nn.Embedding((2 * cfg.bucket_size - 1) ** 2 + 3, cfg.attention_heads)
        self.register_buffer("rp_bucket", image_rel_pos_index(cfg.bucket_size), persistent=False)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            frames: ``(B*T) x 3 x S x S``, frames of each clip contiguous.
        Returns:
            tokens ``(B*T) x L x D`` and bias ``1 x H x L x L``, ``L = 1 + G*G``.
        """
        bt = frames.shape[0]
        patches = self.embed_images(frames).flatten(2).transpose(1, 2)  # BT x G*G x D
        x = torch.cat([self.cls_embedding.expand(bt, -1, -1).to(patches.dtype), patches], dim=1) + self.pos_embed
        n, d = x.shape[1], x.shape[2]
        x = x.view(bt // self.num_frames, self.num_frames, n, d) + self.temporal_embedding[:, :, None, :]
        bias = self.rel_pos_table(self.rp_bucket).permute(2, 0, 1).unsqueeze(0)
        return x.view(bt, n, d), bias


class VideoTransformerLayer(nn.Module):
    """ONE-PEACE layer with AIM-style adapters (temporal, spatial, MLP), as in the K400 fine-tune.

    With ``x`` of shape ``(B*T) x L x D``::

        xt = T_Adapter(MHA(self_attn_layer_norm(x) over the T frames of each token position))
        s  = S_Adapter(MHA(self_attn_layer_norm(x + xt), rel_pos_bias))        # over the L tokens
        h  = x + gamma_1 * s                  # residual is x, *not* x + xt (as in the reference)
        y  = h + gamma_2 * image_ffn(final_layer_norm(h)) + scale * MLP_Adapter(final_layer_norm(h))

    The temporal and spatial passes share ``self_attn`` and ``self_attn_layer_norm``; the temporal
    pass has no position bias.
    """

    def __init__(self, cfg: OnePeaceVideoConfig):
        super().__init__()
        d = cfg.embed_dim
        self.num_frames = cfg.num_frames
        self.scale = cfg.adapter_scale
        self.self_attn = MultiheadAttention(d, cfg.attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=LN_EPS)
        self.image_ffn = geglu_ffn(d, cfg.ffn_embed_dim)
        self.final_layer_norm = nn.LayerNorm(d, eps=LN_EPS)
        self.gamma_1 = nn.Parameter(torch.ones(d))
        self.gamma_2 = nn.Parameter(torch.ones(d))
        self.MLP_Adapter = BottleneckAdapter(d, cfg.adapter_ratio, skip_connect=False)
        self.S_Adapter = BottleneckAdapter(d, cfg.adapter_ratio, skip_connect=True)
        self.T_Adapter = BottleneckAdapter(d, cfg.adapter_ratio, skip_connect=False)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        bt, n, d = x.shape
        t = self.num_frames
        b = bt // t
        xt = x.view(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)  # (B*L) x T x D
        xt = self.T_Adapter(self.self_attn(self.self_attn_layer_norm(xt)))
        xt = xt.view(b, n, t, d).transpose(1, 2).reshape(bt, n, d)
        s = self.S_Adapter(self.self_attn(self.self_attn_layer_norm(x + xt), attn_bias))
        h = x + self.gamma_1 * s
        hn = self.final_layer_norm(h)
        return h + self.gamma_2 * self.image_ffn(hn) + self.scale * self.MLP_Adapter(hn)


class VideoEncoder(nn.Module):
    """Stack of :class:`VideoTransformerLayer` + ``image_layer_norm`` (``encoder`` in the checkpoint)."""

    def __init__(self, cfg: OnePeaceVideoConfig):
        super().__init__()
        self.layers = nn.ModuleList([VideoTransformerLayer(cfg) for _ in range(cfg.layers)])
        self.image_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attn_bias)
        return self.image_layer_norm(x)


class OnePeaceVideoModel(nn.Module):
    """The K400 fine-tuned ONE-PEACE video backbone (``OnePeaceViT`` of the reference, no class head).

    Args:
        cfg: architecture; :meth:`OnePeaceVideoConfig.full` or :meth:`OnePeaceVideoConfig.tiny`.
    """

    def __init__(self, cfg: OnePeaceVideoConfig):
        super().__init__()
        self.cfg = cfg
        self.image_adapter = VideoImageAdapter(cfg)
        self.encoder = VideoEncoder(cfg)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Random initialisation for tests (adapters get non-zero outputs so every path is exercised)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)) and module.weight.device.type != "meta":
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                bias = getattr(module, "bias", None)  # nn.Embedding has none
                if isinstance(bias, torch.Tensor):
                    nn.init.zeros_(bias)
        for name, p in self.named_parameters():
            if p.device.type == "meta":
                continue
            if name.endswith(("cls_embedding", "pos_embed", "temporal_embedding")):
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
            elif name.endswith(("gamma_1", "gamma_2")):
                nn.init.constant_(p, 0.1)

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Per-frame CLS after ``image_layer_norm``.

        Args:
            clips: ``B x 3 x T x S x S`` normalised frames (``T = num_frames``).
        Returns:
            ``B x T x D``.
        """
        cfg = self.cfg
        side = cfg.image_size
        if (
            clips.dim() != 5
            or clips.shape[1] != 3
            or clips.shape[2] != cfg.num_frames
            or clips.shape[3] != side
            or clips.shape[4] != side
        ):
            raise ValueError(
                f"expected clips of shape B x 3 x {cfg.num_frames} x {side} x {side}, got {tuple(clips.shape)}"
            )
        b, _, t = clips.shape[:3]
        frames = clips.transpose(1, 2).reshape(b * t, 3, side, side)  # (B*T) x 3 x S x S
        x, bias = self.image_adapter(frames)
        x = self.encoder(x, bias)  # (B*T) x L x D
        return x[:, 0].view(b, t, -1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Clip feature: mean over frames of the per-frame CLS (``B x D``), as fed to the I3D head."""
        return self.frame_features(clips).mean(dim=1)


__all__ = [
    "AUDIO_FEATURE_SPEC",
    "CLIP_MEAN",
    "CLIP_STD",
    "K400_MEAN_255",
    "K400_STD_255",
    "PATCH_SIZE",
    "OnePeaceConfig",
    "OnePeaceVideoConfig",
    "OnePeaceModel",
    "OnePeaceVideoModel",
    "image_rel_pos_index",
    "audio_rel_pos_index",
    "conv_stack_length",
]
