"""Run our extractors on the recorded parity fixtures and print the max abs differences.

    PYTHONPATH=. python benchmarks/parity/compare.py [NAME ...]

For every fixture of ``tests/extractors/parity`` (recorded by ``record.py`` from the reference
code): rebuild the checkpoint file the reference ran (seeded weights, digest checked), load it
with our extractor's real loader (``from_checkpoint``), run our code on the fixture's inputs and
compare with the reference's outputs. ``tests/extractors/test_parity.py`` asserts the same
numbers are <= 1e-4.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Fixture:
    """One recorded fixture as a case runs it: its arrays and sidecar, a work folder for rebuilt
    checkpoint files and an optional edit of the rebuilt checkpoint (``tamper``)."""

    name: str
    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]
    work: Path
    tamper: Callable[[dict], None] | None = None

    def checkpoint(self, wrap: str | None = None) -> Path:
        """The reference's checkpoint file rebuilt (digest checked), ``tamper`` applied."""
        path = self.work / self.meta["weights"]["file"]
        return rebuild_checkpoint(self.meta, self.arrays, path, tamper=self.tamper, wrap=wrap)


def _seeded_file(module: torch.nn.Module, path: Path, seed: int = 0) -> Path:
    """A checkpoint of seeded weights in ``module``'s key layout (``module`` may be on the meta
    device), for a part that is not compared; reused when it exists."""
    from common import seeded_state, state_spec

    if not path.is_file():
        torch.save(seeded_state(state_spec(module.state_dict()), seed), path)
    return path


