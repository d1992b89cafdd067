"""I3D flow stream: RAFT on every window's frame pairs vs each distinct pair once (``flow_pair_dedupe``).

One batch of ``--batch`` overlapping windows of one synthetic video (moving noise texture, so
RAFT sees real motion), extracted by ``i3d_flow`` with random weights (``--preset full`` is
torchvision raft_large + the full I3D flow network), with ``flow_pair_dedupe`` off and on, in
one run, best of ``--repeats``. Prints seconds per batch, windows/s, RAFT pairs computed, the
speed-up, and how far the two settings' flows and rows are apart.

    python benchmarks/flow_pair_dedupe.py --preset full --batch 4
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def moving_texture(frames: int, height: int, width: int, *, seed: int = 0) -> torch.Tensor:
    """``T x H x W x 3`` uint8: a random texture shifted 2 px right and 1 px down per frame."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (height + frames, width + 2 * frames, 3), dtype=torch.uint8, generator=g)
    return torch.stack(
        [base[frames - t : frames - t + height, 2 * (frames - t) : 2 * (frames - t) + width] for t in range(frames)]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="full", choices=["full", "tiny"])
    ap.add_argument("--batch", type=int, default=4, help="windows per batch")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=341)
    ap.add_argument("--raft-pair-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()

    import avel.extractors as E
    from avel.extractors.raft_flow import distinct_pairs

    torch.set_num_threads(args.threads)
    exts = {
        dedupe: E.get("i3d_flow").random_init(
            preset=args.preset, seed=0, flow_pair_dedupe=dedupe, raft_pair_batch=args.raft_pair_batch
        )
        for dedupe in (False, True)
    }
    cfg = exts[True].config
    frames = moving_texture(cfg.stride_frames * (args.batch - 1) + cfg.window_frames + 1, args.height, args.width)
    win = exts[True].windows(frames).data[: args.batch]  # B x (window + 1) x H x W x 3
    report: dict = {
        "preset": args.preset,
        "windows": int(win.shape[0]),
        "frames": list(win.shape[1:4]),
        "window_frames": cfg.window_frames,
        "stride_frames": cfg.stride_frames,
        "num_flow_updates": cfg.num_flow_updates,
        "raft_pair_batch": args.raft_pair_batch,
        "threads": args.threads,
    }
    rows, flows = {}, {}
    floats = win.permute(0, 1, 4, 2, 3).float()  # B x (window + 1) x 3 x H x W
    for dedupe, ext in exts.items():
        with torch.no_grad():  # warm-up (thread pools, allocator): one small RAFT pair, one I3D window
            small = floats[0, :2, :, :128, :128]
            ext.raft.flow(small[:1], small[1:])
            ext.flow(torch.zeros(1, 2, cfg.window_frames, cfg.crop_size, cfg.crop_size))
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            rows[dedupe] = ext.extract(win)
            best = min(best, time.perf_counter() - t0)
        with torch.no_grad():
            flows[dedupe] = ext.window_flows(win, floats)
        pairs = (
            len(distinct_pairs(win, shifts=(cfg.stride_frames, 0))[0]) if dedupe else win.shape[0] * cfg.window_frames
        )
        report["dedupe" if dedupe else "every_pair"] = {
            "seconds": round(best, 3),
            "windows_per_s": round(win.shape[0] / best, 4),
            "raft_pairs": int(pairs),
        }
    report["speedup"] = round(report["every_pair"]["seconds"] / report["dedupe"]["seconds"], 3)
    report["flow_max_abs_diff_px"] = float((flows[True] - flows[False]).abs().max())
    report["flow_std_px"] = float(flows[False].std())
    report["row_max_abs_diff"] = float((rows[True] - rows[False]).abs().max())
    report["row_mean_abs"] = float(rows[False].abs().mean())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
