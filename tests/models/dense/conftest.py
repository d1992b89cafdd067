"""Tiny dense-detector configurations and synthetic batches following the dense data contract."""

import pytest
import torch

torch.set_num_threads(1)


def tiny_options(*, T: int = 64, C: int = 4, dv: int = 12, da: int = 10) -> dict:
    """YAML-style options of a tiny model (width 16, 4 heads, TDM 8 channels per class)."""
    return {
        "visual_dim": dv,
        "audio_dim": da,
        "num_classes": C,
        "max_seq_len": T,
        "encoder": {"embed_dim": 16, "num_heads": 4},
        "pyramid": {"num_heads": 4},
        "head": {"head_dim": 16},
        "tdm": {"class_dim": 8},
    }


def make_batch(*, B: int = 2, T: int = 64, C: int = 4, dv: int = 12, da: int = 10, lengths=None, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [T] * B
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    segs, labels = [], []
    for i, n in enumerate(lengths):
        k = 1 + i % 3
        starts = torch.rand(k, generator=g) * n * 0.6
        ends = torch.minimum(starts + 2 + torch.rand(k, generator=g) * n * 0.4, torch.tensor(float(n - 1)))
        segs.append(torch.stack([starts, ends], 1))
        labels.append(torch.randint(0, C, (k,), generator=g))
    return {
        "sample_ids": [f"s{i}" for i in range(B)],
        "video_ids": [f"v{i}" for i in range(B)],
        "visual": torch.randn(B, T, dv, generator=g) * mask[..., None],
        "audio": torch.randn(B, T, da, generator=g) * mask[..., None],
        "mask": mask,
        "segments": segs,
        "labels": labels,
        "durations_s": torch.tensor([n * 0.32 + 0.64 for n in lengths]),
        "step_s": torch.full((B,), 0.32),
        "window_s": torch.full((B,), 0.96),
    }


@pytest.fixture
def batch_factory():
    return make_batch


@pytest.fixture
def options_factory():
    return tiny_options
