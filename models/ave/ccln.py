"""CCLN: Cross-modal Contrastive Learning Network (Sun et al., "Listen With Seeing", IEEE TMM 2025).

No public code exists; this follows the paper ("Listen With Seeing: Cross-Modal Contrastive Learning
for Audio-Visual Event Localization"). Backbone:

* Fusion stage (eqs. 1-3): ``v^A = AGVA(v^E, a^E)``; ``v^F = Sa(Bl(v^A))``, ``a^F = Sa(Bl(a^E))``.
* Interaction stage, SBI (eqs. 4-10): ``V1, V2, A1, A2`` linear maps of ``v^F, a^F``;
  ``h^va = softmax(V2 A1^T / sqrt(d))`` (rows: visual time, softmax over audio time),
  ``h^av = (h^va)^T``; both gated at ``tau`` and row-normalized; ``a^M = h^va(tau) A2`` (audio
  gathered for each visual segment), ``v^M = h^av(tau) V1``; ``v^I = v^F + a^M``, ``a^I = a^F + v^M``.
* Integration stage, FEE (eqs. 11-20): ``v^Z = Ln(Fl(Sa(v^I)))`` (same for audio),
  ``P^out = (v^Z + a^Z) / 2``; heads ``P^o`` (C+1 classes), ``P^f`` (1, fusion foreground
  prediction), ``P^fe`` (C events); TopK weights ``v^e = sigmoid(mean(TopK_t(lin(v^I))))``,
  ``a^e`` likewise, ``P^e = P^fe * v^e * a^e``.
* Classification (eqs. 21-24): fully: ``P_full`` per segment; weakly: ``P_w`` per segment and the
  temporal weights ``Theta = sigmoid(ReLU(lin(P_w)))``, ``P_weak = P_w^T Theta`` (C+1).
* Contrastive branch (eqs. 25-26): ``P^v = lin(Ln(Fl(Sa(v^F))))`` (and ``P^a``), contrasted with ``P^f``
  by WCCL (eq. 27) under the branch mode AV | AV+V | AV+A | AV+V+A (table II).
* CML (eq. 17): per-segment distance ``||v^Z_t - a^Z_t||``; evaluation slides the query over the
  other modality with the distance matrix ``D[v, a] = ||v^Z_v - a^Z_a||`` (FEE removed, section V-B).

Choices where the paper is silent (all config fields): model width 256 (= Bi-LSTM 2 x 128 as in
AGVA/PSP), 4 attention heads, feed-forward width 512, dropout 0.1 on linear maps, SBI gate keeps
``h > tau`` then re-normalizes rows (PSP practice), TopK ``k = 3`` segments, WCCL on the
L2-normalized ``T``-dim foreground profiles ``P^f, P^v, P^a`` with the video's event class as weak
label, temperature 0.07 (SupCon default), focal ``alpha = 0.25, gamma = 2`` (torchvision defaults).
``P^fe``: per segment in the fully supervised setting (targets ``Y^e_full`` are ``T x C``; background
segments have an all-zero row), max over time in the weakly supervised setting (eq. 16). CML loss
(eq. 36): binary cross-entropy on the match probability ``exp(-d_t)`` with ``Y^cml`` = event segment.

Loss scaling (eqs. 27-38). Per video, eqs. 28-29 average over the ``T`` segments and sum over
classes, eqs. 32-33 sum over classes, eq. 36 sums over segments; every term is then averaged
over the videos of the batch (the paper does not say; the usual reading). Eq. 27 is written as
a SUM over the ``2N`` anchors of the batch, which would be the only term growing with the batch
size: at batch 128 it is ~256 x the per-anchor value (first epoch on the synthetic benchmark:
WCCL sum 1,407, x ``eta`` = 35,000, against ``L_mfl + lambda L_mfe`` = 194; as a mean 5.6, x ``eta``
= 140). We read eq. 27 like the SupCon loss it follows (eq. 2 there is also written as a sum
and implemented as a mean over anchors) and default to the MEAN over anchors, so ``eta``
balances per-video quantities as the other terms do (``wccl_reduction: sum`` restores the literal
form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avel.models.ave.blocks import (
    AudioGuidedVisualAttention,
    AveModel,
    BiLstm,
    FeedForwardNorm,
    SelfAttention,
    check_ave_batch,
    check_setting,
    resolved,
    segment_targets,
    sigmoid_focal_loss,
    video_class_ids,
    wccl_loss,
    weak_video_targets,
)
from avel.models.metrics.ave import cml_predict_starts

BRANCH_MODES = ("AV", "AV+V", "AV+A", "AV+V+A")
_DEFAULT_TAU = {"fully": 0.05, "weakly": 0.06, "cml": 0.05}


@dataclass
class CclnConfig:
    """CCLN configuration (defaults: paper section V-A; open details chosen as in the module docstring).

    Args:
        setting: ``"fully"``, ``"weakly"`` or ``"cml"``.
        visual_dim / audio_dim: input feature sizes (512 / 128); filled from the store.
        num_classes: classes incl. background, ``C + 1`` (29 on AVE).
        background_id: background class index (None: ``num_classes - 1``).
        num_regions: AGVA spatial regions (49).
        attention_dim: AGVA projection size (512, as in AGVA).
        d_model: width ``d = d_v = d_a`` after the fusion stage (2 x Bi-LSTM hidden).
        num_heads: heads of every self-attention ``Sa``.
        ff_dim: inner width of the feed-forward ``Fl``.
        dropout: dropout on linear mappings ("Dropout to regularize all the linear mappings").
        use_fusion_stage: False = table I "w/o Fusion-stage" (spatial mean + linear to ``d``).
        use_agva: False = "w/o AGVA" (spatial mean instead of attention).
        use_bilstm: False = "w/o Bi-LSTM" (linear to ``d`` instead).
        use_fusion_self_attention: False = "w/o Self-Att." of the fusion stage.
        use_sbi: False = "w/o SBI" (``v^I = v^F``, ``a^I = a^F``).
        use_fee: False = "w/o FEE" (no TopK-weighted event head and no ``L_mfe``); ignored for CML.
        branch_mode: contrastive branches (table II): ``AV`` (none), ``AV+V`` (paper), ``AV+A``, ``AV+V+A``.
        tau: SBI gate threshold (None: 0.05 fully, 0.06 weakly, 0.05 CML; table IV).
        sbi_renormalize: re-normalize gated correlation rows to sum 1.
        topk: segments kept by FEE's TopK (clamped to T).
        lambda_fee: weight of the event loss (eq. 31/35: lambda = 150); in CML (eq. 38) the weight
            of the contrastive loss is ``lambda_cml``.
        eta_wccl: weight of the contrastive loss (eq. 31/35: eta = 25).
        lambda_cml: eq. 38 lambda (not reported; default = eta).
        wccl_temperature: WCCL ``delta`` (eq. 27).
        wccl_normalize: L2-normalize the contrasted predictions.
        wccl_reduction: ``"mean"`` over anchors (default, see "Loss scaling" in the module doc) or
            ``"sum"`` (eq. 27 as printed; scales with the batch size).
        focal_alpha / focal_gamma: focal loss parameters ("default parameters").
        weak_targets: weak label construction, see :func:`avel.models.ave.blocks.weak_video_targets`.

    Training (Adam, lr 1e-3 fully / 1e-4 weakly and CML, batch 128, 200 epochs) is not a model
    field: ``configs/ave/ccln_{fully,weakly,cml}.yaml`` hold it in their ``optim`` section, the
    one place training reads it from.
    """

    setting: str = "fully"
    visual_dim: int = 512
    audio_dim: int = 128
    num_classes: int = 29
    background_id: int | None = None
    num_regions: int = 49
    attention_dim: int = 512
    d_model: int = 256
    num_heads: int = 4
    ff_dim: int = 512
    dropout: float = 0.1
    use_fusion_stage: bool = True
    use_agva: bool = True
    use_bilstm: bool = True
    use_fusion_self_attention: bool = True
    use_sbi: bool = True
    use_fee: bool = True
    branch_mode: str = "AV+V"
    tau: float | None = None
    sbi_renormalize: bool = True
    topk: int = 3
    lambda_fee: float = 150.0
    eta_wccl: float = 25.0
    lambda_cml: float = 25.0
    wccl_temperature: float = 0.07
    wccl_normalize: bool = True
    wccl_reduction: str = "mean"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    weak_targets: str = "reference"

    def __post_init__(self) -> None:
        check_setting(self.setting, ("fully", "weakly", "cml"), "CCLN")
        if self.branch_mode not in BRANCH_MODES:
            raise ValueError(f"CCLN branch_mode must be one of {BRANCH_MODES}, got {self.branch_mode!r}")
        if self.background_id is None:
            self.background_id = self.num_classes - 1
        if not 0 <= self.background_id < self.num_classes:
            raise ValueError(f"background_id {self.background_id} outside 0..{self.num_classes - 1}")
        if self.tau is None:
            self.tau = _DEFAULT_TAU[self.setting]
        if self.wccl_reduction not in ("mean", "sum"):
            raise ValueError(f"CCLN wccl_reduction must be 'mean' or 'sum', got {self.wccl_reduction!r}")
        if self.topk < 1:
            raise ValueError(f"topk must be >= 1, got {self.topk}")
        if self.setting == "cml":
            self.use_fee = False


def sbi_gate(h: torch.Tensor, tau: float, *, renormalize: bool = True) -> torch.Tensor:
    """SBI threshold gate ``h(tau)``: zero entries ``<= tau``, optionally re-normalize rows to sum 1.

    ``h``: ``... x T x T`` correlation (rows sum to 1 before gating). A row gated to all zeros stays zero.
    """
    gated = h * (h > tau).to(h.dtype)
    if renormalize:
        gated = gated / (gated.sum(dim=-1, keepdim=True) + 1e-8)
    return gated


class SelfConstrainedBimodalInteraction(nn.Module):
    """SBI module (eqs. 4-10): size-invariant, two inputs / two outputs ``B x T x d``.

    Args:
        dim: width ``d``.
        tau: gate threshold.
        dropout: dropout on the four linear maps.
        renormalize: re-normalize gated rows.
    """

    def __init__(self, *, dim: int, tau: float, dropout: float, renormalize: bool = True) -> None:
        super().__init__()
        self.dim, self.tau, self.renormalize = dim, tau, renormalize
        self.w_v1, self.w_v2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.w_a1, self.w_a2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def correlation(self, v2: torch.Tensor, a1: torch.Tensor) -> torch.Tensor:
        """``h^va = softmax(V2 A1^T / sqrt(d))``: ``B x T_v x T_a`` (eq. 5)."""
        return torch.softmax(v2 @ a1.transpose(1, 2) / math.sqrt(self.dim), dim=-1)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(v^I, a^I, h^va)`` from ``v^F, a^F`` (``B x T x d``)."""
        v1, v2 = self.drop(self.w_v1(v)), self.drop(self.w_v2(v))
        a1, a2 = self.drop(self.w_a1(a)), self.drop(self.w_a2(a))
        h_va = self.correlation(v2, a1)  # B x Tv x Ta
        h_av = h_va.transpose(1, 2)  # B x Ta x Tv
        a_m = sbi_gate(h_va, self.tau, renormalize=self.renormalize) @ a2  # B x Tv x d
        v_m = sbi_gate(h_av, self.tau, renormalize=self.renormalize) @ v1  # B x Ta x d
        return v + a_m, a + v_m, h_va