@case("i3d_")
def run_i3d(fx: Fixture, fuse: bool = False, **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
    """Our I3D stream on the fixture's windows -> (ours, reference) ``B x 1024``; ``fuse``: the
    module as the pipeline runs it (:meth:`Extractor.fuse_for_inference`)."""
    setup, stream = fx.meta["setup"], fx.meta["stream"]
    ckpt = fx.checkpoint()
    config = dict(
        window_frames=setup["window_frames"],
        crop_size=setup["frame_hw"],
        avg_pool_kernel=tuple(setup["avg_pool_kernel"]),
        **overrides,
    )
    t = setup["window_frames"]
    x = torch.from_numpy(fx.arrays["input"])
    if stream == "rgb":
        ext = E.get("i3d_rgb").from_checkpoint(ckpt, **config)
        ext = ext.fuse_for_inference() if fuse else ext
        windows = (
            torch.stack([x[s : s + t] for s in setup["window_starts"]]) if fx.meta["layout"] == "video_features" else x
        )  # B x T x H x W x 3 uint8
        ours = ext.extract(windows)
    else:
        raft = _seeded_file(E.get("i3d_flow").build(device="meta").raft.raft, fx.work / "raft.pth")
        ext = E.get("i3d_flow").from_checkpoint({"flow": ckpt, "raft": raft}, **config)
        ext = ext.fuse_for_inference() if fuse else ext
        if fx.meta["layout"] == "video_features":  # raw flow: our preprocess after RAFT
            flow = torch.stack([x[s : s + t] for s in setup["window_starts"]]).float()  # B x T x 2 x H x W
            model_in = flow_to_i3d(center_crop(flow, ext.config.crop_size), clamp=ext.config.flow_clamp)
        else:  # flow images as pytorch-i3d reads them: uint8 B x T x H x W x 2 -> (v / 255) * 2 - 1
            model_in = x.movedim(-1, 2).float() * (2.0 / 255.0) - 1.0
        with torch.no_grad():
            ours = ext.forward({"flow": model_in.transpose(1, 2).contiguous()})
    return ours.numpy(), fx.arrays["output"]


@case("raft_")
def run_raft(fx: Fixture, **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
    """Our I3D flow stream's RAFT (``window_flows``, loaded through ``i3d_flow.from_checkpoint``)
    on windows of 2 frames (one pair each) -> (ours, reference) ``P x 2 x H' x W'``."""
    raft = fx.checkpoint()
    cls = E.get("i3d_flow")
    flow = _seeded_file(cls.build(device="meta").flow, fx.work / "flow_imagenet.pt")
    ext = cls.from_checkpoint(
        {"flow": flow, "raft": raft},
        window_frames=1,
        stride_frames=1,
        num_flow_updates=fx.meta["setup"]["num_flow_updates"],
        **overrides,
    )
    frames = torch.from_numpy(fx.arrays["input"])  # T x H x W x 3 uint8
    batch = ext.windows(frames).data[: len(frames) - 1]  # (T - 1) x 2 x H x W x 3 (the last window would repeat)
    with torch.no_grad():
        ours = ext.window_flows(batch, batch.movedim(-1, -3).float())[:, 0]  # (T - 1) x 2 x H' x W'
    return ours.numpy(), fx.arrays["output"]


@case("vggish_")
def run_vggish(
    fx: Fixture, part: str = "output", fuse: bool = False, **overrides: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Our VGGish (default config: hop 0.96 s, final ReLU) on the waveform. ``part``:
    ``"examples"`` (log-mel frontend), ``"output"`` (embeddings), ``"output_postprocess"`` (PCA +
    quantisation with the fixture's PCA file); ``fuse``: as the pipeline runs it."""
    ckpt = fx.checkpoint()
    files: Any = ckpt
    if part == "output_postprocess":
        pca = {k: torch.from_numpy(fx.arrays[f"pca/{k}"]).float() for k in ("pca_eigen_vectors", "pca_means")}
        torch.save(pca, fx.work / "vggish_pca_params-970ea276.pth")
        files, overrides = fx.work, {**overrides, "postprocess": True}
    ext = E.get("vggish").from_checkpoint(files, **overrides)
    ext = ext.fuse_for_inference() if fuse else ext
    win = ext.windows(torch.from_numpy(fx.arrays["input"]))
    with torch.no_grad():
        examples = ext.preprocess(win.data)  # N x 1 x 96 x 64
        ours = examples if part == "examples" else ext.forward(examples)
    return ours.numpy(), fx.arrays[part]


@case("vgg19_")
def run_vgg19(fx: Fixture, fuse: bool = False, **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
    """Our VGG-19 (``preprocessing="torchvision"``) pool5 of every frame -> (ours, reference);
    ``fuse``: as the pipeline runs it."""
    setup = fx.meta["setup"]
    ckpt = fx.checkpoint()
    config = dict(
        preprocessing=setup["preprocessing"],
        image_size=setup["image_size"],
        window_frames=setup["window_frames"],
        stride_frames=setup["window_frames"],
        **overrides,
    )
    ext = E.get("vgg19").from_checkpoint(ckpt, **config)
    ext = ext.fuse_for_inference() if fuse else ext
    batch = torch.from_numpy(fx.arrays["input"])  # B x L x S x S x 3
    with torch.no_grad():
        x = ext.preprocess(batch)
        ours = ext.features(x.flatten(0, 1))  # B*L x 512 x S/32 x S/32
        rows = ext.forward(x)  # B x S/32 x S/32 x 512: the window mean of the same maps
    ref = fx.arrays["output"]
    b, length = batch.shape[:2]
    expected_rows = ref.reshape(b, length, *ref.shape[1:]).mean(axis=1).transpose(0, 2, 3, 1)
    if max_abs_diff(rows, expected_rows) > TOLERANCE:
        raise AssertionError("vgg19: forward is not the window mean of pool5 in channels-last order")
    return ours.numpy(), ref


@case("onepeace_")
def run_onepeace(fx: Fixture, **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
    """Our ``onepeace_image`` / ``onepeace_audio`` (tiny preset, loaded from the fairseq-style
    file) tokens after the final LayerNorm. Audio: ``audio_max_positions`` 1024 as the reference
    hard-codes (the tiny preset's 64 gives other log buckets)."""
    modality = fx.name.split("_")[1]
    ckpt = fx.checkpoint(wrap="model")
    if modality == "audio":
        overrides = {"audio_max_positions": fx.meta["setup"]["audio_max_positions"], **overrides}
    ext = E.get(f"onepeace_{modality}").from_checkpoint(ckpt, preset=fx.meta["setup"]["preset"], **overrides)
    with torch.no_grad():
        ours = ext.model.encode(torch.from_numpy(fx.arrays["input"]), modality=modality)
    return ours.numpy(), fx.arrays["output"]


_WORK: dict[str, Path] = {}
"""fixture -> directory of its rebuilt, untampered checkpoint files (reused within a process:
rebuilding VGGish's 72M weights takes seconds); removed at exit."""


def _work_dir(name: str, tampered: bool) -> tuple[Path, Callable[[], None]]:
    if tampered:
        tmp = Path(tempfile.mkdtemp(prefix=f"avel-parity-{name}-"))
        return tmp, lambda: shutil.rmtree(tmp, ignore_errors=True)
    if name not in _WORK:
        _WORK[name] = Path(tempfile.mkdtemp(prefix=f"avel-parity-{name}-"))
        atexit.register(shutil.rmtree, _WORK[name], True)
    return _WORK[name], lambda: None


def run(
    name: str, *, tamper: Callable[[dict], None] | None = None, fuse: bool = False, **overrides: Any
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ours, reference, sidecar) of one fixture. ``tamper`` edits the rebuilt checkpoint (in the
    reference's layout) before our loader reads it; ``fuse`` (I3D, VGG-19, VGGish): run the
    module fused for inference, as the pipeline does; ``overrides`` go to our extractor's config."""
    arrays, meta = load_fixture(name)
    fn = next(f for p, f in CASES.items() if name.startswith(p))
    work, cleanup = _work_dir(name, tamper is not None)
    try:
        fx = Fixture(name, arrays, meta, work, tamper)
        ours, ref = fn(fx, **({"fuse": True} if fuse else {}), **overrides)
    finally:
        cleanup()
    return ours, ref, meta


VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("vggish_torchvggish", {"part": "examples"}),  # log-mel frontend alone
    ("vggish_video_features", {"part": "examples"}),
    ("vggish_torchvggish", {"part": "output_postprocess"}),  # PCA + 8-bit quantisation
    ("raft_torchvision", {"flow_pair_dedupe": False}),  # RAFT on every window's pairs
]
"""Further comparisons on the same fixtures (printed by ``main``, asserted by the tests)."""


def main() -> None:
    torch.set_num_threads(1)
    rows = [(n, {}) for n in (sys.argv[1:] or fixture_names())]
    rows += [(n, o) for n, o in VARIANTS if not sys.argv[1:] or n in sys.argv[1:]]
    print(
        f"{'fixture':<56} {'reference':<34} {'max |ours - ref|':>16} {'ref fp32-fp64':>13} {'max |ref|':>9}  "
        f"ok (<= {TOLERANCE:g})"
    )
    for name, options in rows:
        ours, ref, meta = run(name, **options)
        d = max_abs_diff(ours, ref)
        r = meta["reference"]
        version = r["commit"][:7] if all(c in "0123456789abcdef" for c in r["commit"]) else r["commit"]
        arrays, _ = load_fixture(name)
        floor = f"{max_abs_diff(ref, arrays['output_fp64']):.2e}" if "output_fp64" in arrays and not options else "-"
        label = name + "".join(f" {k}={v}" for k, v in options.items())
        print(
            f"{label:<56} {r['repository'] + '@' + version:<34} {d:>16.2e} {floor:>13} "
            f"{np.abs(ref).max():>9.3g}  {'yes' if d <= TOLERANCE else 'NO'}"
        )


if __name__ == "__main__":
    main()
