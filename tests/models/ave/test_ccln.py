"""CCLN: SBI gate and module, FEE weights, heads and losses of the three settings, branch modes, ablations."""

from __future__ import annotations

import math

import pytest
import torch

from avel.models.ave import CclnConfig, CclnNet
from avel.models.ave.ccln import SelfConstrainedBimodalInteraction, fee_weights, sbi_gate

TINY = dict(visual_dim=8, audio_dim=6, attention_dim=16, d_model=16, num_heads=2, ff_dim=32)


def test_sbi_gate_hand_values():
    h = torch.tensor([[0.5, 0.3, 0.04, 0.16]])
    torch.testing.assert_close(sbi_gate(h, 0.05, renormalize=False), torch.tensor([[0.5, 0.3, 0.0, 0.16]]))
    torch.testing.assert_close(sbi_gate(h, 0.05), torch.tensor([[0.5, 0.3, 0.0, 0.16]]) / 0.96)
    torch.testing.assert_close(sbi_gate(h, 0.2), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert sbi_gate(h, 0.6).abs().sum() == 0  # everything gated: no cross-modal term


def _identity_sbi(tau: float) -> SelfConstrainedBimodalInteraction:
    sbi = SelfConstrainedBimodalInteraction(dim=2, tau=tau, dropout=0.0)
    with torch.no_grad():
        for lin in (sbi.w_v1, sbi.w_v2, sbi.w_a1, sbi.w_a2):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    return sbi


def test_sbi_module_hand_case():
    # V2 A1^T = 0 -> uniform correlation 0.5: each modality receives the other's temporal mean
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    a = torch.tensor([[[0.0, 1.0], [0.0, 2.0]]])
    v_i, a_i, h = _identity_sbi(0.05)(v, a)
    torch.testing.assert_close(h, torch.full((1, 2, 2), 0.5))
    torch.testing.assert_close(v_i, torch.tensor([[[1.0, 1.5], [1.0, 1.5]]]))
    torch.testing.assert_close(a_i, torch.tensor([[[1.0, 1.0], [1.0, 2.0]]]))
    v_i, a_i, _ = _identity_sbi(0.6)(v, a)  # tau above every correlation: pure residual
    torch.testing.assert_close(v_i, v)
    torch.testing.assert_close(a_i, a)


def test_sbi_gates_weak_pairs():
    # visual 0 matches audio 0 strongly (correlation ~0.98), visual 1 is orthogonal to both audio segments
    v = torch.tensor([[[4.0, 0.0], [0.0, 0.0]]])
    a = torch.tensor([[[4.0, 0.0], [0.0, 3.0]]])
    v_i, _, h = _identity_sbi(0.05)(v, a)
    expected_h0 = torch.softmax(torch.tensor([16.0, 0.0]) / math.sqrt(2), 0)
    torch.testing.assert_close(h[0, 0], expected_h0)
    assert expected_h0[1] < 0.05
    torch.testing.assert_close(v_i[0, 0], v[0, 0] + a[0, 0])  # the weak pair (0.0003) is gated out


def test_fee_weights_topk_mean():
    logits = torch.tensor([1.0, 5.0, 3.0, 2.0]).view(1, 4, 1)
    torch.testing.assert_close(fee_weights(logits, 2), torch.sigmoid(torch.tensor([[4.0]])))
    torch.testing.assert_close(fee_weights(logits, 10), torch.sigmoid(torch.tensor([[2.75]])))


def test_setting_defaults_from_paper():
    assert (CclnConfig().tau, CclnConfig(setting="weakly").tau, CclnConfig(setting="cml").tau) == (0.05, 0.06, 0.05)
    assert (CclnConfig().lambda_fee, CclnConfig().eta_wccl) == (150.0, 25.0)
    assert not CclnConfig(setting="cml").use_fee
    with pytest.raises(ValueError, match="branch_mode"):
        CclnConfig(branch_mode="V")


def test_wccl_is_averaged_over_anchors_by_default(batch):
    # eq. 27 read as a mean over the 2N anchors: the term does not grow with the batch size
    assert CclnConfig().wccl_reduction == "mean"
    with pytest.raises(ValueError, match="wccl_reduction"):
        CclnConfig(wccl_reduction="max")
    losses = {}
    for reduction in ("mean", "sum"):
        torch.manual_seed(0)
        model = CclnNet(CclnConfig(wccl_reduction=reduction, dropout=0.0, **TINY)).eval()
        with torch.no_grad():
            losses[reduction] = model.losses(model(batch), batch)
    # labels 3, 5, 3, background: every one of the 2 x 4 anchors has a positive (its other view)
    torch.testing.assert_close(losses["sum"]["contrastive"], 8 * losses["mean"]["contrastive"])
    torch.testing.assert_close(
        losses["sum"]["total"] - losses["mean"]["total"], 25.0 * 7 * losses["mean"]["contrastive"]
    )


@pytest.mark.parametrize("setting", ["fully", "weakly", "cml"])
@pytest.mark.parametrize("branch_mode", ["AV", "AV+V", "AV+A", "AV+V+A"])
def test_forward_losses_backward(setting, branch_mode, batch):
    torch.manual_seed(0)
    model = CclnNet(CclnConfig(setting=setting, branch_mode=branch_mode, **TINY))
    out = model(batch)
    losses = model.losses(out, batch)
    assert torch.isfinite(losses["total"])
    assert ("contrastive" in losses) == (branch_mode != "AV")
    assert ("p_v" in out) == ("V" in branch_mode.split("+")) and ("p_a" in out) == ("A" in branch_mode.split("+"))
    losses["total"].backward()
    assert model.agva.affine_h.weight.grad.abs().sum() > 0
    assert model.sbi.w_v2.weight.grad.abs().sum() > 0
    pred = model.predict(out, batch)
    if setting == "cml":
        assert pred["distances"].shape == (4, 10, 10)
        assert pred["a2v_start"].tolist()[1::2] == [-1, -1]  # full-length and event-free videos excluded
        assert 0 <= int(pred["a2v_start"][0]) <= 7 and 0 <= int(pred["v2a_start"][2]) <= 5
    else:
        assert pred.shape == (4, 10)
        assert ("event" in losses) is True


def test_weakly_video_prediction_is_theta_weighted_sum(batch):
    model = CclnNet(CclnConfig(setting="weakly", **TINY)).eval()
    with torch.no_grad():
        out = model(batch)
    assert ((out["theta"] >= 0.5) & (out["theta"] < 1)).all()  # sigmoid(ReLU(.)), eq. 23
    torch.testing.assert_close(out["video_scores"], (out["segment_scores"] * out["theta"][..., None]).sum(1))
    assert out["event_scores"].shape == (4, 28)


def test_fee_loss_ignores_background_segments(make_batch):
    b = make_batch()
    b["segment_labels"][:] = 28
    model = CclnNet(CclnConfig(**TINY))
    losses = model.losses(model(b), b)
    assert losses["event"] == 0
    b2 = make_batch()
    assert model.losses(model(b2), b2)["event"] > 0


def test_cml_distance_is_per_segment_euclidean(batch):
    model = CclnNet(CclnConfig(setting="cml", **TINY)).eval()
    with torch.no_grad():
        out = model(batch)
    torch.testing.assert_close(out["p_cml"], (out["v_z"] - out["a_z"]).norm(dim=-1))
    torch.testing.assert_close(model.cml_distances(out).diagonal(dim1=1, dim2=2), out["p_cml"])


@pytest.mark.parametrize(
    "ablation", ["use_fusion_stage", "use_agva", "use_bilstm", "use_fusion_self_attention", "use_sbi", "use_fee"]
)
def test_table_i_ablations_run(ablation, batch):
    model = CclnNet(CclnConfig(**{ablation: False}, **TINY))
    out = model(batch)
    losses = model.losses(out, batch)
    losses["total"].backward()
    full = CclnNet(CclnConfig(**TINY))
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())
    assert ("correlation" in out) == (ablation != "use_sbi")
    assert ("event" in losses) == (ablation != "use_fee")


def test_fully_supervised_fits_a_batch(batch):
    # alpha-balanced focal loss (alpha = 0.25) fits slowly; without alpha a tiny model fits in 60 steps
    torch.manual_seed(0)
    model = CclnNet(CclnConfig(lambda_fee=0.1, eta_wccl=0.01, focal_alpha=-1.0, dropout=0.0, **TINY))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = model.losses(model(batch), batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model.predict(model(batch), batch) == batch["segment_labels"]).float().mean()
    assert acc > 0.9
