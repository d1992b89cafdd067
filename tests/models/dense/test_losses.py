import math

import pytest
import torch

from avel.models.losses import EmaNormalizer, LossConfig, diou_loss_1d, giou_loss_1d, sigmoid_focal_loss


def test_focal_loss_hand_values():
    logits = torch.tensor([0.0, 0.0, math.log(3.0)])
    targets = torch.tensor([1.0, 0.0, 1.0])
    loss = sigmoid_focal_loss(logits, targets)
    ln2 = math.log(2.0)
    expected = [0.25 * 0.25 * ln2, 0.75 * 0.25 * ln2, 0.25 * 0.0625 * -math.log(0.75)]
    assert torch.allclose(loss, torch.tensor(expected), atol=1e-6)
    assert torch.isclose(sigmoid_focal_loss(logits, targets, reduction="sum"), torch.tensor(sum(expected)))
    # alpha < 0 disables the weighting
    assert torch.isclose(sigmoid_focal_loss(logits[:1], targets[:1], alpha=-1)[0], torch.tensor(0.25 * ln2))


def test_diou_giou_hand_values():
    pred = torch.tensor([[1.0, 1.0], [1.0, 3.0], [0.5, 0.5], [2.0, 2.0]])
    target = torch.tensor([[2.0, 2.0], [2.0, 2.0], [3.0, 1.0], [2.0, 2.0]])
    # iou 0.5 / 0.6 / 0.25 / 1; centre offsets 0 / 1 / 1 / 0 over enclosing 4 / 5 / 4 / 4
    assert torch.allclose(diou_loss_1d(pred, target), torch.tensor([0.5, 0.44, 0.8125, 0.0]), atol=1e-6)
    # a shared point lies in both segments, so enclosing == union and GIoU reduces to 1 - IoU
    assert torch.allclose(giou_loss_1d(pred, target), torch.tensor([0.5, 0.4, 0.75, 0.0]), atol=1e-6)
    assert torch.isclose(diou_loss_1d(pred, target, reduction="sum"), torch.tensor(1.7525))
    with pytest.raises(ValueError, match="non-negative"):
        diou_loss_1d(torch.tensor([[-1.0, 1.0]]), target[:1])


def test_ema_normalizer():
    n = EmaNormalizer()
    assert n() == 250.0
    assert n.update(50) == pytest.approx(0.9 * 250 + 0.1 * 50)
    assert n.update(0) == pytest.approx(0.9 * (0.9 * 250 + 5) + 0.1 * 1)
    assert "value" in n.state_dict()


def test_loss_config_validates():
    with pytest.raises(ValueError, match="reg_loss"):
        LossConfig(reg_loss="l1")
