"""Locality-aware Correspondence Correction (LoCo, Xing et al., AAAI 2025, section 3.3).

A label-free audio-visual contrastive loss on the unimodal encoder outputs. Every valid row
(segment) of every video in the batch is one of ``M`` items; visual row ``i`` is pulled towards
audio row ``j`` with weight ``G_ij`` (eq. 2), where ``G`` is a Gaussian of the distance of
``(i, j)`` to the diagonal inside one video (eq. 3) and 0 across videos (eq. 4). The loss is
the mean of the visual-to-audio and audio-to-visual terms (eq. 5).

Choices the paper leaves open (all fields of :class:`LccConfig`):

- ``sigma`` is learned as ``log(sigma)`` so it stays positive (``sigma_init`` 1 as in the paper).
- Distance: ``d(i, j) = |t_i - t_j| * distance_scale`` with ``t`` the row index on the feature
  grid; ``distance_scale = 1/sqrt(2)`` is eq. 3's distance to the diagonal.
- Rows of ``G`` are normalised to sum to 1 (``normalize_target``) so every anchor carries the
  same total weight and sigma cannot shrink the loss by spreading ``G`` thin; with it off, ``G``
  is the raw Gaussian density of eq. 3.
- Reduction: eq. 2 sums over all ``i``; we average over the valid anchors (``reduction="mean"``)
  so the loss scale does not grow with batch size and sequence length.
- Padded rows are neither anchors nor candidates.
- Projection ("halve the channel dimension ... as in ALBEF"): a 2-layer MLP ``D -> D -> D/2``
  per modality followed by L2 normalisation. This is our reading of table 3: it adds exactly
  the reported 0.78 M parameters and 0.2 G multiply-accumulates at D 512, T 256.
- Temperature as in ALBEF: a learnable scalar, init 0.07, clamped to ``[0.001, 0.5]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

LCC_TARGETS = ("gaussian", "fixed_gaussian", "diagonal", "softened")


@dataclass
class LccConfig:
    """LCC options (defaults: the paper; ``target`` selects the rows of LoCo table 2b).

    Attributes:
        weight: alpha of eq. 9 (0.1).
        target: "gaussian" (learnable sigma, the paper's method), "fixed_gaussian" (sigma fixed
            to ``sigma_init``), "diagonal" (only synchronous pairs positive) or "softened"
            (label smoothing ``(1 - eps)`` on the diagonal, ``eps / (M - 1)`` elsewhere).
        sigma_init: initial (or fixed) standard deviation of eq. 3, in grid rows times
            ``distance_scale``.
        distance_scale: ``d(i, j) = |t_i - t_j| * distance_scale``; ``1/sqrt(2)`` is eq. 3.
        normalize_target: divide each row of ``G`` by its sum (see the module docstring).
        softened_eps: smoothing of the "softened" target (0.2 in the paper).
        temperature_init: initial tau.
        learnable_temperature: learn tau (ALBEF); otherwise it stays ``temperature_init``.
        temperature_min: lower clamp of tau.
        temperature_max: upper clamp of tau.
        proj_layers: layers of each projection MLP (1 = a single Linear).
        proj_hidden_dim: hidden width of the MLP (None: the input width D).
        proj_dim: embedding width (None: D // 2, "halved channel dimension").
        normalize_embeddings: L2-normalise the embeddings (cosine similarities, as in ALBEF).
        reduction: "mean" over valid anchors or "sum" (eq. 2 literally).
    """

    weight: float = 0.1
    target: str = "gaussian"
    sigma_init: float = 1.0
    distance_scale: float = 1.0 / math.sqrt(2.0)
    normalize_target: bool = True
    softened_eps: float = 0.2
    temperature_init: float = 0.07
    learnable_temperature: bool = True
    temperature_min: float = 0.001
    temperature_max: float = 0.5
    proj_layers: int = 2
    proj_hidden_dim: int | None = None
    proj_dim: int | None = None
    normalize_embeddings: bool = True
    reduction: str = "mean"

    def __post_init__(self) -> None:
        if self.target not in LCC_TARGETS:
            raise ValueError(f"lcc.target must be one of {LCC_TARGETS}, got {self.target!r}")
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"lcc.reduction must be 'mean' or 'sum', got {self.reduction!r}")
        if self.sigma_init <= 0:
            raise ValueError(f"lcc.sigma_init must be > 0, got {self.sigma_init}")
        if not 0 < self.temperature_min <= self.temperature_init <= self.temperature_max:
            raise ValueError(
                "lcc temperatures must satisfy 0 < temperature_min <= temperature_init <= "
                f"temperature_max, got {self.temperature_min}, {self.temperature_init}, "
                f"{self.temperature_max}"
            )
        if self.proj_layers < 1:
            raise ValueError(f"lcc.proj_layers must be >= 1, got {self.proj_layers}")
        if not 0 <= self.softened_eps < 1:
            raise ValueError(f"lcc.softened_eps must lie in [0, 1), got {self.softened_eps}")


def gaussian_correspondence(
    video_index: torch.Tensor,
    row_index: torch.Tensor,
    sigma: torch.Tensor,
    *,
    distance_scale: float = 1.0 / math.sqrt(2.0),
) -> torch.Tensor:
    """Correspondence objective ``G`` of eqs. 3-4 (``mu = 0``), ``M x M``, not normalised.

    Args:
        video_index: ``M`` video id (batch index) of every item.
        row_index: ``M`` row (segment) index of every item inside its video.
        sigma: scalar standard deviation (a tensor, so gradients reach it).
        distance_scale: ``d(i, j) = |t_i - t_j| * distance_scale``.
    """
    t = row_index.to(sigma.dtype)
    d = (t[:, None] - t[None, :]).abs() * distance_scale  # M x M
    g = torch.exp(-0.5 * (d / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
    same_video = video_index[:, None] == video_index[None, :]
    return g * same_video.to(g.dtype)


def correspondence_target(
    video_index: torch.Tensor,
    row_index: torch.Tensor,
    *,
    target: str,
    sigma: torch.Tensor | None = None,
    distance_scale: float = 1.0 / math.sqrt(2.0),
    softened_eps: float = 0.2,
    normalize: bool = True,
) -> torch.Tensor:
    """``M x M`` target of any type in :data:`LCC_TARGETS` (rows summing to 1 if ``normalize``).

    Args:
        video_index, row_index: ``M`` video id and row index of every item.
        target: "gaussian" / "fixed_gaussian" (both need ``sigma``), "diagonal" or "softened".
        sigma: scalar tensor for the Gaussian targets.
        distance_scale: see :func:`gaussian_correspondence`.
        softened_eps: smoothing of the "softened" target.
        normalize: divide each row by its sum.
    """
    M = video_index.shape[0]
    if target in ("gaussian", "fixed_gaussian"):
        if sigma is None:
            raise ValueError(f"target {target!r} needs sigma")
        g = gaussian_correspondence(video_index, row_index, sigma, distance_scale=distance_scale)
    elif target == "diagonal":
        g = torch.eye(M, device=video_index.device)
    elif target == "softened":
        off = softened_eps / max(M - 1, 1)
        eye = torch.eye(M, device=video_index.device)
        g = eye * (1.0 - softened_eps) + (1.0 - eye) * off
    else:
        raise ValueError(f"unknown target {target!r}; expected one of {LCC_TARGETS}")
    if normalize:
        g = g / g.sum(dim=1, keepdim=True).clamp(min=torch.finfo(g.dtype).tiny)
    return g


def lcc_loss(
    visual: torch.Tensor,
    audio: torch.Tensor,
    target: torch.Tensor,
    temperature: torch.Tensor,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Eq. 5: ``(L_v2a + L_a2v) / 2`` for ``M x D'`` embeddings and an ``M x M`` target.

    ``L_v2a = -sum_ij G_ij log softmax_j(<v_i, a_j> / tau)``; ``L_a2v`` swaps the modalities
    (``G^T`` as target). ``reduction`` "mean" divides each sum by ``M``.
    """
    logits = visual @ audio.t() / temperature  # M x M: v_i . a_j
    v2a = -(target * F.log_softmax(logits, dim=1)).sum()
    a2v = -(target.t() * F.log_softmax(logits.t(), dim=1)).sum()
    loss = 0.5 * (v2a + a2v)
    return loss / max(visual.shape[0], 1) if reduction == "mean" else loss


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(width, hidden_dim), nn.ReLU(inplace=True)]
        width = hidden_dim
    mods.append(nn.Linear(width, out_dim))
    return nn.Sequential(*mods)


