"""Start-up of a one-window ``avel extract``, two source trees side by side.

Runs ``python -m avel.cli.main extract --config JOB --json`` as a whole command (fresh process,
start to exit) alternately from each tree (``PYTHONPATH=TREE``, e.g. a ``git worktree`` of the
commit before a change and one of the change), ``--repeats`` times each, and prints per tree the
start-up overhead: the command's seconds minus the model's busy seconds for its window
(``busy_s.extract`` of the report), median and range. Alternating the trees makes a changing
machine load fall on both alike.

    python benchmarks/real_video_speed.py --vf-dir DIR --configs one-window --repeats 1 --work W
    python benchmarks/startup_ab.py --job W/one_window.yaml --trees OLD_TREE NEW_TREE --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(tree: Path, job: Path, out: Path) -> tuple[float, float]:
    """(command seconds, overhead seconds) of one whole ``avel extract`` from ``tree``."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "avel.cli.main", "extract", "--config", str(job), "--out", str(out), "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=out.parent)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{tree}: avel extract failed ({done.returncode}):\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, seconds - float(report["busy_s"]["extract"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", type=Path, required=True, help="extraction job YAML (one short video)")
    ap.add_argument("--trees", type=Path, nargs="+", required=True, help="source trees to compare")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    runs: dict[Path, list[tuple[float, float]]] = {t: [] for t in args.trees}
    load_before = float(Path("/proc/loadavg").read_text().split()[0])
    with tempfile.TemporaryDirectory(prefix="startup_ab_") as tmp:
        for _ in range(args.repeats):
            for tree in args.trees:
                runs[tree].append(run_once(tree.resolve(), args.job.resolve(), Path(tmp) / "store"))
    load_after = float(Path("/proc/loadavg").read_text().split()[0])
    for tree, rs in runs.items():
        over = [o for _, o in rs]
        print(
            json.dumps(
                {
                    "tree": str(tree),
                    "overhead_s_median": round(statistics.median(over), 2),
                    "overhead_s_min_max": [round(min(over), 2), round(max(over), 2)],
                    "command_s": [round(s, 2) for s, _ in rs],
                }
            )
        )
    print(json.dumps({"load_average_before_after": [load_before, load_after], "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
