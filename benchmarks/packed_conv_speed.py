"""I3D forward on the CPU with and without prepacked oneDNN convolutions, side by side.

Both sides are the fused module the pipeline runs (BatchNorm folded into the convolutions,
``fuse_for_inference``); "plain" then switches the units back to ``F.conv3d`` + in-place ReLU,
"packed" keeps the prepacked weights with the ReLU as a oneDNN post-op
(:mod:`avel.extractors.fusion`). The two alternate within each round on the same windows, so a
changing machine load falls on both alike. Prints per side the median and range of the
seconds per forward call, the ratio, and the largest row difference between the sides.

    python benchmarks/packed_conv_speed.py --preset full --batch-size 1 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import avel.extractors as E
from avel.extractors.fusion import PackedConv, onednn_packed_available
from avel.extractors.i3d import Unit3D


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractor", default="i3d_rgb", help="an I3D extractor (i3d_rgb; i3d_flow includes RAFT)")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if not onednn_packed_available():
        raise SystemExit("this torch build has no oneDNN packed convolution: nothing to compare")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = E.get(args.extractor).random_init(preset=args.preset, seed=0).fuse_for_inference()
    units = [m for m in model.modules() if isinstance(m, Unit3D)]
    c = model.config
    side = c.crop_size if args.extractor == "i3d_rgb" else c.short_side
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(
        0, 256, (args.batch_size, c.window_frames + model.context_frames, side, side, 3), dtype=torch.uint8, generator=g
    )
    seconds: dict[str, list[float]] = {"plain": [], "packed": []}
    rows: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for side_name in seconds:
            for u in units:
                u.packed = PackedConv() if side_name == "packed" else None
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
