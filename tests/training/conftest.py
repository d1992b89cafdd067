"""Tiny random stores with annotations, shared by the training tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from avel.datasets.annotations import AnnotationSet, Sample, Segment
from avel.datasets.ave import write_ave
from avel.datasets.sampling import AVE_VGG19, AVE_VGGISH, UNAV100_I3D, UNAV100_VGGISH
from avel.datasets.store import StoreWriter, StreamSpec
from avel.datasets.unav100 import write_unav100


def build_dense(root: Path, *, seed: int, subsets: Sequence[str]) -> Path:
    """UnAV-like: one video per entry of ``subsets``, 20-40 rows of rgb (12-d) + vggish (8-d),
    one 2-s event of 3 classes; writes ``root/store`` and ``root/ann.json``."""
    rng = np.random.default_rng(seed)
    samples = []
    specs = {"rgb": StreamSpec("i3d_rgb", UNAV100_I3D, (12,)), "vggish": StreamSpec("vggish", UNAV100_VGGISH, (8,))}
    with StoreWriter(root / "store", dataset="unav100", streams=specs) as w:
        for i, subset in enumerate(subsets):
            n = int(rng.integers(20, 40))
            dur = (n - 1) * 0.32 + 0.96
            w.add(f"-v{i}", {"rgb": rng.standard_normal((n, 12)), "vggish": rng.standard_normal((n, 8))})
            start = float(rng.uniform(0, dur / 2))
            samples.append(
                Sample(f"-v{i}", f"-v{i}", dur, subset, [Segment(start, start + 2.0, ["b", "a", "c"][i % 3], i % 3)])
            )
    write_unav100(AnnotationSet("unav100", ["b", "a", "c"], samples), root / "ann.json")
    return root


def build_ave(root: Path, *, seed: int, subsets: Sequence[str]) -> Path:
    """AVE-like: one 10-s row per entry of ``subsets``, vgg19 7x7x16 + vggish 8-d, one 2-s event
    of 2 classes (background 2); writes ``root/store`` and the AVE annotation files."""
    rng = np.random.default_rng(seed)
    specs = {"vgg19": StreamSpec("vgg19", AVE_VGG19, (7, 7, 16)), "vggish": StreamSpec("vggish", AVE_VGGISH, (8,))}
    samples = []
    with StoreWriter(root / "store", dataset="ave", streams=specs) as w:
        for i, subset in enumerate(subsets):
            w.add(f"yt{i}", {"vgg19": rng.random((10, 7, 7, 16)), "vggish": rng.standard_normal((10, 8))})
            s = int(rng.integers(0, 8))
            samples.append(
                Sample(
                    f"row-{i:04d}",
                    f"yt{i}",
                    10.0,
                    subset,
                    [Segment(float(s), float(s + 2), ["dog", "bell"][i % 2], i % 2)],
                    {"row": i},
                )
            )
    write_ave(AnnotationSet("ave", ["dog", "bell"], samples, background_id=2), root)
    return root


@pytest.fixture(scope="session")
def tiny_dense() -> Callable[..., Path]:
    return build_dense


@pytest.fixture(scope="session")
def tiny_ave() -> Callable[..., Path]:
    return build_ave
