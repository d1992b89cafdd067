"""Whole commands on real video: video_features' own ``main.py`` against ``avel extract``.

The two sample videos of v-iashin/video_features (real H.264 + AAC, 32 s, 95 I3D windows),
I3D RGB with the UnAV-100 settings (25 fps, 24-frame windows every 8 frames, short side 256,
centre crop 224), random weights written once in video_features' layout and loaded by both
tools (ours converts the keys; ``bn_eps`` 1e-5 as that port uses). Every run is a whole
command in a fresh process, timed from start to exit (imports, model load, Ray start-up,
decode, writes); windows are counted from what it wrote. The configurations run interleaved,
``--repeats`` rounds, so a changing machine load affects them alike; each round's ratio is
taken to that round's video_features run.

    benchmarks/setup_video_features.sh /tmp/vf [SOURCE]        # once: DIR/vf, DIR/deps, DIR/bin
    python benchmarks/real_video_speed.py --vf-dir /tmp/vf --repeats 3

Configurations (``--configs``, comma-separated): ``vf`` (video_features main.py, CPU),
``avel`` (``avel extract`` with defaults: auto runner), ``avel-ray`` (defaults, ``--runner
ray``), ``avel-b32`` (``--runner local --batch-size 32``, the old default), ``avel-tuned``
(``--runner local --batch-size 2``), ``avel-ray-tuned`` (``--runner ray --actors-per-extractor 2
--threads-per-actor 1 --batch-size 2``), ``one-window`` (``avel extract`` with defaults on the
first second of one sample, re-encoded by video_features' ffmpeg: one I3D window; its start-up
overhead is the command's seconds minus the model's busy seconds), ``one-window-ray`` (the same
with ``--runner ray``: the Ray runner's fixed cost; the report's ``startup_s`` (Ray start and
actor submission) and ``load_s`` (actors built, overlapped with the first decode) are printed
too), ``forward`` and
``forward-fused`` (the bare I3D RGB forward, in a fresh process, on the windows of the same
clips decoded beforehand exactly as the pipeline decodes them (``--forward-windows`` of them, 0:
all), with the batch size the defaults choose for a CPU and torch's default threads; decoding
and model load excluded: the ceiling of the pipeline; unfused, and fused as the pipeline runs
it). Prints one JSON line per run, then a summary per configuration: windows/s (median,
min-max), the ratio to video_features (median, min-max), for ``avel`` / ``avel-ray`` the ratio
to the bare fused forward of the same round (whole command, and the run alone: the report's
``wall_s``, without imports and the driver's set-up), and the load average seen during the
runs.

A full round takes about 8 minutes on the 2-core machine. ``--runs-out FILE`` appends each
run's JSON line to FILE, so several invocations (e.g. one round each, under one lock each) can
be summarised together with ``--summarize FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = ("v_GGSY1Qvo990", "v_ZNVhz7ctTq0")
MIRROR = "/work/.mirror/v-iashin+video_features/repo"
AVEL_FLAGS = {
    "avel": [],
    "avel-ray": ["--runner", "ray"],
    "avel-b32": ["--runner", "local", "--batch-size", "32"],
    "avel-tuned": ["--runner", "local", "--batch-size", "2"],
    "avel-ray-tuned": [
        "--runner",
        "ray",
        "--actors-per-extractor",
        "2",
        "--threads-per-actor",
        "1",
        "--batch-size",
        "2",
    ],
}


def fetch_samples(videos: Path, source: str) -> list[Path]:
    """The sample videos in ``videos``: copied from a directory holding them, or read from a git
    repository of video_features (``git show HEAD:sample/NAME.mp4``)."""
    videos.mkdir(parents=True, exist_ok=True)
    out = []
    for name in SAMPLES:
        dst = videos / f"{name}.mp4"
        if not dst.exists():
            src = Path(source) / f"{name}.mp4"
            if src.is_file():
                shutil.copyfile(src, dst)
            else:
                blob = subprocess.run(
                    ["git", "-C", source, "show", f"HEAD:sample/{name}.mp4"], capture_output=True, check=True
                ).stdout
                dst.write_bytes(blob)
        out.append(dst)
    return out


def vf_env(vf_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(vf_dir / "vf"), str(vf_dir / "deps")])
    env["PATH"] = os.pathsep.join([str(vf_dir / "bin"), env.get("PATH", "")])
    return env


def make_weights(vf_dir: Path) -> Path:
    """Random I3D RGB weights in video_features' layout, where its main.py loads them."""
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "video_features_reference.py"),
        "--repo",
        str(vf_dir / "vf"),
        "--out-dir",
        str(vf_dir / "unused"),
        "--make-random-weights",
        "--weights-only",
    ]
    done = subprocess.run(cmd, env=vf_env(vf_dir), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"writing video_features' random checkpoint failed:\n{done.stderr[-3000:]}")
    return Path(json.loads(done.stdout.strip().splitlines()[-1])["checkpoint"])


