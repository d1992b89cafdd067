"""Dense mAP (ActivityNet / UnAV protocol) on hand-computed cases."""

import numpy as np
import pytest

from avel.models.metrics.dense_map import DetectionInputError, evaluate_detection, interpolated_ap, segment_tiou


def _ev(gt, preds, thr=(0.5,), **kw):
    return evaluate_detection(gt, preds, tiou_thresholds=thr, **kw)


def test_single_perfect_prediction_all_thresholds():
    r = evaluate_detection({"v": [(0, 10, 0)]}, {"v": [(0, 10, 0, 0.9)]})
    assert r.tiou_thresholds.tolist() == pytest.approx(np.linspace(0.1, 0.9, 9).tolist())
    assert r.map_per_threshold.tolist() == [1.0] * 9
    assert r.average_map == 1.0
    assert r.class_ids.tolist() == [0] and r.num_gt.tolist() == [1] and r.num_predictions.tolist() == [1]


def test_score_ties_keep_input_order():
    # equal scores: the earlier-listed prediction ranks first (stable descending sort)
    gt = {"v": [(0, 10, 0)]}
    fp_first = _ev(gt, {"v": [(20, 30, 0, 0.5), (0, 10, 0, 0.5)]})
    tp_first = _ev(gt, {"v": [(0, 10, 0, 0.5), (20, 30, 0, 0.5)]})
    assert fp_first.average_map == pytest.approx(0.5)  # precision 1/2 at recall 1
    assert tp_first.average_map == pytest.approx(1.0)


def test_duplicate_ground_truth_removed_within_tolerance():
    gt = {"v": [(0, 10, 0), (0.0005, 10.0005, 0), (0, 10, 1)]}  # 2nd duplicates 1st; 3rd has another label
    preds = {"v": [(0, 10, 0, 0.9), (0, 10, 1, 0.8)]}
    r = _ev(gt, preds)
    assert r.num_gt_duplicates == 1 and r.num_gt.tolist() == [1, 1]
    assert r.average_map == pytest.approx(1.0)
    kept = _ev(gt, preds, duplicate_tol_s=None)  # ActivityNet: duplicates count, recall 1/2 for class 0
    assert kept.ap[:, 0].tolist() == pytest.approx([0.5, 1.0])


def test_class_with_gt_but_no_predictions_counts_as_zero():
    r = _ev({"v": [(0, 10, 0), (20, 30, 1)]}, {"v": [(0, 10, 0, 0.9)]})
    assert r.class_ids.tolist() == [0, 1]
    assert r.ap[:, 0].tolist() == [1.0, 0.0]
    assert r.average_map == pytest.approx(0.5)


def test_class_with_predictions_but_no_gt_is_not_counted():
    r = _ev({"v": [(0, 10, 0)]}, {"v": [(0, 10, 0, 0.9), (0, 10, 2, 0.99), (5, 8, 2, 0.3)]})
    assert r.class_ids.tolist() == [0]
    assert r.average_map == pytest.approx(1.0)
    assert r.num_predictions_ignored == 2 and r.num_predictions_total == 3


def test_predictions_in_videos_without_gt_are_false_positives():
    gt = {"v1": [(0, 10, 0)], "empty": []}
    preds = {"v1": [(0, 10, 0, 0.5)], "v2": [(0, 10, 0, 0.9)], "empty": [(0, 10, 0, 0.7)]}
    r = _ev(gt, preds)
    # ranking FP (0.9), FP (0.7), TP (0.5): precision 1/3 at recall 1
    assert r.average_map == pytest.approx(1 / 3)
    assert r.num_predictions_no_gt_video == 2 and r.num_videos == 1


def test_subset_restricts_ground_truth_and_outside_predictions_are_fp():
    gt = {"test": [(0, 10, 0)], "train": [(0, 10, 0)]}
    preds = {"test": [(0, 10, 0, 0.5)], "train": [(0, 10, 0, 0.9)]}
    assert _ev(gt, preds).average_map == pytest.approx(1.0)
    r = _ev(gt, preds, subset=["test"])
    assert r.num_gt_total == 1 and r.average_map == pytest.approx(0.5)


def test_tiou_exactly_at_threshold_matches():
    r = _ev({"v": [(0, 2, 0)]}, {"v": [(0, 1, 0, 0.9)]}, thr=(0.5, 0.6))  # tIoU = 1/2 exactly
    assert r.map_per_threshold.tolist() == [1.0, 0.0]


def test_multiple_thresholds_hand_computed():
    gt = {"v": [(0, 10, 0), (20, 30, 0)]}
    preds = {
        "v": [
            (0, 8, 0, 0.9),  # tIoU 0.8 with A
            (20, 26, 0, 0.8),  # tIoU 0.6 with B
            (0, 10, 0, 0.7),
        ]
    }  # tIoU 1.0 with A (already taken below 0.9)
    r = _ev(gt, preds, thr=(0.5, 0.7, 0.9))
    # 0.5: TP TP FP -> AP 1; 0.7: TP FP FP -> 0.5; 0.9: FP FP TP -> recall 1/2 at precision 1/3
    assert r.map_per_threshold.tolist() == pytest.approx([1.0, 0.5, 1 / 6])
    assert r.average_map == pytest.approx((1 + 0.5 + 1 / 6) / 3)
    assert r.map_at(0.7) == pytest.approx(0.5)
    with pytest.raises(KeyError, match="0.3"):
        r.map_at(0.3)


