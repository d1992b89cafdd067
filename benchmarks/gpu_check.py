"""One short GPU run: model and decode rates on real clips, GPU utilisation, the UnAV-100 estimate.

Run through ``benchmarks/gpu_check.sh`` (it fetches the clips and bounds the time). For each
extractor (I3D RGB, I3D flow = RAFT + I3D flow stream, VGGish; full size, random weights) and
each precision (fp32, bf16 autocast; ``--precisions``):

* model: pre-decoded windows of the clips in full batches on the device, repeated until
  ``--model-s`` seconds have passed (after one warm-up batch), windows/s;
* decode: the decode stage alone (:func:`avel.pipeline.engine.decode_chunk`: decode, resize,
  crop) in one process, windows/s per CPU core, and for all ``--decode-workers`` cores;
* bound: ``decode-bound`` when the decode rate of all the cores is below the model rate, else
  ``model-bound``;
* GPU utilisation while the model ran: ``nvidia-smi`` sampled every 200 ms (mean and median
  of ``utilization.gpu``, peak memory);
* pipeline (``--pipeline``): ``avel extract`` of all the extractors in one command on the clips,
  end to end, windows/s, for each runner of ``--runners`` (default: ``local``, what ``auto``
  picks for a small job on one GPU, and ``ray``) and each precision (``--precisions``; ``--precision``, the
  option of both runners; defaults for the GPU otherwise: batch 32, one actor).

The estimate for UnAV-100 (10,790 videos, ~126 h = 453,600 video s, 3.125 windows per video
second and stream: 1,417,500 windows per stream) on one GPU of this kind: the models run one
after another on it (sum of windows / model rate per stream), decoding runs on the cores beside
it; the run takes the larger of the two. Printed as JSON.

``--device cpu --dry`` is a small mode for tests (tiny presets, a few windows, no nvidia-smi).
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
import threading
import time
from pathlib import Path

UNAV100_VIDEO_S = 453_600
UNAV100_VIDEOS = 10_790
WINDOWS_PER_VIDEO_S = 3.125
EXTRACTORS = ("i3d_rgb", "i3d_flow", "vggish")


class GpuSampler(threading.Thread):
    """``nvidia-smi`` utilisation and memory every ``period_ms``; :meth:`stats` over a time span."""

    def __init__(self, period_ms: int = 200) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []  # (monotonic s, util %, memory MiB)
        self.available = shutil.which("nvidia-smi") is not None
        self.proc = None
        self.period_ms = period_ms

    def run(self) -> None:
        if not self.available:
            return
        self.proc = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                f"-lms={self.period_ms}",
                "-i",
                "0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in self.proc.stdout:
            try:
                util, mem = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((time.monotonic(), util, mem))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def stats(self, t0: float, t1: float) -> dict:
        s = [(u, m) for t, u, m in self.samples if t0 <= t <= t1]
        if not s:
            return {"gpu_util_mean": None, "gpu_util_median": None, "memory_mib_peak": None, "samples": 0}
        utils = [u for u, _ in s]
        return {
            "gpu_util_mean": round(statistics.fmean(utils), 1),
            "gpu_util_median": statistics.median(utils),
            "memory_mib_peak": max(m for _, m in s),
            "samples": len(s),
        }


def clip_windows(ext, request: dict, clips: list[Path], limit: int | None, chunk_s: float = 30.0):
    """Windows of the clips for one extractor (CPU tensors; all of them, or the first chunks
    holding ``limit``), the decode seconds and the number of windows decoded."""
    import numpy as np
    import torch

    from avel.pipeline.engine import StreamExtractor, StreamInfo, decode_chunk, payload_windows

    info = StreamInfo.of(StreamExtractor(ext.name, ext))
    parts, decode_s = [], 0.0
    for clip in clips:
        k, totals, n_chunks = 0, None, 1
        while k < n_chunks:
            t0 = time.perf_counter()
            out, payload = decode_chunk(str(clip), request, [info], k, chunk_s, totals)
            decode_s += time.perf_counter() - t0
            if info.name in out["errors"]:
                raise SystemExit(f"{clip}: {out['errors'][info.name]}")
            totals, n_chunks = out["totals"], out["n_chunks"]
            n = out["rows"][info.name]
            if n:
                parts.append(payload_windows(payload, 0, n, info))
            k += 1
            if limit and sum(len(p) for p in parts) >= limit:
                break
        if limit and sum(len(p) for p in parts) >= limit:
            break
    windows = torch.from_numpy(np.concatenate(parts))
    return (windows[:limit] if limit else windows), decode_s, int(windows.shape[0])


def measure_model(ext, windows, *, batch: int, device, precision: str, seconds: float, sampler: GpuSampler) -> dict:
    import torch

    from avel.pipeline.engine import extract_batch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    extract_batch(ext, windows[:batch], batch_size=batch, device=device, precision=precision)  # warm-up (cudnn)
    sync()
    done, t0 = 0, time.perf_counter()
    m0 = time.monotonic()
    while True:
        for a in range(0, windows.shape[0], batch):
            extract_batch(ext, windows[a : a + batch], batch_size=batch, device=device, precision=precision)
            done += min(batch, windows.shape[0] - a)
        sync()
        if time.perf_counter() - t0 >= seconds:
            break
    elapsed = time.perf_counter() - t0
    return {
        "windows": done,
        "seconds": round(elapsed, 3),
        "windows_per_s": round(done / elapsed, 2),
        **sampler.stats(m0, time.monotonic()),
    }


def run_pipeline(
    names: list[str], clips: list[Path], preset: str, device: str, work: Path, *, runner: str, precision: str
) -> dict:
    """``avel extract`` of ``names`` on the clips with ``runner`` and ``precision``, end to end."""
    from avel.pipeline.extract import ExtractConfig, run_extract

    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for c in clips:
        if not (videos / c.name).exists():
            os.symlink(c.resolve(), videos / c.name)
    out = work / f"store_{runner}_{precision}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = ExtractConfig(
        dataset="folder",
        videos=str(videos),
        out=str(out),
        extractors=names,
        random_weights=True,
        preset=preset,
        runner=runner,
        device=device,
        precision=precision,
        decode_workers=max(1, (os.cpu_count() or 2) - 1),
    )
    t0 = time.perf_counter()
    report = run_extract(cfg)
    seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 2),
        "windows": report["windows"],
        "windows_per_s": round(report["windows"] / seconds, 2),
        "startup_s": report["startup_s"],
        "load_s": report["load_s"],
        "settings": report["settings"],
        "failures": report["failures"][:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="+", type=Path, help="real video clips")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry", action="store_true", help="tiny presets, a few windows: tests the script itself")
    ap.add_argument("--model-s", type=float, default=15.0, help="seconds per model measurement")
    ap.add_argument("--batch-size", type=int, default=0, help="0: the extractor's gpu/cpu batch size")
    ap.add_argument(
        "--decode-workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="cores that would decode beside the GPU",
    )
    ap.add_argument("--extractors", default=",".join(EXTRACTORS))
    ap.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--runners", default="local,ray", help="runners of the end-to-end runs")
    ap.add_argument("--precisions", default="fp32,bf16", help="precisions of the model and end-to-end runs")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from avel.pipeline.engine import build_stream_extractors, decode_request

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --dry to test the script")
    preset = "tiny" if args.dry else "full"
    limit = 4 if args.dry else None
    model_s = 0.0 if args.dry else args.model_s
    names = [n.strip() for n in args.extractors.split(",") if n.strip()]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    sampler = GpuSampler()
    sampler.start()
    t_start = time.perf_counter()
    result: dict = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "cpus": os.cpu_count(),
        "decode_workers": args.decode_workers,
        "preset": preset,
        "clips": [c.name for c in args.clips],
        "nvidia_smi": sampler.available,
        "extractors": {},
    }
    try:
        for name in names:
            (se,) = build_stream_extractors([name], random_weights=True, preset=preset, device=device)
            ext = se.extractor
            batch = args.batch_size or (ext.gpu_batch_size if device.type == "cuda" else ext.cpu_batch_size)
            windows, decode_s, n_windows = clip_windows(
                ext, decode_request([se]), args.clips, limit, chunk_s=2.0 if args.dry else 30.0
            )
            decode_rate = n_windows / decode_s  # windows/s, one process
            row = {
                "batch_size": batch,
                "clip_windows": n_windows,
                "decode_windows_per_s_per_core": round(decode_rate, 2),
                "decode_windows_per_s_all_workers": round(decode_rate * args.decode_workers, 2),
            }
            for precision in precisions:
                m = measure_model(
                    ext, windows, batch=batch, device=device, precision=precision, seconds=model_s, sampler=sampler
                )
                m["bound"] = (
                    "decode-bound" if row["decode_windows_per_s_all_workers"] < m["windows_per_s"] else "model-bound"
                )
                row[precision] = m
            result["extractors"][name] = row
            del ext, se, windows
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if args.pipeline:
            work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
            result["pipeline"] = {
                f"{runner}-{precision}": run_pipeline(
                    names, args.clips, preset, device.type, work, runner=runner, precision=precision
                )
                for runner in runners
                for precision in precisions
            }
    finally:
        sampler.stop()
    # the estimate: the models one after another on one GPU, decoding on the cores beside it
    windows = UNAV100_VIDEO_S * WINDOWS_PER_VIDEO_S
    best = "bf16" if device.type == "cuda" and "bf16" in precisions else precisions[0]
    gpu_s = sum(windows / r[best]["windows_per_s"] for r in result["extractors"].values())
    decode_s = sum(windows / r["decode_windows_per_s_all_workers"] for r in result["extractors"].values())
    result["unav100_estimate"] = {
        "videos": UNAV100_VIDEOS,
        "video_hours": round(UNAV100_VIDEO_S / 3600, 1),
        "windows_per_stream": int(windows),
        "precision": best,
        "streams": names,
        "model_hours": round(gpu_s / 3600, 2),
        "decode_hours_with_decode_workers": round(decode_s / 3600, 2),
        "estimate_hours": round(max(gpu_s, decode_s) / 3600, 2),
        "bound": "decode" if decode_s > gpu_s else "model",
        "note": "decode counted per stream (each extractor's own decode request); one decode per video for "
        "all streams would cost less",
    }
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
