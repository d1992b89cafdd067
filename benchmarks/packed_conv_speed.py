"""An extractor's forward on the CPU with and without prepacked oneDNN convolutions, side by side.

I3D: both sides are the fused module the pipeline runs (BatchNorm folded into the
convolutions, ``fuse_for_inference``); "plain" then switches the units back to ``F.conv3d`` +
in-place ReLU, "packed" keeps the prepacked weights with the ReLU as a oneDNN post-op
(:mod:`avel.extractors.fusion`). VGG-19 / VGGish: "plain" is the module as built, "packed" the
fused one (their only fusion is the packing). The two alternate within each round on the same
windows, so a changing machine load falls on both alike. Prints per side the median and range
of the seconds per ``extract`` call, the ratio, and the largest row difference between them.

    python benchmarks/packed_conv_speed.py --preset full --batch-size 1 --rounds 10
    python benchmarks/packed_conv_speed.py --extractor vgg19 --batch-size 1 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

import avel.extractors as E
from avel.extractors.fusion import onednn_packed_available
from avel.extractors.i3d import Unit3D


def _windows(model: Any, batch_size: int) -> torch.Tensor:
    """Random windows of ``batch_size`` rows in the extractor's input format."""
    g = torch.Generator().manual_seed(0)
    if model.modality == "audio":
        return torch.randn(batch_size, model.plan.window_units + model.context_samples, generator=g) * 0.1
    spec = model.decode_spec
    h, w = (spec.center_crop,) * 2 if spec.center_crop else tuple(spec.size_hw or (spec.short_side,) * 2)
    frames = model.plan.window_units + model.context_frames
    return torch.randint(0, 256, (batch_size, frames, h, w, 3), dtype=torch.uint8, generator=g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractor", default="i3d_rgb", help="i3d_rgb, vgg19 or vggish (i3d_flow: RAFT included)")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if not onednn_packed_available():
        raise SystemExit("this torch build has no oneDNN packed convolution: nothing to compare")
    if args.threads:
        torch.set_num_threads(args.threads)
    cls = E.get(args.extractor)
    models = {
        "plain": cls.random_init(preset=args.preset, seed=0),
        "packed": cls.random_init(preset=args.preset, seed=0),
    }
    models["packed"].fuse_for_inference()
    if args.extractor.startswith("i3d"):  # plain: fused too, the units back on F.conv3d
        models["plain"].fuse_for_inference()
        for u in models["plain"].modules():
            if isinstance(u, Unit3D):
                u.packed = None
    windows = _windows(models["plain"], args.batch_size)
    seconds: dict[str, list[float]] = {"plain": [], "packed": []}
    rows: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for side_name, model in models.items():
            rows[side_name] = model.extract(windows)  # warm-up: packs the weights, first-call costs
            t0 = time.perf_counter()
            model.extract(windows)
            seconds[side_name].append(time.perf_counter() - t0)
    summary = {
        side_name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s)}
        for side_name, s in seconds.items()
    }
    print(
        json.dumps(
            {
                "extractor": args.extractor,
                "preset": args.preset,
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
                "rounds": args.rounds,
                **summary,
                "packed_vs_plain_median": summary["packed"]["median_s"] / summary["plain"]["median_s"],
                "max_abs_row_diff": float((rows["packed"] - rows["plain"]).abs().max()),
                "mean_abs_row": float(rows["plain"].abs().mean()),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
