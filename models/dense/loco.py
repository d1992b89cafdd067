"""LoCo (Xing et al., AAAI 2025): locality-aware cross-modal correspondence learning for dense
audio-visual event localization. No public code exists; this follows the paper.

``Y = f_dec(f_enc(f_in(V, A)))`` (eq. 1):

- ``f_in``: per modality a UnAV unimodal encoder (masked convs to D = 512, sinusoidal position,
  L_u = 2 self-attention blocks); LCC (:mod:`avel.models.lcc`) constrains its outputs with a
  label-free contrastive loss weighted by alpha = 0.1 (eq. 9).
- ``f_enc``: the cross-modal dynamic perception pyramid (:mod:`avel.models.cdp`), L_c = 6 CDP
  blocks per modality, stride 2 between levels, ``[Z_v; Z_a]`` (2D channels) per level.
- ``f_dec``: :class:`MultimodalDecoder`, transformer blocks fusing ``[Z_v; Z_a]`` at every level
  ("comprehensive fusion ... through transformer blocks"; depth and sharing are not given in
  the paper: three self-attention blocks shared by all levels by default, see
  :class:`DecoderConfig`), then the UnAV heads (3 convs; class-aware regression ``2 x C``).

Training: focal + IoU loss (the paper names generalized IoU; :class:`LocoLossConfig`) + alpha *
LCC; inference: UnAV's multi-class Soft-NMS. Not given by the paper, so taken from UnAV (which
it follows): label assignment without centre sampling, regression ranges (0,4), (4,8), (8,16),
(16,32), (32,64), (64,1e4) grid rows, class-aware regression, EMA loss normaliser. The paper
trains with ``max_seq_len`` 256 (filled in by the trainer like the input dims and classes).

Ablations (tables 2a-2d) are config switches: ``use_lcc`` and ``cdp.mode`` (2a: "none" /
"cdp"), ``lcc.target`` (2b), ``cdp.mode`` "global" / "fixed" / "cdp" (2c), ``cdp.window_size``
and "global" for "Full" (2d).

Table 3 (ONE-PEACE 1536/1536, T 256, C 100), measured with ``avel models info loco`` (its
"GFLOPs" are conv/Linear multiply-accumulates, see :mod:`avel.models.info`): ours 100.76 M /
29.86 G against 103.73 M / 31.45 G; the table 2a / 3 "base" (``use_lcc: false, cdp.mode:
none, cdp.num_levels: 1, assigner.regression_ranges: [[0, 1e4]]``) 61.97 M / 15.83 G against
71.35 M / 18.26 G. LCC (0.79 M / 0.20 G) and CDP over global attention (+0.05 M) match the
table. The rest comes from two sizes the paper does not state, and from its counting rule:

- the table is self-consistent with our layout: its base costs exactly encoders (4.84 G, 18.94
  M here) + 256 rows x (decoder + heads) = 18.26 G when decoder + heads hold 52.41 M
  (= 71.35 - 18.94), and its +12.99 G for the pyramid is 248 more rows (levels 2-6) x 52.4 M,
  i.e. the table leaves out the pyramid blocks' own MACs (3.18 G here; its UnAV row, 60.28 G,
  equals ours with UnAV's pyramid included, so why LoCo's are left out is not known);
- our decoder + heads hold 43.03 M (3 shared 1024-d blocks = 37.85 M, see
  :class:`DecoderConfig`): 9.38 M fewer than implied. 47.22 M of decoder is not a whole number
  of such blocks (3.74), so the paper's decoder width or depth is unknown, and we keep 3;
- our pyramid holds 37.99 M: L_c = 6 CDP blocks per modality as the text says (12 x 3.17 M,
  MLP 4 x D); the table's +31.55 M for the global pyramid implies 2.63 M per block (an MLP of
  ~3 x D would fit; not stated). Net: 9.38 - 6.39 = 2.97 M fewer parameters in all, and in MACs
  504 rows x 9.38 M = 4.73 G fewer in the decoder + heads, partly offset by the pyramid's 3.18 G that we
  count and the table apparently does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from avel.models.blocks import TransformerBlock
from avel.models.cdp import CdpConfig, CrossModalDynamicPyramid
from avel.models.dense.base import DenseDetector, DenseDetectorConfig
from avel.models.encoders import EncoderConfig, UnimodalEncoder
from avel.models.lcc import LccConfig, LocalityAwareCorrespondence
from avel.models.losses import LossConfig


@dataclass
class LocoLossConfig(LossConfig):
    """:class:`LossConfig` with the regression loss the LoCo paper names (generalized IoU)."""

    reg_loss: str = "giou"


@dataclass
class DecoderConfig:
    """Multimodal decoder fusion blocks (pre-LN self-attention transformer blocks on 2D channels).

    Attributes:
        num_blocks: fusion blocks per level (0 = heads directly on the pyramid). The paper gives
            no depth; 3 shared blocks put the full model at 100.76 M parameters, 2.9 % under
            table 3's 103.73 M (1 block: 75.5 M; the table implies 47.2 M of decoder, 3.74 blocks:
            see the module docstring).
        num_heads: attention heads.
        share_across_levels: one set of blocks for all levels (like the heads) instead of one per level.
        mlp_ratio: MLP hidden width = ``mlp_ratio * 2D``.
        attn_pdrop, proj_pdrop, path_pdrop: dropouts.
    """

    num_blocks: int = 3
    num_heads: int = 4
    share_across_levels: bool = True
    mlp_ratio: int = 4
    attn_pdrop: float = 0.0
    proj_pdrop: float = 0.0
    path_pdrop: float = 0.1

    def __post_init__(self) -> None:
        if self.num_blocks < 0:
            raise ValueError(f"decoder.num_blocks must be >= 0, got {self.num_blocks}")


class MultimodalDecoder(nn.Module):
    """Per-level fusion of ``[Z_v; Z_a]``: ``B x 2D x T_l`` -> ``B x 2D x T_l`` (masks unchanged).

    Args:
        dim: channels of the multimodal features (2D).
        num_levels: pyramid levels.
        cfg: :class:`DecoderConfig`.
    """

    def __init__(self, *, dim: int, num_levels: int, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        stacks = 1 if cfg.share_across_levels else num_levels
        self.stacks = nn.ModuleList(
            nn.ModuleList(
                TransformerBlock(
                    dim,
                    cfg.num_heads,
                    hidden_dim=cfg.mlp_ratio * dim,
                    attn_pdrop=cfg.attn_pdrop,
                    proj_pdrop=cfg.proj_pdrop,
                    path_pdrop=cfg.path_pdrop,
                )
                for _ in range(cfg.num_blocks)
            )
            for _ in range(stacks)
        )

    def forward(self, feats: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for level, (x, m) in enumerate(zip(feats, masks)):
            for block in self.stacks[0 if self.cfg.share_across_levels else level].children():
                x, _ = block(x, x, m)
            out.append(x)
        return out


@dataclass
class LocoConfig(DenseDetectorConfig):
    """LoCo configuration (defaults: the paper: D 512, L_u 2, L_c 6, H 4, W 8, alpha 0.1, sigma 1).

    Attributes:
        encoder: unimodal encoders (``num_self_attn`` is L_u, ``embed_dim`` is D).
        cdp: cross-modal pyramid (``num_levels`` is L_c; ``mode`` / ``window_size`` for tables 2a, 2c, 2d).
        decoder: :class:`DecoderConfig`.
        use_lcc: apply LCC (table 2a).
        lcc: :class:`LccConfig` (``weight`` is alpha; ``target`` for table 2b).
        loss: :class:`LocoLossConfig` (GIoU by default).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    cdp: CdpConfig = field(default_factory=CdpConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    use_lcc: bool = True
    lcc: LccConfig = field(default_factory=LccConfig)
    loss: LocoLossConfig = field(default_factory=LocoLossConfig)


class LocoDetector(DenseDetector):
    """LoCo dense audio-visual event detector.

    ``forward`` adds ``lcc_visual`` / ``lcc_audio`` (``B x T x D/2`` embeddings) to the outputs
    when LCC is on; ``losses`` then contains ``lcc`` = alpha * eq. 5, included in ``total``.

    Args:
        cfg: :class:`LocoConfig`.
    """

    cfg: LocoConfig

    def __init__(self, cfg: LocoConfig) -> None:
        D = cfg.encoder.embed_dim
        super().__init__(cfg, feat_dim=2 * D)
        if cfg.cdp.num_levels != len(cfg.assigner.regression_ranges):
            raise ValueError(
                f"cdp.num_levels {cfg.cdp.num_levels} != {len(cfg.assigner.regression_ranges)} "
                "assigner.regression_ranges"
            )
        if cfg.cdp.scale_factor != cfg.assigner.scale_factor:
            raise ValueError(
                f"cdp.scale_factor {cfg.cdp.scale_factor} != assigner.scale_factor {cfg.assigner.scale_factor}"
            )
        if D % cfg.cdp.num_heads != 0:
            raise ValueError(f"encoder.embed_dim {D} is not divisible by cdp.num_heads {cfg.cdp.num_heads}")
        self.visual_encoder = UnimodalEncoder(in_dim=cfg.visual_dim, max_seq_len=cfg.max_seq_len, cfg=cfg.encoder)
        self.audio_encoder = UnimodalEncoder(in_dim=cfg.audio_dim, max_seq_len=cfg.max_seq_len, cfg=cfg.encoder)
        self.lcc = LocalityAwareCorrespondence(dim=D, cfg=cfg.lcc) if cfg.use_lcc else None
        self.pyramid = CrossModalDynamicPyramid(dim=D, cfg=cfg.cdp)
        self.decoder = MultimodalDecoder(dim=2 * D, num_levels=cfg.cdp.num_levels, cfg=cfg.decoder)

    def features(self, visual: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor):
        v = self.visual_encoder(visual, mask)  # B x D x T
        a = self.audio_encoder(audio, mask)
        extras: dict[str, torch.Tensor] = {}
        if self.lcc is not None:
            extras["lcc_visual"], extras["lcc_audio"] = self.lcc.embed(v, a)  # B x T x D/2
        feats, masks = self.pyramid(v, a, mask)  # L x [B x 2D x T_l]
        return self.decoder(feats, masks), masks, extras

    def extra_losses(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if self.lcc is None:
            return {}
        loss = self.lcc.loss(outputs["lcc_visual"], outputs["lcc_audio"], outputs["masks"][0])
        return {"lcc": self.cfg.lcc.weight * loss}