def run_vf(vf_dir: Path, videos: list[Path], out: Path) -> tuple[float, int]:
    """video_features' main.py on the videos; (seconds, windows written)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "main.py",
        "feature_type=i3d",
        "streams=rgb",
        "device=cpu",
        "stack_size=24",
        "step_size=8",
        "extraction_fps=25",
        "on_extraction=save_numpy",
        f"output_path={out}",
        f"tmp_path={out / 'tmp'}",
        f"video_paths=[{','.join(str(v) for v in videos)}]",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=vf_dir / "vf", env=vf_env(vf_dir), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"video_features failed ({done.returncode}):\n{done.stderr[-3000:]}")
    import numpy as np

    files = sorted(out.rglob("*_rgb.npy"))
    if len(files) != len(videos):
        raise SystemExit(
            f"video_features wrote {len(files)} feature files for {len(videos)} videos:\n{done.stdout[-2000:]}"
        )
    return seconds, sum(int(np.load(f).shape[0]) for f in files)


def run_avel(job: Path, out: Path, flags: list[str]) -> tuple[float, int, dict]:
    """``avel extract --config job --json`` plus ``flags``; (seconds, windows, report)."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "avel.cli.main", "extract", "--config", str(job), "--out", str(out), "--json", *flags]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"avel extract {' '.join(flags)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, int(report["windows"]), report


def run_forward(ckpt: Path, fused: bool, windows: int, videos: Path) -> tuple[float, int, dict]:
    """The bare forward in a fresh process (see :func:`forward_only`); (seconds, windows, details)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [
        sys.executable,
        __file__,
        "--forward-only",
        str(ckpt),
        "--forward-windows",
        str(windows),
        *(["--fused"] if fused else []),
        "--vf-dir",
        "unused",
        "--work",
        str(videos),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the bare forward failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out["seconds"], out["windows"], {"batch_size": out["batch_size"], "threads": out["threads"]}


def forward_only(ckpt: Path, fused: bool, windows: int, videos: Path) -> None:
    """Time ``extract`` of I3D RGB (UnAV-100 settings, ``ckpt``) on the windows of ``videos``
    (decoded first, as the pipeline decodes them; the first ``windows`` of them, 0: all) in
    batches of the size the defaults choose for a CPU, with torch's default threads."""
    import numpy as np
    import torch

    from avel.pipeline.engine import (
        StreamInfo,
        build_stream_extractors,
        decode_chunk,
        decode_request,
        extract_batch,
        payload_windows,
    )
    from avel.pipeline.tuning import choose_batch_sizes

    (se,) = build_stream_extractors(
        ["i3d_rgb"], weights={"i3d_rgb": ckpt}, overrides={"i3d_rgb": {"bn_eps": 1e-5}}, fuse=fused
    )
    batch = choose_batch_sizes(None, [se], "cpu")[0][se.stream]
    request, info = decode_request([se]), StreamInfo.of(se)
    parts = []
    for video in sorted(videos.glob("*.mp4")):
        k, totals, n_chunks = 0, None, 1
        while k < n_chunks:
            out, payload = decode_chunk(str(video), request, [info], k, 30.0, totals)
            totals, n_chunks = out["totals"], out["n_chunks"]
            if out["rows"][info.name]:
                parts.append(payload_windows(payload, 0, out["rows"][info.name], info))
            k += 1
    x = torch.from_numpy(np.concatenate(parts))
    x = x[:windows] if windows else x
    cpu = torch.device("cpu")
    extract_batch(se.extractor, x[:batch], batch_size=batch, device=cpu)  # first-call costs
    t0 = time.perf_counter()
    for a in range(0, x.shape[0], batch):
        extract_batch(se.extractor, x[a : a + batch], batch_size=batch, device=cpu)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {"seconds": seconds, "windows": int(x.shape[0]), "batch_size": batch, "threads": torch.get_num_threads()}
        )
    )


