"""Project-wide test settings: deterministic, single-threaded torch on CPU."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a hard dependency, kept for clarity
    pass
