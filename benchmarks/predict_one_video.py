"""`avel predict` latency for one video, split into its stages (a fresh process per run).

    python benchmarks/predict_one_video.py RUN_DIR VIDEO [--random-weights] [--repeats 3]

Runs ``python -m avel.cli.main predict RUN VIDEO --out TMP`` ``--repeats`` times in fresh
processes (wall time as a user sees it, imports included) and, in this process, the stages of
:func:`avel.training.predict.predict`: reading the card and building the extractors, extraction
(local runner), loading the model, prediction + figure. Prints seconds per stage.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("video", type=Path)
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    flags = ["--random-weights"] if args.random_weights else []
    walls = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "avel.cli.main",
                    "predict",
                    str(args.run),
                    str(args.video),
                    "--out",
                    tmp,
                    *flags,
                ],
                check=True,
                capture_output=True,
            )
            walls.append(time.perf_counter() - t0)
    print(
        f"avel predict, one video, fresh process: wall {min(walls):.2f} s (min of {len(walls)}; all "
        + ", ".join(f"{w:.2f}" for w in walls)
        + ")"
    )

    import torch

    from avel.training import predict as P

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        card = P.read_model_card(args.run)
        extractors = P.run_extractors(card, random_weights=args.random_weights, device="cpu")
        t1 = time.perf_counter()
        P.predict(
            args.run, [args.video], Path(tmp) / "a", random_weights=args.random_weights, device="cpu", plots=False
        )
        t2 = time.perf_counter()
        P.load_run_model(args.run, torch.device("cpu"))
        t3 = time.perf_counter()
        P.predict(args.run, [args.video], Path(tmp) / "a", random_weights=args.random_weights, device="cpu")
        t4 = time.perf_counter()
    print(
        f"in-process stages: card + extractors {t1 - t0:.2f} s; predict without figure (extractors again, "
        f"extraction, model, results) {t2 - t1:.2f} s; model load alone {t3 - t2:.2f} s; rerun with the "
        f"features already extracted + figure {t4 - t3:.2f} s  [{len(extractors)} streams]"
    )


if __name__ == "__main__":
    main()
