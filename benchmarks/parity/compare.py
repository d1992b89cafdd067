"""Run our extractors on the recorded parity fixtures and print the max abs differences.

    PYTHONPATH=. python benchmarks/parity/compare.py [NAME ...]

For every fixture of ``tests/extractors/parity`` (recorded by ``record.py`` from the reference
code): rebuild the checkpoint file the reference ran (seeded weights, digest checked), load it
with our extractor's real loader (``from_checkpoint``), run our code on the fixture's inputs and
compare with the reference's outputs. ``tests/extractors/test_parity.py`` asserts the same
numbers are <= 1e-4.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TOLERANCE, fixture_names, load_fixture, max_abs_diff, rebuild_checkpoint  # noqa: E402

import avel.extractors as E  # noqa: E402
from avel.extractors.preprocess import center_crop, flow_to_i3d  # noqa: E402

CASES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {}


def case(prefix: str):
    def wrap(fn):
        CASES[prefix] = fn
        return fn
    return wrap


def _random_raft_file(path: Path) -> Path:
    """A raft_large checkpoint for I3D flow extractors whose flow input is given (RAFT unused)."""
    from avel.extractors.raft_flow import RaftFlow, RaftFlowConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(RaftFlow(RaftFlowConfig()).raft.state_dict(), path)
    return path


@case("i3d_")
def run_i3d(name: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], work: Path,
            tamper: Callable[[dict], None] | None = None, fuse: bool = False,
            **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
    """Our I3D stream on the fixture's windows -> (ours, reference) ``B x 1024``; ``fuse``: the
    module as the pipeline runs it (:meth:`Extractor.fuse_for_inference`)."""
    setup, stream = meta["setup"], meta["stream"]
    ckpt = rebuild_checkpoint(meta, arrays, work / meta["weights"]["file"], tamper=tamper)
    config = dict(window_frames=setup["window_frames"], crop_size=setup["frame_hw"],
                  avg_pool_kernel=tuple(setup["avg_pool_kernel"]), **overrides)
    t = setup["window_frames"]
    x = torch.from_numpy(arrays["input"])
    if stream == "rgb":
        ext = E.get("i3d_rgb").from_checkpoint(ckpt, **config)
        ext = ext.fuse_for_inference() if fuse else ext
        windows = (torch.stack([x[s:s + t] for s in setup["window_starts"]]) if meta["layout"] == "video_features"
                   else x)  # B x T x H x W x 3 uint8
        ours = ext.extract(windows)
    else:
        raft = _random_raft_file(work / "raft.pth")
        ext = E.get("i3d_flow").from_checkpoint({"flow": ckpt, "raft": raft}, **config)
        ext = ext.fuse_for_inference() if fuse else ext
        if meta["layout"] == "video_features":  # raw flow: our preprocess after RAFT
            flow = torch.stack([x[s:s + t] for s in setup["window_starts"]]).float()  # B x T x 2 x H x W
            model_in = flow_to_i3d(center_crop(flow, ext.config.crop_size), clamp=ext.config.flow_clamp)
        else:  # flow images as pytorch-i3d reads them: uint8 B x T x H x W x 2 -> (v / 255) * 2 - 1
            model_in = x.movedim(-1, 2).float() * (2.0 / 255.0) - 1.0
        with torch.no_grad():
            ours = ext.forward({"flow": model_in.transpose(1, 2).contiguous()})
    return ours.numpy(), arrays["output"]


def run(name: str, *, tamper: Callable[[dict], None] | None = None, fuse: bool = False,
        **overrides: Any) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ours, reference, sidecar) of one fixture. ``tamper`` edits the rebuilt checkpoint (in the
    reference's layout) before our loader reads it; ``fuse``: run the module fused for inference,
    as the pipeline does; ``overrides`` go to our extractor's config."""
    arrays, meta = load_fixture(name)
    fn = next(f for p, f in CASES.items() if name.startswith(p))
    with tempfile.TemporaryDirectory() as tmp:
        ours, ref = fn(name, arrays, meta, Path(tmp), tamper=tamper, fuse=fuse, **overrides)
    return ours, ref, meta


def main() -> None:
    torch.set_num_threads(1)
    names = sys.argv[1:] or fixture_names()
    print(f"{'fixture':<28} {'reference':<31} {'max |ours - ref|':>16} {'ref fp32-fp64':>13} {'max |ref|':>9}  "
          f"ok (<= {TOLERANCE:g})")
    for name in names:
        ours, ref, meta = run(name)
        d = max_abs_diff(ours, ref)
        r = meta["reference"]
        arrays, _ = load_fixture(name)
        floor = f"{max_abs_diff(ref, arrays['output_fp64']):.2e}" if "output_fp64" in arrays else "-"
        print(f"{name:<28} {r['repository'] + '@' + r['commit'][:7]:<31} {d:>16.2e} {floor:>13} "
              f"{np.abs(ref).max():>9.3g}  {'yes' if d <= TOLERANCE else 'NO'}")


if __name__ == "__main__":
    main()