class LocalityAwareCorrespondence(nn.Module):
    """Projection heads, learnable temperature / sigma and the LCC loss.

    Use :meth:`embed` in the forward pass (so FLOP counts include the projections, as in the
    paper's table 3) and :meth:`loss` when computing losses.

    Args:
        dim: D, width of the unimodal encoder outputs.
        cfg: :class:`LccConfig`.
    """

    def __init__(self, *, dim: int, cfg: LccConfig) -> None:
        super().__init__()
        self.cfg = cfg
        out_dim = cfg.proj_dim or dim // 2
        hidden = cfg.proj_hidden_dim or dim
        self.visual_proj = _mlp(dim, hidden, out_dim, cfg.proj_layers)
        self.audio_proj = _mlp(dim, hidden, out_dim, cfg.proj_layers)
        temp = torch.tensor(float(cfg.temperature_init))
        if cfg.learnable_temperature:
            self.temperature = nn.Parameter(temp)
        else:
            self.register_buffer("temperature", temp)
        log_sigma = torch.tensor(math.log(cfg.sigma_init))
        if cfg.target == "gaussian":
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def embed(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``B x D x T`` encoder outputs -> ``B x T x D'`` embeddings (L2-normalised if configured)."""
        ev = self.visual_proj(visual.transpose(1, 2))
        ea = self.audio_proj(audio.transpose(1, 2))
        if self.cfg.normalize_embeddings:
            ev, ea = F.normalize(ev, dim=-1), F.normalize(ea, dim=-1)
        return ev, ea

    def loss(self, emb_visual: torch.Tensor, emb_audio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unweighted eq. 5 over the valid rows of a batch.

        Args:
            emb_visual: ``B x T x D'`` from :meth:`embed`.
            emb_audio: ``B x T x D'``.
            mask: ``B x T`` bool, True = valid row.
        """
        if emb_visual.shape != emb_audio.shape or emb_visual.shape[:2] != mask.shape:
            raise ValueError(
                f"LCC: visual {tuple(emb_visual.shape)}, audio {tuple(emb_audio.shape)} and mask "
                f"{tuple(mask.shape)} must share B x T"
            )
        B, T = mask.shape
        vid = torch.arange(B, device=mask.device)[:, None].expand(B, T)[mask]  # M
        row = torch.arange(T, device=mask.device)[None, :].expand(B, T)[mask]  # M
        dtype = torch.promote_types(emb_visual.dtype, torch.float32)  # at least float32 under AMP
        v, a = emb_visual[mask].to(dtype), emb_audio[mask].to(dtype)  # M x D'
        if v.shape[0] == 0:
            return emb_visual.sum() * 0.0
        cfg = self.cfg
        target = correspondence_target(
            vid,
            row,
            target=cfg.target,
            sigma=self.sigma.to(dtype),
            distance_scale=cfg.distance_scale,
            softened_eps=cfg.softened_eps,
            normalize=cfg.normalize_target,
        )
        tau = self.temperature.to(dtype).clamp(cfg.temperature_min, cfg.temperature_max)
        return lcc_loss(v, a, target, tau, reduction=cfg.reduction)
