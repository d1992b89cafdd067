"""``benchmarks/packed_conv_speed.py`` compares the plain and the packed module of each
extractor on the same windows and reports both timings and how far their rows are apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "packed_conv_speed.py"


@pytest.mark.parametrize("name", ["i3d_rgb", "vgg19", "vggish"])
def test_report_of_a_tiny_run(name):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--extractor", name, "--preset", "tiny", "--rounds", "2", "--threads", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["extractor"] == name and report["rounds"] == 2 and report["threads"] == 1
    for side in ("plain", "packed"):
        assert 0 < report[side]["min_s"] <= report[side]["median_s"] <= report[side]["max_s"]
    assert report["mean_abs_row"] > 0  # rows that say something
    assert report["max_abs_row_diff"] <= 1e-4  # float rounding only (the parity tolerance)
