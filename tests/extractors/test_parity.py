"""Our extractors against fixtures recorded by running the reference code itself.

The fixtures (``tests/extractors/parity/*.npz`` + ``.json``) were written by
``benchmarks/parity/record.py`` from the reference repositories at the commits named in each
sidecar, on seeded random weights saved in the reference's own checkpoint layout. Here the same
checkpoint file is rebuilt from the seed (digest checked), loaded by our real loader
(``from_checkpoint``, default config: e.g. I3D's BatchNorm eps comes from the file's layout) and
run on the same inputs; ``benchmarks/parity/compare.py`` prints the same differences.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "parity"))
import common  # noqa: E402
import compare  # noqa: E402

FIXTURES = common.fixture_names()


def test_fixtures_are_recorded_and_small():
    assert {
        "i3d_rgb_video_features",
        "i3d_flow_video_features",
        "i3d_rgb_pytorch_i3d",
        "i3d_flow_pytorch_i3d",
        "raft_torchvision",
        "raft_video_features",
        "vggish_torchvggish",
        "vggish_video_features",
        "vgg19_torchvision",
        "onepeace_image",
        "onepeace_audio",
    } <= set(FIXTURES)
    for name in FIXTURES:
        assert (common.FIXTURE_DIR / f"{name}.npz").stat().st_size < 600_000, name
        _, meta = common.load_fixture(name)
        assert meta["reference"]["commit"] and meta["command"].startswith("python benchmarks/parity/record.py")


@pytest.mark.parametrize("name", FIXTURES)
def test_matches_reference(name):
    ours, ref, meta = compare.run(name)
    assert ours.shape == ref.shape
    assert np.abs(ref).max() > 0.1  # the reference output is not trivially small
    diff = common.max_abs_diff(ours, ref)
    assert diff <= common.TOLERANCE, f"{name}: max abs diff {diff:.3g} vs {meta['reference']['repository']}"


@pytest.mark.parametrize(
    "name,options",
    [pytest.param(n, o, marks=[pytest.mark.slow] if n.startswith("raft") else []) for n, o in compare.VARIANTS],
)
def test_matches_reference_variants(name, options):
    ours, ref, _ = compare.run(name, **options)
    assert common.max_abs_diff(ours, ref) <= common.TOLERANCE


def test_vggish_fixture_needs_the_final_relu():
    ours, ref, _ = compare.run("vggish_video_features", final_relu=False)
    assert (ref >= 0).all() and (ours < 0).any()
    assert common.max_abs_diff(ours, ref) > 100 * common.TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name,wrong_eps", [("i3d_rgb_video_features", 1e-3), ("i3d_flow_pytorch_i3d", 1e-5)])
def test_i3d_fixture_catches_the_other_layouts_eps(name, wrong_eps):
    ours, ref, _ = compare.run(name, bn_eps=wrong_eps)
    assert common.max_abs_diff(ours, ref) > 100 * common.TOLERANCE


@pytest.mark.slow
def test_i3d_fixture_catches_one_perturbed_weight():
    def tamper(state):
        state["mixed_4d.branch_1.1.conv3d.weight"][0, 0, 1, 1, 1] += 0.05

    ours, ref, _ = compare.run("i3d_rgb_video_features", tamper=tamper)
    assert common.max_abs_diff(ours, ref) > common.TOLERANCE


def test_princeton_raft_keys_convert_to_torchvision_raft_large():
    """The key list of video_features' raft-sintel.pth layout (recorded in the fixture) maps onto
    torchvision's raft_large exactly; unknown keys are refused."""
    import torch
    from torchvision.models.optical_flow import raft_large

    from avel.extractors.weights import raft_princeton_to_torchvision

    _, meta = common.load_fixture("raft_video_features")
    state = {k: torch.zeros(shape) for k, shape, _ in meta["weights"]["spec"]}
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in raft_large().state_dict().items()}
    assert {k: tuple(v.shape) for k, v in raft_princeton_to_torchvision(state).items()} == expected
    with pytest.raises(KeyError, match="fnet.layer9.0.conv7.weight"):
        raft_princeton_to_torchvision({"fnet.layer9.0.conv7.weight": torch.zeros(1)})
