"""AGVA baseline: reference size, forward / losses / backward in both settings, learning on a batch."""

from __future__ import annotations

import pytest
import torch

from avel.models.ave import AgvaConfig, AgvaNet

TINY = dict(visual_dim=8, audio_dim=6, attention_dim=16, lstm_hidden=8, classifier_hidden=8)


def test_default_size_matches_reference_att_net():
    # att_Net(128, 128, 512, 29) of YapengTian/AVE-ECCV18 has 1,335,246 parameters
    assert sum(p.numel() for p in AgvaNet(AgvaConfig()).parameters()) == 1_335_246


@pytest.mark.parametrize("setting", ["fully", "weakly"])
def test_forward_losses_backward(setting, batch):
    torch.manual_seed(0)
    model = AgvaNet(AgvaConfig(setting=setting, **TINY))
    out = model(batch)
    assert out["segment_scores"].shape == (4, 10, 29)
    torch.testing.assert_close(out["attention"].sum(-1), torch.ones(4, 10))
    losses = model.losses(out, batch)
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    assert model.attention.affine_h.weight.grad.abs().sum() > 0
    pred = model.predict(out, batch)
    assert pred.shape == (4, 10) and pred.dtype == torch.long


def test_fully_supervised_fits_a_batch(batch):
    torch.manual_seed(0)
    model = AgvaNet(AgvaConfig(**TINY))
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    first = None
    for _ in range(40):
        loss = model.losses(model(batch), batch)["total"]
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    model.eval()
    with torch.no_grad():
        acc = (model.predict(model(batch), batch) == batch["segment_labels"]).float().mean()
    assert acc >= 0.75  # all-background would score 0.55


def test_unsupported_setting():
    with pytest.raises(ValueError, match="setting"):
        AgvaConfig(setting="cml")
