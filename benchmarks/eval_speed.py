"""`avel eval` vs UnAV's own evaluator (libs/utils/metrics.py), whole commands, same inputs.

1. Writes a predictions file for the test split of a real UnAV-100 annotation file: per video,
   ~``--per-video`` noisy detections (jittered copies of every ground-truth segment, mostly with
   the right label and high scores, then background detections with random segments, labels and
   low scores), seeded. The file is in UnAV's own format (``{"database": {vid: [{"segment",
   "label_id", "scores"}]}}``), which both tools read.
2. Checks out ttgeng233/UnAV (``--unav-source``: a git URL or a local clone) at ``UNAV_COMMIT``
   into a temporary folder outside this repository and runs, as a fresh Python process, a driver
   that imports its ``libs/utils/metrics.py`` (the module file alone: ``libs/utils/__init__``
   imports torch and a compiled NMS extension that the metric does not use) and calls
   ``ANETdetection(annotations, "test", tiou_thresholds=np.linspace(0.1, 0.9, 9)).evaluate(file)``
   exactly as UnAV's eval.py does (its defaults, ``num_workers=8`` joblib workers). One shim:
   ``np.float`` (removed in numpy 1.24, used by the reference) is set to ``float`` when missing,
   by a ``sitecustomize.py`` on the reference's PYTHONPATH so that its joblib workers get it too.
3. Runs ``python -m avel.cli.main eval --predictions FILE --annotations FILE --split test --json``
   as a fresh process.

Both are timed as whole commands (process start to exit), ``--repeats`` times, alternating the
order. Prints every time, the medians, the ratio reference / avel (median and range), and the
max abs difference of the mAPs (per threshold and average).

    python benchmarks/eval_speed.py --annotations unav100_annotations.json \
        [--unav-source https://github.com/ttgeng233/UnAV] [--repeats 3] [--per-video 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UNAV_COMMIT = "1609deba4fbaf25222c6ee6c7d43b0d0ddfab20d"  # ttgeng233/UnAV master, 2026-01-04
REPO_ROOT = Path(__file__).resolve().parents[1]

_SHIM = r"""
import numpy as np
if not hasattr(np, "float"):
    np.float = float  # the reference uses np.float, removed in numpy 1.24
"""

_DRIVER = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import metrics
det = metrics.ANETdetection(sys.argv[2], "test", tiou_thresholds=np.linspace(0.1, 0.9, 9))
mAP, average_mAP = det.evaluate(sys.argv[3], verbose=False)
print(json.dumps({"mAP": [float(x) for x in mAP], "average_mAP": float(average_mAP)}))
"""


def make_predictions(annotations: dict, *, split: str, per_video: int, seed: int) -> dict:
    """Noisy detections for every video of ``split`` in UnAV's results format (see the module docstring)."""
    rng = np.random.default_rng(seed)
    num_classes = 1 + max(a["label_id"] for v in annotations["database"].values() for a in v["annotations"])
    out = {}
    for vid, v in annotations["database"].items():
        if v["subset"] != split:
            continue
        dur_s = float(v["duration"])
        rows = []
        for a in v["annotations"]:
            start_s, end_s = a["segment"]
            length_s = max(end_s - start_s, 0.1)
            for _ in range(rng.integers(2, 7)):  # 2-6 detections per event, jittered in centre and length
                centre = (start_s + end_s) / 2 + rng.normal(0.0, 0.15 * length_s)
                half = length_s * float(np.exp(rng.normal(0.0, 0.25))) / 2
                label = a["label_id"] if rng.random() < 0.85 else int(rng.integers(num_classes))
                rows.append((centre - half, centre + half, label, float(rng.beta(5, 2))))
        while len(rows) < per_video:  # background: random segments, labels and low scores
            start_s = rng.uniform(0, dur_s)
            rows.append(
                (
                    start_s,
                    start_s + rng.uniform(0.5, 0.5 * dur_s + 0.5),
                    int(rng.integers(num_classes)),
                    float(rng.beta(1.5, 6)),
                )
            )
        out[vid] = [
            {
                "segment": [round(float(max(0.0, s)), 3), round(float(min(dur_s, max(e, s + 0.05))), 3)],
                "label_id": int(lab),
                "scores": sc,
            }
            for s, e, lab, sc in rows
        ]
    return {"version": "eval_speed", "database": out}