def fee_weights(logits: torch.Tensor, k: int) -> torch.Tensor:
    """FEE weight ``sigmoid(mean(TopK_t(logits)))``: ``B x T x C -> B x C`` (eqs. 18-19)."""
    k = min(k, logits.shape[1])
    return torch.sigmoid(logits.topk(k, dim=1).values.mean(dim=1))


class _Integration(nn.Module):
    """``Ln(Fl(Sa(x)))`` (eqs. 11-12, 25-26)."""

    def __init__(self, c: CclnConfig) -> None:
        super().__init__()
        self.sa = SelfAttention(dim=c.d_model, num_heads=c.num_heads, dropout=c.dropout)
        self.fl = FeedForwardNorm(dim=c.d_model, hidden_dim=c.ff_dim, dropout=c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fl(self.sa(x))


class CclnNet(AveModel):
    """CCLN (see module docstring for the equations and the choices).

    Args:
        config: :class:`CclnConfig`.
    """

    config: CclnConfig
    fg_index: torch.Tensor  # class id -> event index, -1 = background (buffer)

    def __init__(self, config: CclnConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.d_model
        num_events = c.num_classes - 1
        fg = torch.full((c.num_classes,), -1, dtype=torch.long)
        fg[[i for i in range(c.num_classes) if i != c.background_id]] = torch.arange(num_events)
        self.register_buffer("fg_index", fg, persistent=False)  # class id -> event index, -1 = background

        # fusion stage
        if c.use_fusion_stage and c.use_agva:
            self.agva = AudioGuidedVisualAttention(
                visual_dim=c.visual_dim, audio_dim=c.audio_dim, hidden_dim=c.attention_dim, num_regions=c.num_regions
            )
        if c.use_fusion_stage and c.use_bilstm:
            if d % 2:
                raise ValueError(f"d_model {d} must be even for the Bi-LSTM")
            self.enc_v: nn.Module = BiLstm(in_dim=c.visual_dim, hidden_dim=d // 2)
            self.enc_a: nn.Module = BiLstm(in_dim=c.audio_dim, hidden_dim=d // 2)
        else:
            self.enc_v = nn.Sequential(nn.Linear(c.visual_dim, d), nn.Dropout(c.dropout))
            self.enc_a = nn.Sequential(nn.Linear(c.audio_dim, d), nn.Dropout(c.dropout))
        if c.use_fusion_stage and c.use_fusion_self_attention:
            self.sa_v = SelfAttention(dim=d, num_heads=c.num_heads, dropout=c.dropout)
            self.sa_a = SelfAttention(dim=d, num_heads=c.num_heads, dropout=c.dropout)
        # interaction stage
        if c.use_sbi:
            self.sbi = SelfConstrainedBimodalInteraction(
                dim=d, tau=resolved(c.tau, "tau"), dropout=c.dropout, renormalize=c.sbi_renormalize
            )
        # integration stage
        self.integrate_v = _Integration(c)
        self.integrate_a = _Integration(c)
        self.head_f = nn.Linear(d, 1)  # W6
        if c.setting in ("fully", "weakly"):
            self.head_o = nn.Linear(d, c.num_classes)  # W_f5 / W_w5
        if c.setting == "weakly":
            self.head_b = nn.Linear(c.num_classes, 1)  # W_b
        if c.use_fee:
            self.head_fe = nn.Linear(d, num_events)  # W7
            self.fee_v = nn.Linear(d, num_events)
            self.fee_a = nn.Linear(d, num_events)
        # contrastive branches
        if "V" in c.branch_mode.split("+"):
            self.branch_v = _Integration(c)
            self.branch_v_head = nn.Linear(d, 1)
        if "A" in c.branch_mode.split("+"):
            self.branch_a = _Integration(c)
            self.branch_a_head = nn.Linear(d, 1)
        self.drop = nn.Dropout(c.dropout)

    def fusion_stage(
        self, visual: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``v^F, a^F`` (``B x T x d``) and the AGVA attention (``B x T x S`` or None)."""
        c = self.config
        alpha = None
        if c.use_fusion_stage and c.use_agva:
            v, alpha, _ = self.agva(visual, audio)  # B x T x Dv
        else:
            v = visual.mean(dim=2)  # B x T x Dv
        v, a = self.enc_v(v), self.enc_a(audio)
        if c.use_fusion_stage and c.use_fusion_self_attention:
            v, a = self.sa_v(v), self.sa_a(a)
        return v, a, alpha

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Backbone and branch outputs.

        Always ``p_f`` ``B x T`` (eq. 15); ``attention`` (AGVA, ``B x T x S``) and ``correlation``
        (``h^va`` before gating, ``B x T x T``) when those stages are on; ``p_v`` / ``p_a`` ``B x T`` per
        branch mode. fully / weakly: ``segment_scores`` ``B x T x (C+1)`` (eqs. 21-22) and, with FEE,
        ``event_scores`` (``B x T x C`` fully, ``B x C`` weakly); weakly: ``theta`` ``B x T`` and
        ``video_scores`` ``B x (C+1)`` (eqs. 23-24). CML: ``v_z``, ``a_z`` ``B x T x d`` and ``p_cml`` ``B x T``.

        Args:
            batch: AVE batch (``visual``, ``audio``; see :mod:`avel.models.ave.blocks`).
        """
        c = self.config
        visual, audio = check_ave_batch(batch, visual_dim=c.visual_dim, audio_dim=c.audio_dim)
        v_f, a_f, alpha = self.fusion_stage(visual, audio)
        out: dict[str, torch.Tensor] = {}
        if alpha is not None:
            out["attention"] = alpha
        if c.use_sbi:
            v_i, a_i, h_va = self.sbi(v_f, a_f)
            out["correlation"] = h_va
        else:
            v_i, a_i = v_f, a_f
        v_z, a_z = self.integrate_v(v_i), self.integrate_a(a_i)  # B x T x d
        p_out = 0.5 * (v_z + a_z)  # B x T x d
        out["p_f"] = self.head_f(self.drop(p_out)).squeeze(-1)  # B x T
        if c.setting == "cml":
            out["v_z"], out["a_z"] = v_z, a_z
            out["p_cml"] = torch.sqrt(((v_z - a_z) ** 2).sum(-1).clamp(min=1e-7))  # B x T (eq. 17)
        else:
            p_o = self.head_o(self.drop(p_out))  # B x T x (C+1)
            out["segment_scores"] = p_o
            if c.setting == "weakly":
                theta = torch.sigmoid(F.relu(self.head_b(p_o)))  # B x T x 1 (eq. 23)
                out["theta"] = theta.squeeze(-1)
                out["video_scores"] = (p_o * theta).sum(dim=1)  # B x (C+1) (eq. 24)
            if c.use_fee:
                w = fee_weights(self.fee_v(v_i), c.topk) * fee_weights(self.fee_a(a_i), c.topk)  # B x C
                p_fe = self.head_fe(self.drop(p_out))  # B x T x C
                if c.setting == "weakly":
                    out["event_scores"] = p_fe.max(dim=1).values * w  # B x C (eqs. 16, 20)
                else:
                    out["event_scores"] = p_fe * w.unsqueeze(1)  # B x T x C
        if c.branch_mode != "AV":
            if hasattr(self, "branch_v"):
                out["p_v"] = self.branch_v_head(self.drop(self.branch_v(v_f))).squeeze(-1)  # B x T
            if hasattr(self, "branch_a"):
                out["p_a"] = self.branch_a_head(self.drop(self.branch_a(a_f))).squeeze(-1)  # B x T
        return out

    def contrastive_loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """WCCL (eq. 27) between ``P^f`` and the branch predictions of ``branch_mode``."""
        c = self.config
        views = [outputs["p_f"]] + [outputs[k] for k in ("p_v", "p_a") if k in outputs]
        labels = video_class_ids(batch, background_id=resolved(c.background_id, "background_id"))
        return wccl_loss(
            views, labels, temperature=c.wccl_temperature, normalize=c.wccl_normalize, reduction=c.wccl_reduction
        )

    def losses(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Eq. 31 (fully), 35 (weakly) or 38 (CML): ``total`` plus the detached terms ``focal``,
        ``event``, ``match``, ``contrastive`` (those that apply).

        Args:
            outputs: :meth:`forward` outputs.
            batch: ``segment_labels`` ``B x T`` (fully, CML, WCCL labels), ``video_labels`` (weakly).
        """
        c = self.config
        terms: dict[str, torch.Tensor] = {}
        total = outputs["p_f"].new_zeros(())
        if c.setting == "fully":
            labels = segment_targets(batch, num_classes=c.num_classes)  # B x T
            target = F.one_hot(labels, c.num_classes).float()
            focal = sigmoid_focal_loss(outputs["segment_scores"], target, alpha=c.focal_alpha, gamma=c.focal_gamma)
            terms["focal"] = focal.sum(-1).mean()  # eq. 28
            total = total + terms["focal"]
            if c.use_fee:
                fg = self.fg_index[labels]  # B x T, -1 = background
                logp = torch.log_softmax(outputs["event_scores"], dim=-1)  # B x T x C
                picked = logp.gather(-1, fg.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                terms["event"] = -(picked * (fg >= 0)).mean()  # eq. 29: background rows of Y^e are zero
                total = total + c.lambda_fee * terms["event"]
        elif c.setting == "weakly":
            target = weak_video_targets(
                batch, background_id=resolved(c.background_id, "background_id"), mode=c.weak_targets
            )  # B x (C+1)
            focal = sigmoid_focal_loss(outputs["video_scores"], target, alpha=c.focal_alpha, gamma=c.focal_gamma)
            terms["focal"] = focal.sum(-1).mean()  # eq. 32
            total = total + terms["focal"]
            if c.use_fee:
                events = target[:, self.fg_index >= 0]  # B x C
                norm = events.sum(-1, keepdim=True).clamp(min=1.0)
                logp = torch.log_softmax(outputs["event_scores"], dim=-1)
                terms["event"] = -((events / norm) * logp).sum(-1).mean()  # eq. 33
                total = total + c.lambda_fee * terms["event"]
        else:
            labels = segment_targets(batch, num_classes=c.num_classes)
            y = (labels != resolved(c.background_id, "background_id")).float()  # B x T: 1 = audio-visual match (Y^cml)
            d = outputs["p_cml"]
            bce = y * d - (1 - y) * torch.log(-torch.expm1(-d).clamp(max=-1e-7))  # BCE on p = exp(-d)
            terms["match"] = bce.sum(-1).mean()  # eq. 36
            total = total + terms["match"]
        if c.branch_mode != "AV":
            terms["contrastive"] = self.contrastive_loss(outputs, batch)
            weight = c.lambda_cml if c.setting == "cml" else c.eta_wccl
            total = total + weight * terms["contrastive"]
        out = {k: v.detach() for k, v in terms.items()}
        out["total"] = total
        return out

    def cml_distances(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``D[b, v, a] = ||v^Z_v - a^Z_a||``: ``B x T x T``."""
        return torch.cdist(outputs["v_z"], outputs["a_z"])

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]):
        """Segment class ids ``B x T`` (fully / weakly), or for CML a dict: ``distances`` ``B x T x T``
        (``D[v, a]``), ``a2v_start`` / ``v2a_start`` (``B``, -1 for full-length or event-free videos)
        and ``query_length`` (``B``); the windows are ``[start, start + query_length)``.

        Args:
            outputs: :meth:`forward` outputs.
            batch: the AVE batch (CML: ``segment_labels`` give the query segments).
        """
        c = self.config
        if c.setting != "cml":
            return self.predict_segments(outputs["segment_scores"])
        dist = self.cml_distances(outputs).detach().float().cpu()
        mask = (batch["segment_labels"] != c.background_id).cpu()
        starts = cml_predict_starts(dist, mask)
        return {
            "distances": dist,
            "a2v_start": torch.from_numpy(starts["a2v"]),
            "v2a_start": torch.from_numpy(starts["v2a"]),
            "query_length": mask.sum(-1),
        }
