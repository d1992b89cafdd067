"""Shared AVE blocks: AGVA attention, weak targets, focal loss and the WCCL loss (hand-computed cases)."""

from __future__ import annotations

import math

import pytest
import torch

from avel.models.ave.blocks import (
    AudioGuidedVisualAttention,
    check_ave_batch,
    sigmoid_focal_loss,
    video_class_ids,
    wccl_loss,
    weak_video_targets,
)

BACKGROUND, VISUAL_DIM, AUDIO_DIM = 28, 8, 6


def test_agva_attention_is_a_distribution_over_49_regions(make_batch):
    torch.manual_seed(0)
    att = AudioGuidedVisualAttention(visual_dim=VISUAL_DIM, audio_dim=AUDIO_DIM, hidden_dim=16, num_regions=49)
    visual, audio = check_ave_batch(make_batch(), visual_dim=VISUAL_DIM, audio_dim=AUDIO_DIM)
    attended, alpha, scores = att(visual, audio)
    assert alpha.shape == (4, 10, 49) and attended.shape == (4, 10, VISUAL_DIM)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(4, 10))
    assert (alpha > 0).all()
    torch.testing.assert_close(attended[1, 3], (alpha[1, 3, :, None] * visual[1, 3]).sum(0))
    torch.testing.assert_close(alpha, torch.softmax(scores, -1))


def test_agva_single_region_is_identity():
    att = AudioGuidedVisualAttention(visual_dim=VISUAL_DIM, audio_dim=AUDIO_DIM, hidden_dim=16, num_regions=1)
    pooled = torch.randn(2, 10, VISUAL_DIM)
    visual, audio = check_ave_batch(
        {"visual": pooled, "audio": torch.randn(2, 10, AUDIO_DIM)}, visual_dim=VISUAL_DIM, audio_dim=AUDIO_DIM
    )
    attended, alpha, _ = att(visual, audio)
    torch.testing.assert_close(attended, pooled)


def test_bad_batch_names_the_key(make_batch):
    b = make_batch()
    with pytest.raises(ValueError, match="visual_dim"):
        check_ave_batch(b, visual_dim=VISUAL_DIM + 1, audio_dim=AUDIO_DIM)
    with pytest.raises(KeyError, match="audio"):
        check_ave_batch({"visual": b["visual"]}, visual_dim=VISUAL_DIM, audio_dim=AUDIO_DIM)


def test_weak_targets_reference_sets_background_only_for_event_free_videos(make_batch):
    b = make_batch()
    ref = weak_video_targets(b, background_id=BACKGROUND, mode="reference")
    assert ref[0, 3] == 1 and ref[0, BACKGROUND] == 0  # partly background video: event class only
    assert ref[3, BACKGROUND] == 1 and ref[3].sum() == 1  # extra background video
    raw = weak_video_targets(b, background_id=BACKGROUND, mode="dataset")
    assert raw[0, BACKGROUND] == 1


def test_video_class_ids(make_batch):
    ids = video_class_ids(make_batch(), background_id=BACKGROUND)
    assert ids.tolist() == [3, 5, 3, BACKGROUND]


def test_focal_loss_hand_value():
    loss = sigmoid_focal_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), alpha=0.25, gamma=2.0)
    expected = torch.tensor([0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)])
    torch.testing.assert_close(loss, expected)


def test_wccl_hand_values():
    e = torch.eye(2)
    # distinct labels: each anchor's only positive is its other view, sim 1; the two negatives have sim 0
    loss = wccl_loss([e, e.clone()], torch.tensor([0, 1]), temperature=1.0, normalize=False)
    torch.testing.assert_close(loss, torch.tensor(4 * math.log((math.e + 2) / math.e)))
    # one label: every other anchor is positive, mean ratio = 1/3
    loss = wccl_loss([e, e.clone()], torch.tensor([0, 0]), temperature=1.0, normalize=False)
    torch.testing.assert_close(loss, torch.tensor(4 * math.log(3.0)))
    mean = wccl_loss([e, e.clone()], torch.tensor([0, 0]), temperature=1.0, normalize=False, reduction="mean")
    torch.testing.assert_close(mean, torch.tensor(math.log(3.0)))


def test_wccl_temperature_sharpens_and_normalization_ignores_scale():
    e = torch.eye(2)
    hot = wccl_loss([e, e.clone()], torch.tensor([0, 1]), temperature=0.1, normalize=False)
    cold = wccl_loss([e, e.clone()], torch.tensor([0, 1]), temperature=1.0, normalize=False)
    assert hot < cold
    scaled = wccl_loss([3 * e, 5 * e], torch.tensor([0, 1]), temperature=1.0, normalize=True)
    torch.testing.assert_close(scaled, cold)
    with pytest.raises(ValueError, match="temperature"):
        wccl_loss([e, e], torch.tensor([0, 1]), temperature=0.0)


@pytest.mark.parametrize("name", ["agva", "ccln", "avlc"])
def test_example_batch_runs_through_every_model(name):
    from avel.models.ave import AgvaConfig, AgvaNet, AvlcConfig, AvlcNet, CclnConfig, CclnNet

    tiny = dict(visual_dim=VISUAL_DIM, audio_dim=AUDIO_DIM, attention_dim=16)
    model = {
        "agva": lambda: AgvaNet(AgvaConfig(lstm_hidden=4, **tiny)),
        "ccln": lambda: CclnNet(CclnConfig(d_model=8, num_heads=2, ff_dim=16, **tiny)),
        "avlc": lambda: AvlcNet(AvlcConfig(tsga_hidden=8, lstm_hidden=4, **tiny)),
    }[name]()
    batch = model.example_batch(batch_size=2)  # T: the model's num_segments, else 10 (AVE clips)
    assert batch["visual"].shape == (2, 10, 7, 7, VISUAL_DIM)
    if name == "avlc":  # built for a fixed T: another probe length is refused, not ignored
        with pytest.raises(ValueError, match="num_segments 10"):
            model.example_batch(batch_size=2, seq_len=256)
    else:
        assert model.example_batch(batch_size=1, seq_len=12)["audio"].shape == (1, 12, AUDIO_DIM)
    out = model(batch)
    assert torch.isfinite(model.losses(out, batch)["total"])
    assert model.predict(out, batch).shape == (2, 10)


def test_out_of_range_labels_are_clear_errors(make_batch):
    from avel.models.ave import AvlcConfig, AvlcNet

    model = AvlcNet(
        AvlcConfig(visual_dim=VISUAL_DIM, audio_dim=AUDIO_DIM, attention_dim=8, tsga_hidden=8, lstm_hidden=4)
    )
    b = make_batch()
    out = model(b)
    b["segment_labels"][0, 0] = 29
    with pytest.raises(ValueError, match=r"segment_labels.*0\.\.28"):
        model.losses(out, b)
    with pytest.raises(ValueError, match="video_labels"):
        weak_video_targets({"video_labels": torch.zeros(2, 10)}, background_id=BACKGROUND)
