"""``benchmarks/packed_conv_speed.py`` compares the plain and the packed module of each
extractor on the same windows and reports both timings and how far their rows are apart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import packed_conv_speed  # noqa: E402


@pytest.mark.parametrize("name", ["i3d_rgb", "vgg19", "vggish"])
def test_report_of_a_tiny_run(name, monkeypatch, capsys):
    threads = torch.get_num_threads()
    argv = ["packed_conv_speed.py", "--extractor", name, "--preset", "tiny", "--rounds", "2", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        packed_conv_speed.main()
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)
    assert report["extractor"] == name and report["rounds"] == 2 and report["threads"] == 1
    for side in ("plain", "packed"):
        assert 0 < report[side]["min_s"] <= report[side]["median_s"] <= report[side]["max_s"]
    assert report["mean_abs_row"] > 0  # rows that say something
    assert report["max_abs_row_diff"] <= 1e-4  # float rounding only (the parity tolerance)
