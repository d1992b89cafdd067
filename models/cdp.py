"""Cross-modal Dynamic Perception (LoCo, Xing et al., AAAI 2025, section 3.4) and its pyramid.

A CDP block is the UnAV cross-modal transformer block (pre-LN, strided depthwise convs on
query / key / value that downsample between pyramid levels, max-pooled residual from the
key/value modality, MLP) whose dense attention is replaced by *dynamic window attention*:

1. the (downsampled) sequence is cut into non-overlapping base windows of ``W`` rows;
2. Window Adaptation (WA): the keys of each base window are average-pooled over its valid rows,
   passed through LeakyReLU and a 1x1 conv that predicts, per head, a size ``P`` and an offset
   ``O`` (eq. 7); the conv is zero-initialised so every target window starts as its base window;
3. the target window of head ``h`` has centre ``c_w + O * W`` and length ``W * exp(P)``;
   ``W`` keys and values are sampled uniformly from it by linear interpolation along time
   (differentiable in ``P`` and ``O``); with ``P = O = 0`` the samples are exactly the rows of
   the base window;
4. cross-modal sliding window attention (CSWA): the queries of base window ``w`` attend to the
   sampled keys of target windows ``w - n .. w + n`` (``n = neighbor_windows``, Longformer-style
   overlap that bridges windows while the cost stays linear in ``T``).

Choices the paper leaves open, all fields of :class:`CdpConfig`: the size parameterisation
(``exp``), offset unit (base windows), interpolation ("linear"; "nearest" gives no gradient to
size/offset), borders ("clamp": sample positions are clamped to the first/last valid row of the
sample, "zeros": rows outside the sequence read as zero and are masked), key validity (a sampled
key is valid when at least half of its interpolation weight lies on valid rows; invalid rows
contribute nothing), sizes/offsets shared by keys and values (one WA per block: table 3's
+0.05 M over global attention), and sequences whose length is not a multiple of ``W`` (padded
with invalid rows).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from avel.models.blocks import MaskedMHCA, TransformerBlock, downsample_mask

CROSS_MODAL_MODES = ("cdp", "fixed", "global", "none")
_MAX_SCALE = 1e4  # target windows longer than 1e4 base windows are clipped to that length


@dataclass
class CdpConfig:
    """CDP / cross-modal pyramid options (defaults: the paper).

    Attributes:
        mode: cross-modal interaction of the pyramid (LoCo tables 2a, 2c, 2d): "cdp" (dynamic
            windows), "fixed" (sliding window attention on the base windows, no WA), "global"
            (dense cross-attention, the UnAV / UniAV pyramid; table 2d "Full") or "none" (no
            cross-modal blocks: levels are built by max-pooling each modality; table 2a rows
            without CDP). Table 3's "base" costs fit a single full-resolution level (see
            :mod:`avel.models.dense.loco`): "none" with ``num_levels`` 1.
        num_levels: pyramid levels L_c (6), the first at full resolution.
        scale_factor: downsampling ratio between levels (2).
        num_heads: attention heads H (4).
        window_size: base window W (8; table 2d: 4, 8, 16, 32).
        neighbor_windows: CSWA reach: queries also attend to this many target windows on each side.
        window_scale: "exp" (length ``W * exp(P)``) or "affine" (length ``W * max(1 + P, min_scale)``).
        min_scale: lower bound of the "affine" scale.
        offset_unit: "window" (centre shift ``O * W`` rows) or "row" (``O`` rows).
        interpolation: "linear" (differentiable in size and offset) or "nearest".
        border: "clamp" or "zeros" (see the module docstring).
        shared_kv_window: keys and values use the same target windows (one WA predicting from the
            keys); False adds a second WA predicting from the values.
        leaky_relu_slope: negative slope of the WA LeakyReLU.
        zero_init_window: zero-initialise the WA conv (start from the base windows).
        attn_pdrop, proj_pdrop, path_pdrop: dropouts (UnAV: 0, 0, 0.1).
    """

    mode: str = "cdp"
    num_levels: int = 6
    scale_factor: int = 2
    num_heads: int = 4
    window_size: int = 8
    neighbor_windows: int = 1
    window_scale: str = "exp"
    min_scale: float = 0.1
    offset_unit: str = "window"
    interpolation: str = "linear"
    border: str = "clamp"
    shared_kv_window: bool = True
    leaky_relu_slope: float = 0.01
    zero_init_window: bool = True
    attn_pdrop: float = 0.0
    proj_pdrop: float = 0.0
    path_pdrop: float = 0.1

    def __post_init__(self) -> None:
        choices = {
            "mode": CROSS_MODAL_MODES,
            "window_scale": ("exp", "affine"),
            "offset_unit": ("window", "row"),
            "interpolation": ("linear", "nearest"),
            "border": ("clamp", "zeros"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"cdp.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.window_size < 1:
            raise ValueError(f"cdp.window_size must be >= 1, got {self.window_size}")
        if self.neighbor_windows < 0:
            raise ValueError(f"cdp.neighbor_windows must be >= 0, got {self.neighbor_windows}")
        if self.num_levels < 1:
            raise ValueError(f"cdp.num_levels must be >= 1, got {self.num_levels}")


def base_window_positions(num_windows: int, window_size: int, *, device: torch.device | None = None) -> torch.Tensor:
    """Row positions of the base windows, ``N x W`` (window ``n`` holds rows ``nW .. nW + W - 1``)."""
    return torch.arange(num_windows * window_size, dtype=torch.float32, device=device).view(num_windows, window_size)


def target_window_positions(
    size: torch.Tensor,
    offset: torch.Tensor,
    window_size: int,
    *,
    window_scale: str = "exp",
    min_scale: float = 0.1,
    offset_unit: str = "window",
) -> torch.Tensor:
    """Uniform sample positions (in rows) inside the target windows.

    Args:
        size: ``... x N`` raw size predictions P (0 = base window length).
        offset: ``... x N`` raw offset predictions O (0 = base window centre).
        window_size: W, also the number of samples per window.
        window_scale, min_scale, offset_unit: see :class:`CdpConfig`.

    Returns:
        ``... x N x W`` positions; for ``P = O = 0`` exactly the base window rows.
    """
    W = window_size
    N = size.shape[-1]
    scale = size.exp() if window_scale == "exp" else (1.0 + size).clamp(min=min_scale)
    scale = scale.clamp(max=_MAX_SCALE)  # ... x N; keeps positions finite
    shift = offset * W if offset_unit == "window" else offset
    centre = torch.arange(N, dtype=size.dtype, device=size.device) * W + 0.5 * (W - 1) + shift  # ... x N
    rel = torch.arange(W, dtype=size.dtype, device=size.device) - 0.5 * (W - 1)  # W
    return centre[..., None] + rel * scale[..., None]


def sample_rows(
    x: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor,
    *,
    interpolation: str = "linear",
    border: str = "clamp",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``x`` at fractional row positions, per head.

    Args:
        x: ``B x H x T x Dh`` features (rows on dim 2).
        positions: ``B x H x S`` fractional row indices.
        mask: ``B x T`` bool, True = valid row.
        interpolation: "linear" or "nearest".
        border: "clamp" (positions clamped to the sample's first..last valid row) or "zeros"
            (rows outside ``[0, T)`` read as invalid zeros).

    Returns:
        ``B x H x S x Dh`` sampled features and ``B x H x S`` validity (at least half the
        interpolation weight on valid rows). Invalid rows contribute zero.
    """
    B, H, T, Dh = x.shape
    pos = positions.float()  # fractional positions stay float32 under AMP
    if border == "clamp":
        idx = torch.arange(T, device=x.device, dtype=pos.dtype)
        first = torch.where(mask, idx, torch.full_like(idx, T)).amin(dim=1)  # B
        last = torch.where(mask, idx, torch.full_like(idx, -1)).amax(dim=1)  # B
        first = first.clamp(max=T - 1)
        last = torch.maximum(last, first)
        pos = torch.minimum(torch.maximum(pos, first[:, None, None]), last[:, None, None])
    if interpolation == "nearest":
        corners = [(torch.floor(pos + 0.5), torch.ones_like(pos))]
    else:
        i0 = torch.floor(pos)
        frac = pos - i0
        corners = [(i0, 1.0 - frac), (i0 + 1.0, frac)]
    out = x.new_zeros(B, H, pos.shape[-1], Dh)
    weight_valid = pos.new_zeros(pos.shape)
    mask_h = mask[:, None, :].expand(B, H, T)
    for i, w in corners:
        inside = (i >= 0) & (i <= T - 1)
        li = i.clamp(0, T - 1).long()  # B x H x S
        valid = inside & torch.gather(mask_h, 2, li)
        w = w * valid.to(w.dtype)
        vals = torch.gather(x, 2, li[..., None].expand(B, H, li.shape[-1], Dh))
        out = out + vals * w[..., None].to(x.dtype)
        weight_valid = weight_valid + w
    return out, weight_valid >= 0.5


