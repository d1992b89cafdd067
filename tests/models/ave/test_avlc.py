"""AVLC: TSGA shapes and normalization, PTRF threshold behaviour (fixed epsilon / mean rule), settings, table II."""

from __future__ import annotations

import pytest
import torch

from avel.models.ave import AvlcConfig, AvlcNet
from avel.models.ave.avlc import PositiveTimeResidualFusion, TimeSpatialGuidedAttention, ptrf_gate

TINY = dict(visual_dim=8, audio_dim=6, attention_dim=16, tsga_hidden=16, lstm_hidden=8, classifier_hidden=8)


def test_ptrf_gate_above_below_epsilon():
    theta = torch.tensor([[0.06, 0.0599, 0.0598, 0.5]])
    torch.testing.assert_close(ptrf_gate(theta, 0.0599), torch.tensor([[0.06, 0.0599, 0.0, 0.5]]))
    per_video = torch.tensor([[[0.3]], [[0.01]]])
    gated = ptrf_gate(torch.tensor([[[0.2, 0.4]], [[0.2, 0.4]]]), per_video)
    torch.testing.assert_close(gated, torch.tensor([[[0.0, 0.4]], [[0.2, 0.4]]]))


def _ptrf(threshold: str, epsilon: float = 0.0599, mean_source: str = "branch_product"):
    torch.manual_seed(0)
    return PositiveTimeResidualFusion(
        dim=8, channels=6, threshold=threshold, epsilon=epsilon, mean_source=mean_source, dropout=0.2
    ).eval()


def test_ptrf_fixed_threshold_keeps_only_entries_above_epsilon():
    ptrf = _ptrf("fixed")
    v, a = torch.randn(3, 10, 8), torch.randn(3, 10, 8)
    with torch.no_grad():
        theta, _, _ = ptrf.correlation(v, a)
        _, gated = ptrf(v, a)
    torch.testing.assert_close(theta.sum(-1), torch.ones(3, 10))
    assert ((gated == 0) == (theta < 0.0599)).all()
    torch.testing.assert_close(gated[theta >= 0.0599], theta[theta >= 0.0599])


@pytest.mark.parametrize("mean_source", ["branch_product", "logits"])
def test_ptrf_weakly_mean_rule(mean_source):
    ptrf = _ptrf("mean", mean_source=mean_source)
    v, a = torch.randn(2, 10, 8), torch.randn(2, 10, 8)
    with torch.no_grad():
        theta, logits, product = ptrf.correlation(v, a)
        _, gated = ptrf(v, a)
    source = product if mean_source == "branch_product" else logits
    for b in range(2):
        thr = source[b].mean()
        assert ((gated[b] == 0) == (theta[b] < thr)).all()


def test_ptrf_residual_fusion_when_everything_is_gated():
    ptrf = _ptrf("fixed", epsilon=1.1)  # above any softmax weight: no cross-modal propagation
    v, a = torch.randn(2, 10, 8), torch.randn(2, 10, 8)
    with torch.no_grad():
        fused, gated = ptrf(v, a)
        expected = ptrf.w_vp(v) + ptrf.w_ap(a)  # V_paf = W_vp V, A_paf = W_ap A (eqs. 11-13)
    assert gated.abs().sum() == 0
    torch.testing.assert_close(fused, expected)


def test_tsga_shapes_and_distributions(batch):
    torch.manual_seed(0)
    tsga = TimeSpatialGuidedAttention(
        visual_dim=8, audio_dim=6, hidden_dim=16, num_segments=10, attention_dim=16, num_regions=49
    )
    visual = batch["visual"].flatten(2, 3)
    v_d, weights, t_m = tsga(visual, batch["audio"])
    assert v_d.shape == (4, 10, 8) and weights.shape == (4, 10, 49) and t_m.shape == (4, 10, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 10))
    torch.testing.assert_close(t_m.sum(-1), torch.ones(4, 10))
    torch.testing.assert_close(v_d, torch.einsum("bts,btsd->btd", weights, visual))
    with pytest.raises(ValueError, match="T = 10"):
        tsga(visual[:, :5], batch["audio"][:, :5])


def test_tsga_selects_one_segment_map_when_temporal_weights_are_one_hot(batch):
    torch.manual_seed(0)
    tsga = TimeSpatialGuidedAttention(
        visual_dim=8, audio_dim=6, hidden_dim=16, num_segments=10, attention_dim=16, num_regions=49
    )
    with torch.no_grad():  # bias W_vt towards column 2: every segment uses segment 2's AGVA map
        tsga.w_vt.weight.zero_()
        tsga.w_vt.bias.copy_(torch.nn.functional.one_hot(torch.tensor(2), 10).float() * 100)
        visual = batch["visual"].flatten(2, 3)
        _, weights, _ = tsga(visual, batch["audio"])
        scores = tsga.agva.scores(visual, batch["audio"])
    expected = torch.softmax(scores[:, 2], -1)
    torch.testing.assert_close(weights, expected[:, None].expand(-1, 10, -1))


def test_defaults_follow_the_paper():
    assert AvlcConfig().threshold == "fixed" and AvlcConfig().epsilon == 0.0599
    assert AvlcConfig(setting="weakly").threshold == "mean"
    assert AvlcConfig().ptrf_channels == 56 and AvlcConfig().dropout == 0.2


@pytest.mark.parametrize("setting", ["fully", "weakly"])
@pytest.mark.parametrize("spatial,use_ptrf", [("agva", False), ("agva", True), ("tsga", False), ("tsga", True)])
def test_table_ii_variants_forward_losses_backward(setting, spatial, use_ptrf, batch):
    torch.manual_seed(0)
    model = AvlcNet(AvlcConfig(setting=setting, spatial=spatial, use_ptrf=use_ptrf, **TINY))
    out = model(batch)
    assert out["segment_scores"].shape == (4, 10, 29)
    assert ("correlation" in out) == use_ptrf and ("temporal_weights" in out) == (spatial == "tsga")
    losses = model.losses(out, batch)
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    lstm_grad = model.lstm_v.lstm.weight_ih_l0.grad
    assert lstm_grad is not None and lstm_grad.abs().sum() > 0
    if setting == "weakly":
        torch.testing.assert_close(out["video_scores"], out["segment_scores"].mean(1))
    assert model.predict(out, batch).shape == (4, 10)


def test_fully_supervised_fits_a_batch(batch):
    torch.manual_seed(0)
    model = AvlcNet(AvlcConfig(dropout=0.0, **TINY))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = model.losses(model(batch), batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model.predict(model(batch), batch) == batch["segment_labels"]).float().mean()
    assert acc > 0.9
