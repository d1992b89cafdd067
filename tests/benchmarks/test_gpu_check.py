"""benchmarks/gpu_check.sh runs end to end in its small CPU mode (no GPU here): every stage of
the script, the JSON it prints and the estimate are exercised on two short synthetic clips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avel.datasets.synth import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    generate(
        SynthConfig(kind="unav100", videos=2, seed=3, size=64, min_duration_s=2.0, max_duration_s=2.5, num_classes=2),
        tmp_path / "data",
    )
    clips = tmp_path / "clips"
    clips.mkdir()
    for src, name in zip(sorted((tmp_path / "data" / "videos").glob("*.mp4")), ("v_GGSY1Qvo990", "v_ZNVhz7ctTq0")):
        shutil.copyfile(src, clips / f"{name}.mp4")
    out = tmp_path / "gpu_check.json"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "CLIPS_DIR": str(clips),
        "OMP_NUM_THREADS": "1",
        # the CPU dry run starts Ray twice: give it room on a loaded 2-core machine
        "GPU_CHECK_TIMEOUT_S": "1500",
    }
    done = subprocess.run(
        [
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            str(out),
            "--",
            "--device",
            "cpu",
            "--dry",
            "--work",
            str(tmp_path / "work"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["preset"] == "tiny"
    assert set(result["extractors"]) == {"i3d_rgb", "i3d_flow", "vggish"}
    for name, row in result["extractors"].items():
        for precision in ("fp32", "bf16"):  # bf16: autocast on the CPU, the code path the GPU takes
            assert row[precision]["windows"] > 0 and row[precision]["windows_per_s"] > 0, (name, precision)
            assert row[precision]["bound"] in ("decode-bound", "model-bound")
        assert row["decode_windows_per_s_per_core"] > 0
    assert set(result["pipeline"]) == {"local-fp32", "local-bf16", "ray-fp32", "ray-bf16"}
    for key, run in result["pipeline"].items():
        runner, precision = key.split("-")
        assert run["windows"] > 0 and not run["failures"], key
        assert run["settings"]["runner"] == runner and run["settings"]["precision"] == precision, key
    est = result["unav100_estimate"]
    assert est["windows_per_stream"] == 1_417_500 and est["videos"] == 10_790
    assert est["estimate_hours"] == max(est["model_hours"], est["decode_hours_with_decode_workers"]) > 0
