"""Tiny synthetic AVE batches for the AVE model tests (CPU, single thread)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

NUM_CLASSES = 29
BACKGROUND = 28
VISUAL_DIM, AUDIO_DIM = 8, 6


def make_batch(*, batch_size: int = 4, num_segments: int = 10, seed: int = 0) -> dict:
    """Videos: event 3 on segments 2-4, event 5 full-length, event 3 on 4-8, an extra background video."""
    g = torch.Generator().manual_seed(seed)
    seg = torch.full((batch_size, num_segments), BACKGROUND)
    seg[0, 2:5] = 3
    seg[1, :] = 5
    if batch_size > 2:
        seg[2, 4:9] = 3
    video_labels = torch.zeros(batch_size, NUM_CLASSES)
    for b in range(batch_size):
        video_labels[b, seg[b].unique()] = 1.0
    is_bg = (seg == BACKGROUND).all(dim=1)
    return {
        "sample_ids": [f"s{b}" for b in range(batch_size)],
        "video_ids": [f"v{b}" for b in range(batch_size)],
        "visual": torch.randn(batch_size, num_segments, 7, 7, VISUAL_DIM, generator=g).abs(),
        "audio": torch.randn(batch_size, num_segments, AUDIO_DIM, generator=g),
        "segment_labels": seg,
        "video_labels": video_labels,
        "is_background_video": is_bg,
    }


@pytest.fixture
def batch() -> dict:
    return make_batch()


@pytest.fixture(name="make_batch")
def make_batch_fixture():
    """The batch factory (tests cannot import conftest under ``--import-mode=importlib``)."""
    return make_batch