def test_prediction_takes_highest_tiou_ground_truth():
    gt = {"v": [(0, 10, 0), (5, 15, 0)]}
    # first prediction: tIoU 6/14 with A, 9/11 with B -> must take B, leaving A for the second
    r = _ev(gt, {"v": [(4, 14, 0, 0.9), (0, 10, 0, 0.8)]}, thr=(0.4,))
    assert r.average_map == pytest.approx(1.0)


def test_equal_tiou_tries_later_ground_truth_first():
    gt = {"v": [(0, 10, 0), (10, 20, 0)]}
    # first prediction overlaps both by 1/3 and takes the later one (B); the second then finds B taken
    r = _ev(gt, {"v": [(5, 15, 0, 0.9), (10, 20, 0, 0.8)]}, thr=(0.3,))
    assert r.average_map == pytest.approx(0.5)


def test_matching_is_per_video_and_per_class():
    gt = {"a": [(0, 10, 0)], "b": [(0, 10, 0)]}
    preds = {"a": [(0, 10, 0, 0.9), (0, 10, 1, 0.95)], "b": [(0, 10, 0, 0.8)]}
    r = _ev(gt, preds)
    assert r.average_map == pytest.approx(1.0)  # same segment in two videos: two TPs


def test_interpolated_ap_envelope():
    # precision envelope from the right: [1, 2/3, 2/3] over recall steps 0.5, 0, 0.5
    assert interpolated_ap(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_segment_tiou_values_and_zero_union():
    t = segment_tiou(np.array([[0, 2], [3, 3]]), np.array([[1, 3], [3, 3]]))
    np.testing.assert_allclose(t, [[1 / 3, 0.0], [0.0, 0.0]])


def test_bad_input_names_video_and_row():
    with pytest.raises(DetectionInputError, match=r"'v'.*row 1.*end 1.0 < start 2.0"):
        _ev({"v": [(0, 1, 0)]}, {"v": [(0, 1, 0, 0.5), (2, 1, 0, 0.5)]})
    with pytest.raises(DetectionInputError, match=r"'w'.*row 0.*non-finite"):
        _ev({"w": [(0, np.nan, 0)]}, {})
    with pytest.raises(DetectionInputError, match=r"N x 4"):
        _ev({"v": [(0, 1, 0)]}, {"v": [(0, 1, 0)]})
    with pytest.raises(DetectionInputError, match="num_classes 3"):
        _ev({"v": [(0, 1, 5)]}, {}, num_classes=3)


def test_to_dict_is_json_ready():
    import json

    r = _ev({"v": [(0, 10, 1)]}, {"v": [(0, 10, 1, 0.9)]}, thr=(0.5, 0.7))
    d = json.loads(json.dumps(r.to_dict(["a", "b"])))
    assert d["mAP@0.50"] == 1.0 and d["average_mAP"] == 1.0
    assert d["per_class"] == [
        {"label_id": 1, "label": "b", "num_gt": 1, "num_predictions": 1, "ap": [1.0, 1.0], "average_ap": 1.0}
    ]
    assert "b" in r.format_per_class(["a", "b"]) and "average mAP: 100.00" in r.format_summary()


def _naive_map(gt, preds, thr):
    """Straight per-prediction loop of the protocol (independent of the vectorized code)."""
    classes = sorted({int(r[2]) for rows in gt.values() for r in rows})
    ap = np.zeros((len(classes), len(thr)))
    for ci, c in enumerate(classes):
        g = [(v, float(r[0]), float(r[1])) for v, rows in gt.items() for r in rows if int(r[2]) == c]
        p = [(v, float(r[0]), float(r[1]), float(r[3])) for v, rows in preds.items() for r in rows if int(r[2]) == c]
        p.sort(key=lambda x: -x[3])  # Python's sort is stable
        for k, t in enumerate(thr):
            used, tp = set(), []
            for v, s, e, _ in p:
                cands = []
                for j, (gv, gs, ge) in enumerate(g):
                    if gv == v:
                        inter = max(0.0, min(e, ge) - max(s, gs))
                        cands.append((inter / (e - s + ge - gs - inter), j))
                cands.sort(key=lambda x: (-x[0], -x[1]))
                hit = next((j for iou, j in cands if iou >= t and j not in used), None)
                if hit is not None:
                    used.add(hit)
                tp.append(hit is not None)
            tp = np.array(tp, dtype=float)
            if len(tp):
                ctp = np.cumsum(tp)
                ap[ci, k] = interpolated_ap(ctp / np.arange(1, len(tp) + 1), ctp / len(g))
    return ap


def test_vectorized_matches_naive_loop_on_random_sets():
    rng = np.random.default_rng(7)
    thr = (0.1, 0.3, 0.5, 0.7, 0.9)
    for _ in range(15):
        gt, preds = {}, {}
        for i in range(int(rng.integers(1, 8))):
            n = int(rng.integers(1, 6))
            s = rng.uniform(0, 20, n)
            gt[f"v{i}"] = np.stack([s, s + rng.uniform(0.5, 8, n), rng.integers(0, 3, n)], 1)
            m = int(rng.integers(0, 25))
            k = rng.integers(0, n, m)
            ps = gt[f"v{i}"][k, 0] + rng.normal(0, 1, m)
            preds[f"v{i}"] = np.stack([ps, ps + rng.uniform(0.5, 8, m), rng.integers(0, 3, m), rng.random(m)], 1)
        r = evaluate_detection(gt, preds, tiou_thresholds=thr, duplicate_tol_s=None)
        np.testing.assert_allclose(r.ap, _naive_map(gt, preds, thr), rtol=0, atol=1e-12)


def _unav_loop_map(gt, preds, thr, tol=1e-3):
    """UnAV ``metrics.py`` restated as plain loops: duplicates dropped, per class a ranked list
    matched per threshold against the video's ground truth (descending tIoU, later segment first
    on ties), ``lock_gt`` per threshold, VOC 2011 AP; mAP = mean over classes of the K x C table."""
    kept = {}
    for v, rows in gt.items():
        kept[v] = []
        for s, e, c in rows:
            if not any(abs(s - ks) <= tol and abs(e - ke) <= tol and c == kc for ks, ke, kc in kept[v]):
                kept[v].append((s, e, c))
    classes = sorted({int(c) for rows in kept.values() for _, _, c in rows})
    ap = np.zeros((len(thr), len(classes)))
    for ci, c in enumerate(classes):
        g = [(v, s, e) for v, rows in kept.items() for s, e, cc in rows if cc == c]
        p = sorted(
            ((v, s, e, sc) for v, rows in preds.items() for s, e, cc, sc in rows if cc == c), key=lambda x: -x[3]
        )
        if not p:
            continue
        lock = np.full((len(thr), len(g)), -1)
        tp = np.zeros((len(thr), len(p)))
        for i, (v, s, e, _) in enumerate(p):
            mine = [j for j, (gv, _, _) in enumerate(g) if gv == v]
            ious = [max(0.0, min(e, g[j][2]) - max(s, g[j][1])) for j in mine]
            ious = [x / ((e - s) + (g[j][2] - g[j][1]) - x) for x, j in zip(ious, mine)]
            ranked = sorted(range(len(mine)), key=lambda n: (-ious[n], -n))
            for k, t in enumerate(thr):
                for n in ranked:
                    if ious[n] < t:
                        break
                    if lock[k, mine[n]] < 0:
                        tp[k, i], lock[k, mine[n]] = 1, i
                        break
        ctp, cfp = np.cumsum(tp, axis=1), np.cumsum(1 - tp, axis=1)
        for k in range(len(thr)):
            ap[k, ci] = interpolated_ap(ctp[k] / (ctp[k] + cfp[k]), ctp[k] / len(g))
    return ap.mean(axis=1)


def test_vectorized_equals_unav_loop_exactly_on_random_sets():
    # duplicates, videos without ground truth, predicted classes without ground truth, crowded
    # videos (many segments of one class): the mAPs are equal to the last bit
    rng = np.random.default_rng(11)
    thr = np.linspace(0.1, 0.9, 9)
    for _ in range(8):
        gt, preds = {}, {}
        for i in range(int(rng.integers(2, 12))):
            n = int(rng.integers(0, 9))
            s = np.round(rng.uniform(0, 30, n), 2)
            rows = [
                (float(a), float(a + b), int(c))
                for a, b, c in zip(s, np.round(rng.uniform(0.5, 10, n), 2), rng.integers(0, 4, n))
            ]
            rows += [(r[0] + 5e-4, r[1], r[2]) for r in rows[: int(rng.integers(0, 2))]]  # a duplicate
            gt[f"v{i}"] = rows
            m = int(rng.integers(0, 40))
            ps = rng.uniform(0, 30, m)
            preds[f"v{i}"] = [
                (float(a), float(a + b), int(c), float(sc))
                for a, b, c, sc in zip(ps, rng.uniform(0.2, 10, m), rng.integers(0, 5, m), rng.random(m))
            ]
        preds["no_gt_video"] = [(1.0, 4.0, 0, 0.95), (2.0, 3.0, 1, 0.05)]
        r = evaluate_detection(gt, preds, tiou_thresholds=thr)
        expected = _unav_loop_map(gt, preds, thr)
        assert r.map_per_threshold.tolist() == expected.tolist()
        assert r.average_map == expected.mean()