def checkout_unav(source: str, where: Path) -> Path:
    """Clone ``source`` into ``where`` and check out ``UNAV_COMMIT``'s ``libs/utils/metrics.py``."""
    if not (where / ".git").exists():
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", source, str(where)], check=True)
    subprocess.run(
        ["git", "-C", str(where), "checkout", "--quiet", UNAV_COMMIT, "--", "libs/utils/metrics.py"], check=True
    )
    return where / "libs" / "utils"


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    """Run ``cmd``; return (wall seconds, stdout). Raises on a non-zero exit."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dt, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", required=True, type=Path, help="UnAV-100 annotation JSON (with a test split)")
    ap.add_argument("--unav-source", default="https://github.com/ttgeng233/UnAV", help="git URL or local clone")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--per-video", type=int, default=100, help="detections per video (at least)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="avel-eval-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    annotations = json.loads(args.annotations.read_text(encoding="utf-8"))
    preds = make_predictions(annotations, split="test", per_video=args.per_video, seed=args.seed)
    pred_file = work / "predictions_test.json"
    pred_file.write_text(json.dumps(preds), encoding="utf-8")
    n_det = sum(len(v) for v in preds["database"].values())
    print(f"predictions: {len(preds['database'])} test videos, {n_det} detections -> {pred_file}")

    metrics_dir = checkout_unav(args.unav_source, work / "UnAV")
    driver = work / "unav_eval.py"
    driver.write_text(_DRIVER, encoding="utf-8")
    shim_dir = work / "shim"
    shim_dir.mkdir(exist_ok=True)
    (shim_dir / "sitecustomize.py").write_text(_SHIM, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    ref_env = dict(os.environ, PYTHONPATH=str(shim_dir))
    ref_cmd = [sys.executable, str(driver), str(metrics_dir), str(args.annotations), str(pred_file)]
    avel_cmd = [
        sys.executable,
        "-m",
        "avel.cli.main",
        "eval",
        "--predictions",
        str(pred_file),
        "--annotations",
        str(args.annotations),
        "--split",
        "test",
        "--json",
    ]
    print(f"reference: UnAV {UNAV_COMMIT} libs/utils/metrics.py, ANETdetection defaults (num_workers=8)")

    ref_s, avel_s = [], []
    ref_out = avel_out = None
    for r in range(args.repeats):
        order = [("ref", ref_cmd), ("avel", avel_cmd)] if r % 2 == 0 else [("avel", avel_cmd), ("ref", ref_cmd)]
        for name, cmd in order:
            dt, out = timed(cmd, ref_env if name == "ref" else env)
            if name == "ref":
                ref_s.append(dt)
                ref_out = json.loads(out.strip().splitlines()[-1])
            else:
                avel_s.append(dt)
                avel_out = json.loads(out)
            print(f"  repeat {r + 1} {name:>4}: {dt:7.2f} s")

    ref_map = np.array(ref_out["mAP"] + [ref_out["average_mAP"]])
    avel_map = np.array([avel_out[f"mAP@{t:.2f}"] for t in np.linspace(0.1, 0.9, 9)] + [avel_out["average_mAP"]])
    ratios = [a / b for a, b in zip(ref_s, avel_s)]
    print(f"UnAV metrics.py: median {statistics.median(ref_s):.2f} s (min {min(ref_s):.2f}, max {max(ref_s):.2f})")
    print(f"avel eval      : median {statistics.median(avel_s):.2f} s (min {min(avel_s):.2f}, max {max(avel_s):.2f})")
    print(f"ratio UnAV / avel: median {statistics.median(ratios):.1f}x (range {min(ratios):.1f}-{max(ratios):.1f}x)")
    print(
        "mAP % (UnAV, avel) at tIoU 0.1..0.9, average: "
        + ", ".join(f"{100 * a:.2f}/{100 * b:.2f}" for a, b in zip(ref_map, avel_map))
    )
    print(f"max abs difference of the mAPs: {np.abs(ref_map - avel_map).max():.3g}")


if __name__ == "__main__":
    main()