def summary(runs: list[dict]) -> dict[str, dict]:
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["config"]] = r
    out: dict[str, dict] = {}
    for config in dict.fromkeys(r["config"] for r in runs):
        rates = [r["windows_per_s"] for r in runs if r["config"] == config]
        ratios = [
            rd[config]["windows_per_s"] / rd["vf"]["windows_per_s"]
            for rd in by_round.values()
            if config in rd and "vf" in rd
        ]
        loads = [r["load_before"] for r in runs if r["config"] == config]
        if config.startswith("one-window"):
            over = [r["overhead_s"] for r in runs if r["config"] == config]
            out[config] = {
                "seconds": [r["seconds"] for r in runs if r["config"] == config],
                "overhead_s_median": round(statistics.median(over), 2),
                "overhead_s_min_max": [min(over), max(over)],
                "load_average_min_max": [min(loads), max(loads)],
            }
            continue
        vs_forward = [
            rd[config]["windows_per_s"] / rd["forward-fused"]["windows_per_s"]
            for rd in by_round.values()
            if config in rd and "forward-fused" in rd and "run_wall_s" in rd[config]
        ]
        run_vs_forward = [
            rd[config]["windows"] / rd[config]["run_wall_s"] / rd["forward-fused"]["windows_per_s"]
            for rd in by_round.values()
            if config in rd and "forward-fused" in rd and "run_wall_s" in rd[config]
        ]
        forward = {}
        if vs_forward:
            forward = {
                "vs_bare_forward_median": round(statistics.median(vs_forward), 3),
                "vs_bare_forward_min_max": [round(min(vs_forward), 3), round(max(vs_forward), 3)],
                "run_vs_bare_forward_median": round(statistics.median(run_vs_forward), 3),
                "run_vs_bare_forward_min_max": [round(min(run_vs_forward), 3), round(max(run_vs_forward), 3)],
            }
        out[config] = {
            **forward,
            "windows_per_s_median": round(statistics.median(rates), 3),
            "windows_per_s_min_max": [round(min(rates), 3), round(max(rates), 3)],
            "vs_video_features_median": round(statistics.median(ratios), 3) if ratios else None,
            "vs_video_features_min_max": [round(min(ratios), 3), round(max(ratios), 3)] if ratios else None,
            "load_average_min_max": [min(loads), max(loads)],
            "runs": len(rates),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vf-dir", type=Path, help="DIR of benchmarks/setup_video_features.sh")
    ap.add_argument("--source", default=MIRROR, help="video_features git repository, or a directory of the samples")
    ap.add_argument("--work", type=Path, default=Path("/tmp/real_video_speed"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default="vf,avel,avel-ray,avel-tuned,avel-ray-tuned")
    ap.add_argument("--forward-windows", type=int, default=0, help="windows of the bare forward (0: all)")
    ap.add_argument("--runs-out", type=Path, help="append each run's JSON line to this file")
    ap.add_argument("--summarize", type=Path, help="only print the summary of the runs in this file")
    ap.add_argument("--forward-only", type=Path, help=argparse.SUPPRESS)  # internal: run_forward's child
    ap.add_argument("--fused", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.forward_only:
        forward_only(args.forward_only, args.fused, args.forward_windows, args.work)
        return
    if args.summarize:
        runs = [json.loads(line) for line in args.summarize.read_text().splitlines() if line.strip()]
        print(json.dumps({"summary": summary(runs), "runs": len(runs)}, indent=1))
        return
    if args.vf_dir is None:
        ap.error("--vf-dir is required")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    known = ["vf", "one-window", "one-window-ray", "forward", "forward-fused", *AVEL_FLAGS]
    unknown = sorted(set(configs) - set(known))
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; expected some of {known}")
    vf_dir = args.vf_dir.resolve()
    work = args.work.resolve()
    videos = fetch_samples(work / "videos", args.source)
    ckpt = make_weights(vf_dir)
    job = work / "job.yaml"
    job.write_text(
        f"dataset: folder\nvideos: {work / 'videos'}\nextractors: [i3d_rgb]\n"
        f"weights: {{i3d_rgb: {ckpt}}}\nextractor_options: {{i3d_rgb: {{bn_eps: 1.0e-5}}}}\n"
    )
    if {"one-window", "one-window-ray"} & set(configs):  # the first second of a sample: one window
        one = work / "one_window"
        one.mkdir(exist_ok=True)
        subprocess.run(
            [
                str(vf_dir / "bin" / "ffmpeg"),
                "-y",
                "-loglevel",
                "error",
                "-i",
                str(videos[0]),
                "-t",
                "1",
                str(one / "first_second.mp4"),
            ],
            check=True,
        )
        one_job = work / "one_window.yaml"
        one_job.write_text(job.read_text().replace(f"videos: {work / 'videos'}", f"videos: {one}"))
    runs = []
    stamp = time.strftime("%H%M%S")  # rounds of several invocations stay apart in --summarize
    for rnd in range(args.repeats):
        for config in configs:
            load = float(Path("/proc/loadavg").read_text().split()[0])
            if config == "vf":
                seconds, windows = run_vf(vf_dir, videos, work / "vf_out")
                extra = {}
            elif config in ("forward", "forward-fused"):
                seconds, windows, extra = run_forward(
                    ckpt, config == "forward-fused", args.forward_windows, work / "videos"
                )
            elif config in ("one-window", "one-window-ray"):
                flags = ["--runner", "ray"] if config == "one-window-ray" else []
                seconds, windows, report = run_avel(one_job, work / f"{config.replace('-', '_')}_out", flags)
                busy = report["busy_s"]["extract"]
                extra = {
                    "extract_busy_s": busy,
                    "overhead_s": round(seconds - busy, 2),
                    "runner": report["settings"].get("runner"),
                    "startup_s": report.get("startup_s"),
                    "load_s": report.get("load_s"),
                    "run_wall_s": report["wall_s"],
                }
            else:
                seconds, windows, report = run_avel(job, work / f"{config}_out", AVEL_FLAGS[config])
                extra = {
                    "runner": report["settings"].get("runner"),
                    "batch_size": report["settings"].get("batch_size"),
                    "startup_s": report.get("startup_s"),
                    "load_s": report.get("load_s"),
                    "run_wall_s": report["wall_s"],
                    "windows_computed": report["work"]["windows_computed"],
                }
            rec = {
                "round": f"{stamp}.{rnd}",
                "config": config,
                "seconds": round(seconds, 2),
                "windows": windows,
                "windows_per_s": round(windows / seconds, 3),
                "load_before": load,
                **extra,
            }
            runs.append(rec)
            print(json.dumps(rec), flush=True)
            if args.runs_out:
                with args.runs_out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
    print(json.dumps({"summary": summary(runs), "cpus": os.cpu_count(), "videos": [v.name for v in videos]}, indent=1))


if __name__ == "__main__":
    main()
