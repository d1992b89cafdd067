"""Shared settings for extractor tests: single-threaded torch, tiny inputs."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def make_frames():
    """Factory of uint8 ``T x H x W x 3`` RGB frames (deterministic)."""

    def make(t: int, h: int, w: int, *, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)

    return make
