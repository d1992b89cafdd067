"""Run v-iashin/video_features' own I3D RGB extraction on a list of videos and time it.

Used by ``extract_throughput.py --video-features-repo DIR`` as baseline (a): the reference tool
itself, not a re-creation. Runs in its own process, with the video_features checkout and its
dependencies importable (``PYTHONPATH``: DIR plus a directory holding ``cv2`` and ``omegaconf``)
and an ``ffmpeg`` executable on ``PATH`` (video_features re-encodes through the CLI), from DIR as
the working directory (it loads ``./models/i3d/checkpoints/i3d_rgb.pt``)::

    PYTHONPATH=VF:DEPS PATH=FFMPEG_DIR:$PATH python video_features_reference.py --repo VF \\
        --make-random-weights --out-dir FEATS VIDEO [VIDEO ...]

What is timed is what video_features' ``main.py`` loops over: ``extractor._extract(path)`` per
video (re-encode to 25 fps, OpenCV frame loop, PIL resize, 24-frame stacks every 8 frames, one
stack per forward, ``np.save``). Building the extractor (model load) is not timed.

``--make-random-weights`` writes a random I3D RGB checkpoint in video_features' (hassony2)
layout at the path it loads from, with BatchNorm statistics measured on random windows, so that our extractor can
load the same file (the hassony2 keys are converted, ``bn_eps`` 1e-5) and every stage of the
benchmark runs the same weights. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="*", type=Path)
    ap.add_argument("--repo", type=Path, required=True, help="a video_features checkout")
    ap.add_argument("--out-dir", type=Path, required=True, help="where video_features saves its .npy files")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--make-random-weights", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--weights-only",
        action="store_true",
        help="with --make-random-weights: write the checkpoint, print its path, extract nothing",
    )
    args = ap.parse_args()
    if not args.videos and not args.weights_only:
        ap.error("name at least one video (or --weights-only)")

    os.chdir(args.repo)
    sys.path.insert(0, str(args.repo))
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    torch.set_num_threads(args.threads)
    ckpt = args.repo / "models" / "i3d" / "checkpoints" / "i3d_rgb.pt"
    if args.make_random_weights:
        from models.i3d.i3d_src.i3d_net import I3D

        torch.manual_seed(args.seed)
        net = I3D(num_classes=400, modality="rgb")
        # BatchNorm statistics of two random windows (train mode, cumulative average), so every
        # layer is normalised and the features depend on the input (with the default (0, 1)
        # statistics random weights give rows that barely differ between windows)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.momentum = None
        net.train()
        with torch.no_grad():
            net(torch.rand(2, 3, 24, 224, 224) * 2 - 1)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), ckpt)
    if args.weights_only:
        print(json.dumps({"checkpoint": str(ckpt)}))
        return
    from models.i3d.extract_i3d import ExtractI3D

    cfg = OmegaConf.create(
        {
            "feature_type": "i3d",
            "streams": "rgb",
            "flow_type": "raft",
            "stack_size": 24,
            "step_size": 8,
            "extraction_fps": 25,
            "device": "cpu",
            "on_extraction": "save_numpy",
            "output_path": str(args.out_dir),
            "tmp_path": str(args.out_dir / "tmp"),
            "keep_tmp_files": False,
            "show_pred": False,
        }
    )
    extractor = ExtractI3D(cfg)
    per_video = {}
    t_all = time.perf_counter()
    for path in args.videos:
        t0 = time.perf_counter()
        extractor._extract(str(path))
        per_video[path.stem] = time.perf_counter() - t0
    seconds = time.perf_counter() - t_all
    rows = {
        p.stem: int(np.load(args.out_dir / f"{p.stem}_rgb.npy").shape[0])
        for p in args.videos
        if (args.out_dir / f"{p.stem}_rgb.npy").exists()
    }
    print(
        json.dumps(
            {
                "seconds": seconds,
                "windows": sum(rows.values()),
                "rows": rows,
                "per_video_s": per_video,
                "checkpoint": str(ckpt),
                "threads": torch.get_num_threads(),
                "missing": sorted(p.stem for p in args.videos if p.stem not in rows),
            }
        )
    )


if __name__ == "__main__":
    main()