def _neighbourhood(x: torch.Tensor, n: int, fill: float | bool) -> torch.Tensor:
    """``B x H x N x W (x Dh)`` -> ``B x H x N x (2n+1)W (x Dh)``: windows ``w-n .. w+n`` side by side."""
    if n == 0:
        return x
    N = x.shape[2]
    pad_shape = list(x.shape)
    pad_shape[2] = n
    pad = torch.full(pad_shape, fill, dtype=x.dtype, device=x.device)
    xp = torch.cat([pad, x, pad], dim=2)
    return torch.cat([xp[:, :, j : j + N] for j in range(2 * n + 1)], dim=3)


class WindowAdaptation(nn.Module):
    """WA (eq. 7): masked average pool over each base window -> LeakyReLU -> 1x1 conv -> ``(P, O)``.

    Args:
        dim: channels of the keys.
        num_heads: H; the conv outputs one size and one offset per head.
        negative_slope: LeakyReLU slope.
        zero_init: zero weights and bias (start from the base windows).
    """

    def __init__(self, dim: int, num_heads: int, *, negative_slope: float = 0.01, zero_init: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.negative_slope = negative_slope
        self.conv = nn.Conv1d(dim, 2 * num_heads, 1)
        if zero_init:
            nn.init.zeros_(self.conv.weight)
            if self.conv.bias is not None:
                nn.init.zeros_(self.conv.bias)

    def forward(self, k: torch.Tensor, mask: torch.Tensor, window_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        # k: B x C x N*W, mask: B x N*W -> size, offset: B x H x N
        B, C, Tp = k.shape
        N = Tp // window_size
        m = mask.view(B, 1, N, window_size).to(k.dtype)
        pooled = (k.view(B, C, N, window_size) * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # B x C x N
        out = self.conv(F.leaky_relu(pooled, self.negative_slope))  # B x 2H x N
        return out[:, : self.num_heads], out[:, self.num_heads :]


class DynamicWindowAttention(MaskedMHCA):
    """Masked multi-head cross-attention over dynamic (or fixed) windows; same projections as
    :class:`MaskedMHCA` (strided depthwise convs + LN + 1x1), queries from ``x_q``, keys/values
    from ``x_kv``.

    Args:
        dim: channels.
        cfg: :class:`CdpConfig` (``mode`` "cdp" adds WA; "fixed" uses the base windows).
        stride: downsampling stride of this level (1 or even).
    """

    def __init__(self, dim: int, cfg: CdpConfig, *, stride: int = 1) -> None:
        super().__init__(
            dim, cfg.num_heads, q_stride=stride, kv_stride=stride, attn_pdrop=cfg.attn_pdrop, proj_pdrop=cfg.proj_pdrop
        )
        self.cfg = cfg
        self.dynamic = cfg.mode == "cdp"
        adaptation = functools.partial(
            WindowAdaptation, dim, cfg.num_heads, negative_slope=cfg.leaky_relu_slope, zero_init=cfg.zero_init_window
        )
        self.window_adapt = adaptation() if self.dynamic else None
        self.value_window_adapt = adaptation() if self.dynamic and not cfg.shared_kv_window else None

    def positions(self, k: torch.Tensor, kv_mask: torch.Tensor, adapt: WindowAdaptation | None) -> torch.Tensor:
        """``B x H x N x W`` sample positions for keys ``k`` (``B x C x N*W``)."""
        cfg, W = self.cfg, self.cfg.window_size
        B, _, Tp = k.shape
        N = Tp // W
        if adapt is None:
            return base_window_positions(N, W, device=k.device).expand(B, self.num_heads, N, W)
        size, offset = adapt(k, kv_mask, W)
        return target_window_positions(
            size.float(),
            offset.float(),
            W,
            window_scale=cfg.window_scale,
            min_scale=cfg.min_scale,
            offset_unit=cfg.offset_unit,
        )

    def forward(self, x_kv: torch.Tensor, x_q: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x_kv, x_q: B x C x T; mask: B x 1 x T -> out B x C x T', mask B x 1 x T' (T' = T / stride)
        cfg, W, H, Dh = self.cfg, self.cfg.window_size, self.num_heads, self.head_dim
        B, C, _ = x_kv.shape
        q, k, v, q_mask, kv_mask = self.project(x_kv, x_q, mask)
        T = q.shape[-1]
        N = -(-T // W)
        pad = N * W - T
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))  # B x C x N*W
        kvm = F.pad(kv_mask[:, 0], (0, pad), value=False)  # B x N*W
        pos_k = self.positions(k, kvm, self.window_adapt)  # B x H x N x W
        pos_v = pos_k if self.value_window_adapt is None else self.positions(v, kvm, self.value_window_adapt)
        heads = lambda t: t.view(B, H, Dh, N * W).transpose(2, 3)  # noqa: E731  B x H x N*W x Dh
        sk, valid = sample_rows(
            heads(k), pos_k.reshape(B, H, N * W), kvm, interpolation=cfg.interpolation, border=cfg.border
        )
        sv, valid_v = sample_rows(
            heads(v), pos_v.reshape(B, H, N * W), kvm, interpolation=cfg.interpolation, border=cfg.border
        )
        # a base window without valid rows (pure padding) yields no keys
        valid = (valid & valid_v).view(B, H, N, W) & kvm.view(B, 1, N, W).any(-1, keepdim=True)
        n = cfg.neighbor_windows
        sk = _neighbourhood(sk.view(B, H, N, W, Dh), n, 0.0)  # B x H x N x K x Dh
        sv = _neighbourhood(sv.view(B, H, N, W, Dh) * valid[..., None].to(sv.dtype), n, 0.0)
        valid = _neighbourhood(valid, n, False)  # B x H x N x K
        qw = heads(q).view(B, H, N, W, Dh)
        att = (qw * self.scale) @ sk.transpose(-2, -1)  # B x H x N x W x K
        att = att.masked_fill(~valid[:, :, :, None, :], torch.finfo(att.dtype).min)
        att = self.attn_drop(torch.softmax(att, dim=-1))
        out = att @ sv  # B x H x N x W x Dh
        out = out.reshape(B, H, N * W, Dh).transpose(2, 3).reshape(B, C, N * W)[..., :T]
        out = self.proj_drop(self.proj(out)) * q_mask.to(out.dtype)
        return out, q_mask


class CdpBlock(TransformerBlock):
    """Pre-LN CDP block: ``out = pool(x_kv) + CSWA(LN(x_kv), LN(x_q)); out = out + MLP(LN(out))`` (eq. 8).

    Args:
        dim: channels.
        cfg: :class:`CdpConfig`.
        stride: downsampling stride of this level.
    """

    def __init__(self, dim: int, cfg: CdpConfig, *, stride: int = 1) -> None:
        super().__init__(
            dim,
            cfg.num_heads,
            stride=stride,
            attn_pdrop=cfg.attn_pdrop,
            proj_pdrop=cfg.proj_pdrop,
            path_pdrop=cfg.path_pdrop,
        )
        self.attn = DynamicWindowAttention(dim, cfg, stride=stride)


class CrossModalDynamicPyramid(nn.Module):
    """``(V, A, mask)`` with ``V, A: B x D x T`` -> per-level ``[Z_v; Z_a]`` (``B x 2D x T_l``) and masks.

    At level ``l`` the visual stream is updated with audio queries (``Z_v``: audio-related visual
    features) and the audio stream with visual queries, both from the previous level's outputs.

    Args:
        dim: D of each modality.
        cfg: :class:`CdpConfig`.
    """

    def __init__(self, *, dim: int, cfg: CdpConfig) -> None:
        super().__init__()
        self.cfg = cfg
        strides = [1] + [cfg.scale_factor] * (cfg.num_levels - 1)
        self.visual_blocks = nn.ModuleList(self._block(dim, s) for s in strides)
        self.audio_blocks = nn.ModuleList(self._block(dim, s) for s in strides)
        k = cfg.scale_factor
        self.pool = nn.MaxPool1d(k + 1, stride=k, padding=(k + 1) // 2) if k > 1 else nn.Identity()

    def _block(self, dim: int, stride: int) -> nn.Module:
        cfg = self.cfg
        if cfg.mode == "none":
            return nn.Identity()
        if cfg.mode == "global":
            return TransformerBlock(
                dim,
                cfg.num_heads,
                stride=stride,
                attn_pdrop=cfg.attn_pdrop,
                proj_pdrop=cfg.proj_pdrop,
                path_pdrop=cfg.path_pdrop,
            )
        return CdpBlock(dim, cfg, stride=stride)

    @property
    def strides(self) -> list[int]:
        return [self.cfg.scale_factor**i for i in range(self.cfg.num_levels)]

    def forward(
        self, v: torch.Tensor, a: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats, masks = [], []
        for level in range(self.cfg.num_levels):
            if self.cfg.mode == "none":
                if level > 0:
                    new_mask = downsample_mask(mask, self.cfg.scale_factor)
                    # padded rows never win the max; fully padded outputs become 0
                    v, a = (torch.where(new_mask, self.pool(x.masked_fill(~mask, float("-inf"))), 0.0) for x in (v, a))
                    mask = new_mask
            else:
                v_new, new_mask = self.visual_blocks[level](v, a, mask)
                a_new, _ = self.audio_blocks[level](a, v, mask)
                v, a, mask = v_new, a_new, new_mask
            feats.append(torch.cat([v, a], dim=1))  # B x 2D x T_l
            masks.append(mask)
        return feats, masks
