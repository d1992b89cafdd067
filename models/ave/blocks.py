"""Shared building blocks of the AVE models (AGVA baseline, CCLN, AVLC).

AVE batches (``avel.datasets.torch_dataset.AveFeatureDataset`` + ``collate``)::

    visual: FloatTensor B x T x 7 x 7 x Dv   (VGG-19 pool5, channels last; B x T x Dv also accepted)
    audio:  FloatTensor B x T x Da           (VGGish)
    segment_labels: LongTensor B x T         (0..C-2 events, background_id = C-1)
    video_labels:   FloatTensor B x C        (multi-hot incl. background)
    is_background_video: BoolTensor B

Every model here follows the trainer protocol of :class:`AveModel`:
``outputs = model(batch)``, ``losses = model.losses(outputs, batch)`` (dict with ``"total"``),
``model.predict(outputs, batch)`` (B x T segment class ids; for CML a dict of windows).
"""

from __future__ import annotations

import math
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

SETTINGS = ("fully", "weakly", "cml")


def check_setting(setting: str, supported: tuple[str, ...], model: str) -> None:
    """Raise a clear error when ``setting`` is not one of ``supported`` for ``model``."""
    if setting not in supported:
        raise ValueError(f"{model}: setting must be one of {supported}, got {setting!r}")


