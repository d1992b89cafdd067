"""FLOPs per window of the full-size extractors (``torch.utils.flop_counter``, meta device).

One window of each extractor's full preset goes through ``extract`` on the meta device (no
memory, no compute); the counter adds up convolutions and matrix products (2 FLOPs per
multiply-add). Element-wise ops, pooling, normalisation and ``grid_sample`` (RAFT's
correlation lookup) are not counted. Video windows have the decoded size the extractor asks
for; extractors that take whole frames (flow) get 4:3 frames at their short side.

    python benchmarks/extractor_flops.py            # JSON: GFLOPs per window, windows per video second
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

DEFAULT = "i3d_rgb,i3d_flow,i3d,vggish,vgg19,onepeace_image,onepeace_audio,onepeace_video_k400"


def window_input(ext) -> torch.Tensor:
    """One window (batch of one) as the pipeline feeds it, on the meta device."""
    if ext.modality == "audio":
        return torch.zeros(1, ext.plan.window_units + ext.context_samples, device="meta")
    spec = ext.decode_spec
    if spec.size_hw:
        h, w = spec.size_hw
    elif spec.center_crop:
        h = w = spec.center_crop
    elif spec.short_side:
        h, w = spec.short_side, round(spec.short_side * 4 / 3)
    else:  # the extractor resizes on the device (onepeace_image: 256 x 256)
        h = w = 256
    return torch.zeros(1, ext.plan.window_units + ext.context_frames, h, w, 3, dtype=torch.uint8, device="meta")


def count(name: str, preset: str) -> dict:
    from avel.extractors import get

    ext = get(name).build(device="meta", preset=preset).to("meta")
    x = window_input(ext)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        ext.extract(x)
    parts = {
        k: sum(v.values()) for k, v in counter.get_flop_counts().items() if k != "Global" and k.count(".") <= 1
    }  # modules and their children
    return {
        "gflops_per_window": round(counter.get_total_flops() / 1e9, 2),
        "window_input": list(x.shape),
        "plan": ext.plan.describe(),
        "windows_per_video_s": round(1 / ext.plan.step_seconds, 3),
        "largest_parts_gflops": {k: round(v / 1e9, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractors", default=DEFAULT)
    ap.add_argument("--preset", default="full", choices=["full", "tiny"])
    args = ap.parse_args()
    out = {name: count(name, args.preset) for name in args.extractors.split(",")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
