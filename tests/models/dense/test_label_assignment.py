import pytest
import torch

from avel.models.label_assignment import AssignerConfig, assign_targets, make_points

LENGTHS_64 = [64, 32, 16, 8, 4, 2]  # T = 64, strides 1..32


def _level_slices(lengths):
    out, start = [], 0
    for n in lengths:
        out.append(slice(start, start + n))
        start += n
    return out


def test_points_layout():
    pts = make_points(LENGTHS_64, AssignerConfig())
    assert pts.shape == (sum(LENGTHS_64), 4)
    lvl = _level_slices(LENGTHS_64)
    assert pts[lvl[1]][:3, 0].tolist() == [0.0, 2.0, 4.0]
    assert pts[lvl[5]][0].tolist() == [0.0, 64.0, 10000.0, 32.0]
    with pytest.raises(ValueError, match="regression ranges"):
        make_points([64, 32], AssignerConfig())


def test_positives_and_targets_by_hand():
    cfg = AssignerConfig()
    pts = make_points(LENGTHS_64, cfg)
    cls_t, reg_t = assign_targets(pts, torch.tensor([[2.5, 9.0]]), torch.tensor([1]), num_classes=3, cfg=cfg)
    lvl = _level_slices(LENGTHS_64)
    pos = {(l, int(i)) for l, s in enumerate(lvl) for i in torch.nonzero(cls_t[s].sum(-1) > 0).flatten()}
    # level 0: t=5,6 (max distance <= 4); level 1 (stride 2): t=4 (max 5), t=8 (max 5.5); t=6 has max 3.5 < 4
    assert pos == {(0, 5), (0, 6), (1, 2), (1, 4)}
    assert torch.all(cls_t[:, [0, 2]] == 0)
    assert reg_t.shape == (pts.shape[0], 3, 2)
    assert reg_t[lvl[0]][5, 1].tolist() == [2.5, 4.0]
    assert reg_t[lvl[0]][6, 1].tolist() == [3.5, 3.0]
    assert reg_t[lvl[1]][2, 1].tolist() == [0.75, 2.5]  # (1.5, 5) / stride 2
    assert reg_t[lvl[1]][4, 1].tolist() == [2.75, 0.5]
    assert torch.all(reg_t[:, [0, 2]] == 0)


def test_class_aware_overlaps():
    cfg = AssignerConfig(class_aware_tie="shortest")
    pts = make_points(LENGTHS_64, cfg)
    segs = torch.tensor([[3.0, 9.0], [4.0, 8.0], [2.0, 10.0]])
    labels = torch.tensor([0, 0, 2])
    cls_t, reg_t = assign_targets(pts, segs, labels, num_classes=3, cfg=cfg)
    # level 0, t=6: both class-0 segments qualify -> the shorter [4, 8] sets the target
    assert cls_t[6].tolist() == [1.0, 0.0, 1.0]
    assert reg_t[6, 0].tolist() == [2.0, 2.0]
    assert reg_t[6, 2].tolist() == [4.0, 4.0]
    # the official code's outcome: the last listed class-0 segment wins
    last = AssignerConfig()
    _, reg_last = assign_targets(pts, segs[[1, 0, 2]], labels, num_classes=3, cfg=last)
    assert reg_last[6, 0].tolist() == [3.0, 3.0]
    _, reg_short = assign_targets(pts, segs[[1, 0, 2]], labels, num_classes=3, cfg=cfg)
    assert reg_short[6, 0].tolist() == [2.0, 2.0]


def test_not_class_aware_picks_shortest():
    cfg = AssignerConfig(class_aware=False)
    pts = make_points(LENGTHS_64, cfg)
    cls_t, reg_t = assign_targets(
        pts, torch.tensor([[3.0, 9.0], [4.0, 8.0]]), torch.tensor([0, 1]), num_classes=2, cfg=cfg
    )
    assert reg_t.shape == (pts.shape[0], 2)
    assert cls_t[6].tolist() == [0.0, 1.0]
    assert reg_t[6].tolist() == [2.0, 2.0]


def test_center_sampling_restricts_positives():
    lvl2 = _level_slices(LENGTHS_64)[2]  # stride 4, range (8, 16)
    seg, lab = torch.tensor([[0.0, 20.0]]), torch.tensor([0])
    for center, expected in ((False, [1, 2, 3, 4]), (True, [2, 3])):
        cfg = AssignerConfig(center_sample=center)
        cls_t, _ = assign_targets(make_points(LENGTHS_64, cfg), seg, lab, num_classes=1, cfg=cfg)
        assert torch.nonzero(cls_t[lvl2, 0]).flatten().tolist() == expected


def test_empty_and_invalid_labels():
    cfg = AssignerConfig()
    pts = make_points(LENGTHS_64, cfg)
    cls_t, reg_t = assign_targets(pts, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), num_classes=3, cfg=cfg)
    assert cls_t.sum() == 0 and reg_t.shape == (pts.shape[0], 3, 2)
    with pytest.raises(ValueError, match="labels"):
        assign_targets(pts, torch.tensor([[1.0, 5.0]]), torch.tensor([3]), num_classes=3, cfg=cfg)