def check_ave_batch(batch: dict[str, Any], *, visual_dim: int, audio_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate an AVE batch and return ``(visual B x T x S x Dv, audio B x T x Da)``.

    A visual tensor ``B x T x H x W x Dv`` is flattened to ``S = H*W`` regions; ``B x T x Dv``
    (pooled features, e.g. the CML split's 512-d vectors) becomes a single region ``S = 1``.
    """
    for key in ("visual", "audio"):
        if key not in batch:
            raise KeyError(f"AVE batch lacks key {key!r} (has {sorted(batch)})")
    visual, audio = batch["visual"], batch["audio"]
    if visual.ndim == 5:
        b, t, h, w, d = visual.shape
        visual = visual.reshape(b, t, h * w, d)
    elif visual.ndim == 3:
        visual = visual.unsqueeze(2)
    else:
        raise ValueError(f"batch['visual'] must be B x T x H x W x Dv or B x T x Dv, got {tuple(visual.shape)}")
    if visual.shape[-1] != visual_dim:
        raise ValueError(f"batch['visual'] feature dim {visual.shape[-1]} != config visual_dim {visual_dim}")
    if audio.ndim != 3 or audio.shape[-1] != audio_dim:
        raise ValueError(f"batch['audio'] must be B x T x {audio_dim}, got {tuple(audio.shape)}")
    if audio.shape[:2] != visual.shape[:2]:
        raise ValueError(f"audio {tuple(audio.shape[:2])} and visual {tuple(visual.shape[:2])} disagree on B x T")
    return visual, audio


def segment_targets(batch: dict[str, Any], *, num_classes: int) -> torch.Tensor:
    """``batch["segment_labels"]`` as ``LongTensor B x T``, checked to lie in ``0..num_classes-1``."""
    if "segment_labels" not in batch:
        raise KeyError(f"this setting needs batch['segment_labels'] (B x T class ids), batch has {sorted(batch)}")
    labels = batch["segment_labels"].long()
    if labels.ndim != 2:
        raise ValueError(f"batch['segment_labels'] must be B x T, got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"batch['segment_labels'] must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}"
        )
    return labels


def weak_video_targets(batch: dict[str, Any], *, background_id: int, mode: str = "reference") -> torch.Tensor:
    """Video-level multi-hot targets ``B x C`` for weak supervision.

    Args:
        batch: AVE batch with ``video_labels`` (``B x C``).
        background_id: index of the background class.
        mode: ``"reference"`` (AVE-ECCV18 / PSP ``mil_labels.h5`` + ``labels_noisy.h5``): the event
            classes of the video; the background bit is set only for videos without any event (the
            extra background videos). ``"dataset"``: ``video_labels`` as given (background bit set
            whenever any segment is background).
    """
    if "video_labels" not in batch:
        raise KeyError("weak supervision needs batch['video_labels'] (B x C multi-hot)")
    labels = batch["video_labels"].float()
    if labels.ndim != 2 or labels.shape[1] <= background_id:
        raise ValueError(
            f"batch['video_labels'] must be B x C with C > background_id {background_id}, got {tuple(labels.shape)}"
        )
    if mode == "dataset":
        return labels
    if mode != "reference":
        raise ValueError(f"weak target mode must be 'reference' or 'dataset', got {mode!r}")
    out = labels.clone()
    events = torch.cat([labels[:, :background_id], labels[:, background_id + 1 :]], dim=1)
    out[:, background_id] = (events.sum(dim=1) == 0).float()
    return out


def video_class_ids(batch: dict[str, Any], *, background_id: int) -> torch.Tensor:
    """One class id per video (``B``): its most frequent event class, background for event-free videos.

    Used as the weak label ``y^w`` of the WCCL loss. Segment labels are used when present (the
    event class covering most segments), otherwise the first event bit of ``video_labels``.
    """
    if "segment_labels" in batch:
        seg = batch["segment_labels"].long()  # B x T
        num_classes = max(int(seg.max()) + 1, background_id + 1)
        counts = F.one_hot(seg, num_classes).sum(dim=1).float()  # B x C
        counts[:, background_id] = -1.0
        ids = counts.argmax(dim=1)
        has_event = (seg != background_id).any(dim=1)
    else:
        labels = batch["video_labels"].float().clone()
        labels[:, background_id] = -1.0
        ids = labels.argmax(dim=1)
        has_event = labels.max(dim=1).values > 0
    return torch.where(has_event, ids, torch.full_like(ids, background_id))


class AudioGuidedVisualAttention(nn.Module):
    """Audio-guided visual attention (AGVA, Tian et al. ECCV'18, ``att_Net`` of YapengTian/AVE-ECCV18).

    ``v' = ReLU(W_v1 v)``, ``a' = ReLU(W_a1 a)`` (to ``hidden_dim``); ``z = w_h tanh(W_v v' + W_g a')``
    with ``W_v, W_g: hidden_dim -> S`` (no bias) and ``w_h: S -> 1``; ``alpha = softmax_S(z)``;
    attended feature ``sum_i alpha_i v_i`` over the raw ``Dv``-d region features.

    Args:
        visual_dim: region feature size ``Dv`` (512 for VGG-19 pool5).
        audio_dim: audio feature size ``Da`` (128 for VGGish).
        hidden_dim: projection size (512 in the reference).
        num_regions: spatial regions ``S`` (49 = 7 x 7); the projections ``W_v, W_g`` map to it.
    """

    def __init__(self, *, visual_dim: int, audio_dim: int, hidden_dim: int = 512, num_regions: int = 49) -> None:
        super().__init__()
        self.num_regions = num_regions
        self.affine_video = nn.Linear(visual_dim, hidden_dim)
        self.affine_audio = nn.Linear(audio_dim, hidden_dim)
        self.affine_v = nn.Linear(hidden_dim, num_regions, bias=False)
        self.affine_g = nn.Linear(hidden_dim, num_regions, bias=False)
        self.affine_h = nn.Linear(num_regions, 1, bias=False)
        for layer in (self.affine_video, self.affine_audio, self.affine_v, self.affine_g, self.affine_h):
            nn.init.xavier_uniform_(layer.weight)

    def scores(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Pre-softmax attention scores ``z`` ``B x T x S`` from visual ``B x T x S x Dv`` and audio ``B x T x Da``."""
        if visual.shape[2] != self.num_regions:
            raise ValueError(
                f"AGVA built for {self.num_regions} regions, got {visual.shape[2]} "
                "(set the model's num_regions; 1 for pooled B x T x Dv features)"
            )
        v = F.relu(self.affine_video(visual))  # B x T x S x H
        a = F.relu(self.affine_audio(audio))  # B x T x H
        # as in the reference, W_g a' (one entry per region i) is added along row i of W_v v' (B x T x S x S)
        content = self.affine_v(v) + self.affine_g(a).unsqueeze(-1)
        return self.affine_h(torch.tanh(content)).squeeze(-1)  # B x T x S

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(attended B x T x Dv, alpha B x T x S, scores B x T x S)``."""
        z = self.scores(visual, audio)
        alpha = torch.softmax(z, dim=-1)
        attended = torch.einsum("bts,btsd->btd", alpha, visual)
        return attended, alpha, z


class BiLstm(nn.Module):
    """One-layer bidirectional LSTM over time: ``B x T x in_dim -> B x T x 2*hidden_dim``.

    Args:
        in_dim: input feature size.
        hidden_dim: hidden size per direction (128 in AVE-ECCV18 and PSP).
    """

    def __init__(self, *, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden_dim, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


class SelfAttention(nn.Module):
    """Multi-head self-attention over time with a residual: ``x + Dropout(MHA(x, x, x))`` (``B x T x d``).

    Args:
        dim: model width ``d``.
        num_heads: attention heads (must divide ``dim``).
        dropout: dropout on the attention weights and the residual branch.
    """

    def __init__(self, *, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide width {dim}")
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.attn(x, x, x, need_weights=False)[0])


class FeedForwardNorm(nn.Module):
    """Position-wise feed-forward with residual, then LayerNorm: ``Ln(x + W2 Drop(ReLU(W1 x)))``.

    Args:
        dim: model width ``d``.
        hidden_dim: inner width of the feed-forward layer.
        dropout: dropout inside the feed-forward layer and on its output.
    """

    def __init__(self, *, dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.ff = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.ff(x))


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise binary focal loss (Lin et al.), unreduced, same shape as ``logits``.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` with ``p = sigmoid(logits)``; ``alpha < 0`` disables
    the alpha weighting.
    """
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def wccl_loss(
    views: list[torch.Tensor],
    labels: torch.Tensor,
    *,
    temperature: float,
    normalize: bool = True,
    reduction: str = "sum",
) -> torch.Tensor:
    """Weakly-supervised cross-modal contrastive loss (CCLN eq. 27).

    The ``M`` views of ``N`` samples give ``I = M*N`` anchors (eq. 27 uses M = 2: the fusion
    prediction ``P^f`` and one branch prediction). For anchor ``i``: ``A(i) = I \\ {i}``,
    positives ``B(i) = {p in A(i): y_p = y_i}`` (same weak label, in either view), and::

        L = - sum_i log( 1/|B(i)| sum_{p in B(i)} exp(s_ip / delta) / sum_{a in A(i)} exp(s_ia / delta) )

    with ``s_ij = <z_i, z_j>``. Anchors without any positive are skipped.

    Args:
        views: list of ``N x D`` embeddings (same ``N`` and ``D``).
        labels: ``N`` integer weak labels (shared by all views of a sample).
        temperature: ``delta > 0``.
        normalize: L2-normalize embeddings first (SupCon practice; the paper leaves it open).
        reduction: ``"sum"`` over anchors (eq. 27) or ``"mean"``.
    """
    if temperature <= 0:
        raise ValueError(f"WCCL temperature must be > 0, got {temperature}")
    if len(views) < 2:
        raise ValueError("WCCL needs at least two views")
    z = torch.cat(views, dim=0)  # I x D
    y = labels.repeat(len(views))  # I
    if normalize:
        z = F.normalize(z, dim=-1)
    sim = z @ z.t() / temperature  # I x I
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_denominator = torch.logsumexp(sim, dim=1)  # I
    positive = (y[:, None] == y[None, :]) & ~eye
    num_pos = positive.sum(dim=1)
    log_numerator = torch.logsumexp(sim.masked_fill(~positive, float("-inf")), dim=1) - torch.log(
        num_pos.clamp(min=1).float()
    )
    keep = num_pos > 0
    per_anchor = -(log_numerator - log_denominator)[keep]
    if per_anchor.numel() == 0:
        return z.sum() * 0.0
    if reduction == "sum":
        return per_anchor.sum()
    if reduction == "mean":
        return per_anchor.mean()
    raise ValueError(f"WCCL reduction must be 'sum' or 'mean', got {reduction!r}")


_T = TypeVar("_T")


def resolved(value: _T | None, key: str) -> _T:
    """A config field that ``__post_init__`` fills in when given as None (``background_id``,
    ``tau``, ``ptrf_channels``, ...); None here means the config was built around it."""
    if value is None:
        raise ValueError(f"config field {key} is unset (None is resolved by the config's __post_init__)")
    return value


class AveConfigFields(Protocol):
    """The fields every AVE model config has (what :meth:`AveModel.example_batch` reads)."""

    @property
    def num_classes(self) -> int: ...

    @property
    def background_id(self) -> int | None: ...

    @property
    def num_regions(self) -> int: ...

    @property
    def visual_dim(self) -> int: ...

    @property
    def audio_dim(self) -> int: ...


class AveModel(nn.Module):
    """Protocol of the AVE models (documentation base class).

    Subclasses implement ``forward(batch) -> dict``, ``losses(outputs, batch) -> dict`` with a
    ``"total"`` scalar, and ``predict(outputs, batch)``: ``LongTensor B x T`` segment class ids in the
    fully / weakly supervised settings, or (CML) a dict with ``"distances"`` ``B x T x T``
    (visual segment x audio segment) and the A2V / V2A predicted windows.
    """

    def example_batch(self, *, batch_size: int = 1, seq_len: int | None = None) -> dict[str, Any]:
        """Synthetic AVE batch for probes (FLOP counting): ``T = seq_len`` one-second segments.

        ``seq_len`` None: ``config.num_segments`` where the model has one (a model built for a
        fixed T rejects another), else 10 (AVE clips). Visual maps are square ``sqrt(S) x sqrt(S)``.
        """
        c = self.config
        fixed = getattr(c, "num_segments", None)
        t = seq_len if seq_len is not None else (fixed if fixed is not None else 10)
        if fixed is not None and t != fixed:
            raise ValueError(f"model built for num_segments {fixed}, probe asked for seq_len {t}")
        side = math.isqrt(c.num_regions)
        if side * side != c.num_regions:
            raise ValueError(f"num_regions {c.num_regions} is not a square grid")
        device = next(self.parameters()).device
        background = resolved(c.background_id, "background_id")
        seg = torch.full((batch_size, t), background, dtype=torch.long, device=device)
        seg[:, t // 4 : t // 2] = 0
        video_labels = torch.zeros(batch_size, c.num_classes, device=device)
        video_labels[:, 0] = 1.0
        video_labels[:, background] = 1.0
        return {
            "sample_ids": [f"example-{i}" for i in range(batch_size)],
            "video_ids": [f"example-{i}" for i in range(batch_size)],
            "visual": torch.rand(batch_size, t, side, side, c.visual_dim, device=device),
            "audio": torch.randn(batch_size, t, c.audio_dim, device=device),
            "segment_labels": seg,
            "video_labels": video_labels,
            "is_background_video": torch.zeros(batch_size, dtype=torch.bool, device=device),
        }

    def predict_segments(self, logits: torch.Tensor) -> torch.Tensor:
        """Segment class ids ``B x T`` from per-segment scores ``B x T x C``."""
        return logits.argmax(dim=-1)

    config: AveConfigFields  # set by each model's __init__ (its config dataclass)
