"""Locality-aware Correspondence Correction: target G (eqs. 3-4), loss (eqs. 2, 5), gradients."""

import math

import pytest
import torch

from avel.models.lcc import (
    LccConfig,
    LocalityAwareCorrespondence,
    correspondence_target,
    gaussian_correspondence,
    lcc_loss,
)

torch.set_num_threads(1)


def _pdf(d: float, sigma: float = 1.0) -> float:
    return math.exp(-0.5 * (d / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def test_gaussian_target_hand_computed_with_zero_block_across_videos():
    # two videos: 3 rows and 2 rows
    vid = torch.tensor([0, 0, 0, 1, 1])
    row = torch.tensor([0, 1, 2, 0, 1])
    g = gaussian_correspondence(vid, row, torch.tensor(1.0, dtype=torch.float64))
    p0, p1, p2 = 0.3989422804014327, 0.31069656037692, 0.14676266317374  # d = 0, 1/sqrt2, sqrt2
    expected = torch.tensor(
        [[p0, p1, p2, 0, 0], [p1, p0, p1, 0, 0], [p2, p1, p0, 0, 0], [0, 0, 0, p0, p1], [0, 0, 0, p1, p0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-12)
    assert _pdf(1 / math.sqrt(2)) == pytest.approx(p1, abs=1e-12)
    # larger sigma: broader, lower peak (eq. 3)
    g2 = gaussian_correspondence(vid, row, torch.tensor(2.0, dtype=torch.float64))
    assert g2[0, 0] == pytest.approx(_pdf(0, 2.0)) and g2[0, 2] == pytest.approx(_pdf(math.sqrt(2), 2.0))
    assert (g2[:3, 3:] == 0).all() and (g2[3:, :3] == 0).all()
    norm = correspondence_target(vid, row, target="gaussian", sigma=torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(norm, expected / expected.sum(1, keepdim=True))


def test_alternative_targets_of_table_2b():
    vid = torch.tensor([0, 0, 1, 1])
    row = torch.tensor([0, 1, 0, 1])
    diag = correspondence_target(vid, row, target="diagonal")
    torch.testing.assert_close(diag, torch.eye(4))
    soft = correspondence_target(vid, row, target="softened", softened_eps=0.2, normalize=False)
    assert soft[0, 0] == pytest.approx(0.8) and soft[0, 3] == pytest.approx(0.2 / 3)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="needs sigma"):
        correspondence_target(vid, row, target="gaussian")
    with pytest.raises(ValueError, match="lcc.target"):
        LccConfig(target="uniform")


def test_loss_matches_closed_form_for_orthonormal_pairs():
    # v_i = a_i = e_i: logits = I / tau, so log p_ii = 1/tau - log(e^{1/tau} + M - 1)
    M, tau = 4, 0.5
    e = torch.eye(M, dtype=torch.float64)
    loss = lcc_loss(e, e, torch.eye(M, dtype=torch.float64), torch.tensor(tau, dtype=torch.float64))
    expected = -(1 / tau - math.log(math.exp(1 / tau) + M - 1))
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    # swapping the audio rows of the two videos is penalised
    worse = lcc_loss(e, e[[2, 3, 0, 1]], torch.eye(M, dtype=torch.float64), torch.tensor(tau, dtype=torch.float64))
    assert float(worse) > float(loss) + 1.0


def _module(target="gaussian", **kw):
    torch.manual_seed(0)
    return LocalityAwareCorrespondence(dim=8, cfg=LccConfig(target=target, **kw)).double()


def test_gradient_wrt_sigma_matches_finite_differences():
    lcc = _module(sigma_init=1.5)
    torch.manual_seed(1)
    v, a = torch.randn(2, 8, 6, dtype=torch.float64), torch.randn(2, 8, 6, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    ev, ea = lcc.embed(v, a)
    ev, ea = ev.detach(), ea.detach()
    loss = lcc.loss(ev, ea, mask)
    (grad,) = torch.autograd.grad(loss, lcc.log_sigma)
    h = 1e-6
    with torch.no_grad():
        base = lcc.log_sigma.clone()
        lcc.log_sigma.copy_(base + h)
        up = float(lcc.loss(ev, ea, mask))
        lcc.log_sigma.copy_(base - h)
        down = float(lcc.loss(ev, ea, mask))
        lcc.log_sigma.copy_(base)
    numeric = (up - down) / (2 * h)
    assert abs(float(grad)) > 1e-4
    assert float(grad) == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    # the temperature is learnable too and gets a gradient
    assert torch.autograd.grad(lcc.loss(ev, ea, mask), lcc.temperature)[0].abs() > 0


def test_fixed_gaussian_keeps_sigma_fixed():
    lcc = _module("fixed_gaussian", sigma_init=1.0)
    assert "log_sigma" not in dict(lcc.named_parameters())
    assert float(lcc.sigma) == pytest.approx(1.0)


def test_padded_rows_are_ignored_and_projection_halves_channels():
    lcc = _module()
    assert lcc.visual_proj[-1].out_features == 4  # D / 2
    torch.manual_seed(2)
    ev, ea = torch.randn(2, 5, 4, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    ref = lcc.loss(ev, ea, mask)
    ev2, ea2 = ev.clone(), ea.clone()
    ev2[1, 3:] = 100.0
    ea2[1, 3:] = -7.0
    torch.testing.assert_close(lcc.loss(ev2, ea2, mask), ref)
    # M = 8 valid rows: the loss equals the explicit computation on them
    vid, row = torch.tensor([0] * 5 + [1] * 3), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    g = correspondence_target(vid, row, target="gaussian", sigma=lcc.sigma)
    explicit = lcc_loss(ev[mask], ea[mask], g, lcc.temperature)
    torch.testing.assert_close(ref, explicit)
    with pytest.raises(ValueError, match="must share B x T"):
        lcc.loss(ev, ea[:, :4], mask)
