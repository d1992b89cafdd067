"""``benchmarks/flow_pair_dedupe.py`` runs both settings on the same batch and reports the pairs
each computed and how far their flows are apart (tiny preset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from flow_pair_dedupe import moving_texture  # noqa: E402


def test_moving_texture_moves_two_pixels_right_one_down():
    v = moving_texture(3, 8, 10)
    assert v.shape == (3, 8, 10, 3) and v.dtype == torch.uint8
    assert torch.equal(v[1, 1:, 2:], v[0, :-1, :-2]) and torch.equal(v[2, 1:, 2:], v[1, :-1, :-2])


def test_report_of_a_tiny_run():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "flow_pair_dedupe.py"
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            "--preset",
            "tiny",
            "--batch",
            "8",
            "--height",
            "128",
            "--width",
            "136",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    # 8 windows of 8 pairs every 4 frames: 64 pairs per window, 8 + 7 x 4 distinct
    assert report["every_pair"]["raft_pairs"] == 64 and report["dedupe"]["raft_pairs"] == 36
    assert report["flow_std_px"] > 0.3 and report["flow_max_abs_diff_px"] < 1e-4
    assert report["speedup"] > 0
