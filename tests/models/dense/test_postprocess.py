import math

import pytest
import torch

from avel.models.postprocess import PostprocessConfig, decode_video, grid_to_seconds, postprocess_batch, soft_nms_1d


def reference_soft_nms(segs, scores, labels, *, sigma, min_score, max_per_class, method="soft", thr=0.7):
    """Straightforward per-class loop following the UnAV CPU kernel."""
    out = []
    for c in sorted(set(labels)):
        items = [[s[0], s[1], p] for s, p, l in zip(segs, scores, labels) if l == c and p >= min_score]
        picks = 0
        while items and picks < max_per_class:
            best = max(range(len(items)), key=lambda i: (items[i][2], -i))
            x1, x2, p = items.pop(best)
            out.append((x1, x2, c, p))
            picks += 1
            kept = []
            for y1, y2, q in items:
                inter = max(0.0, min(x2, y2) - max(x1, y1))
                iou = inter / ((x2 - x1 + 1e-6) + (y2 - y1 + 1e-6) - inter)
                if method == "soft":
                    q *= math.exp(-iou * iou / sigma)
                elif method == "hard":
                    q = 0.0 if iou >= thr else q
                if q >= min_score:
                    kept.append([y1, y2, q])
            items = kept
    return sorted(out, key=lambda r: -r[3])


def test_soft_nms_hand_case():
    segs = torch.tensor([[0.0, 10.0], [0.0, 10.0], [20.0, 30.0], [0.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.5, 0.7])
    labels = torch.tensor([0, 0, 0, 1])
    s, p, l = soft_nms_1d(segs, scores, labels, sigma=0.4, min_score=0.001)
    # the duplicate of class 0 decays by exp(-1 / 0.4); class 1 and the disjoint segment keep their scores
    assert p.tolist() == pytest.approx([0.9, 0.7, 0.5, 0.8 * math.exp(-1 / 0.4)], rel=1e-5)
    assert l.tolist() == [0, 1, 0, 0]
    assert s[2].tolist() == [20.0, 30.0]
    # class-agnostic: the class-1 copy is suppressed too
    _, p2, _ = soft_nms_1d(segs, scores, labels, sigma=0.4, min_score=0.001, multiclass=False)
    assert p2[1].item() == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["soft", "hard"])
def test_soft_nms_matches_reference_loop(seed, method):
    g = torch.Generator().manual_seed(seed)
    n = 60
    start = torch.rand(n, generator=g) * 50
    segs = torch.stack([start, start + 0.5 + torch.rand(n, generator=g) * 20], 1)
    scores = torch.rand(n, generator=g) * 0.99 + 0.005
    labels = torch.randint(0, 4, (n,), generator=g)
    s, p, l = soft_nms_1d(segs, scores, labels, method=method, sigma=0.4, min_score=0.05, max_per_group=7)
    ref = reference_soft_nms(
        segs.tolist(), scores.tolist(), labels.tolist(), sigma=0.4, min_score=0.05, max_per_class=7, method=method
    )
    assert len(ref) == len(p)
    assert p.tolist() == pytest.approx([r[3] for r in ref], rel=1e-4)
    assert l.tolist() == [r[2] for r in ref]
    assert torch.allclose(s, torch.tensor([[r[0], r[1]] for r in ref]), rtol=1e-5)


def test_soft_nms_empty():
    s, p, l = soft_nms_1d(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert s.shape == (0, 2) and p.numel() == 0 and l.numel() == 0


def test_decode_class_aware_offsets():
    cfg = PostprocessConfig(pre_nms_thresh=0.5)
    logits0 = torch.full((4, 2), -10.0)
    logits0[2, 1] = 10.0  # level 0 (stride 1), row 2, class 1
    logits1 = torch.full((2, 2), -10.0)
    logits1[1, 0] = 10.0  # level 1 (stride 2), row 1 -> t = 2, class 0
    off0 = torch.zeros(4, 2, 2)
    off0[2, 1] = torch.tensor([1.0, 0.5])
    off1 = torch.zeros(2, 2, 2)
    off1[1, 0] = torch.tensor([0.5, 1.5])
    masks = [torch.ones(4, dtype=torch.bool), torch.ones(2, dtype=torch.bool)]
    segs, scores, labels = decode_video([logits0, logits1], [off0, off1], masks, [1, 2], cfg)
    assert labels.tolist() == [1, 0]
    assert segs.tolist() == [[1.0, 2.5], [1.0, 5.0]]
    # masked rows never produce detections
    no_level0 = [torch.zeros(4, dtype=torch.bool), masks[1]]
    segs, _, _ = decode_video([logits0, logits1], [off0, off1], no_level0, [1, 2], cfg)
    assert segs.tolist() == [[1.0, 5.0]]


def test_grid_to_seconds_and_batch_format():
    secs = grid_to_seconds(torch.tensor([[-3.0, 10.0], [90.0, 200.0]]), step_s=0.32, window_s=0.96, duration_s=40.0)
    assert torch.allclose(secs, torch.tensor([[0.0, 3.68], [29.28, 40.0]]))
    T, C = 8, 3
    logits = [torch.full((2, T, C), -10.0), torch.full((2, T // 2, C), -10.0)]
    logits[0][0, 4, 2] = 3.0
    offsets = [torch.zeros(2, T, C, 2), torch.zeros(2, T // 2, C, 2)]
    offsets[0][0, 4, 2] = torch.tensor([2.0, 1.0])
    masks = [torch.ones(2, T, dtype=torch.bool), torch.ones(2, T // 2, dtype=torch.bool)]
    batch = {
        "step_s": torch.tensor([0.5, 0.5]),
        "window_s": torch.tensor([1.0, 1.0]),
        "durations_s": torch.tensor([10.0, 10.0]),
    }
    preds = postprocess_batch(logits, offsets, masks, [1, 2], batch, PostprocessConfig(pre_nms_thresh=0.01))
    assert len(preds) == 2 and preds[1] == []
    start_s, end_s, label, score = preds[0][0]
    assert (start_s, end_s, label) == (pytest.approx(1.5), pytest.approx(3.0), 2)  # grid [2, 5] -> s
    assert score == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert all(isinstance(v, float) for v in (start_s, end_s, score)) and isinstance(label, int)
    with pytest.raises(ValueError, match="nms_method"):
        PostprocessConfig(nms_method="fast")
