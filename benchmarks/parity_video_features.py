"""End-to-end rows of avel against v-iashin/video_features itself, on its two sample videos.

    benchmarks/setup_video_features.sh DIR [SOURCE]          # once: DIR/vf, DIR/deps, DIR/bin
    python benchmarks/parity_video_features.py --setup DIR --samples-from SOURCE \\
        --cache CACHE [--flow-seconds 4] [--clip-seconds 0] [--streams i3d_rgb,i3d_flow,vgg19,vggish] \\
        [--videos v_GGSY1Qvo990,v_ZNVhz7ctTq0] [--tools ref,ref_reenc,avel] [--old] [--same-input]

Both tools run the same seeded random weights (written once to ``CACHE/weights``): I3D RGB and
flow in video_features' (hassony2) layout with BatchNorm running statistics measured on real
windows of the two videos (train-mode passes, cumulative average), so that rows follow the
content; RAFT (torchvision ``raft_large`` weights, converted to the princeton-vl layout that
video_features loads); VGGish (torchvggish layout); VGG-19 (torchvision layout). avel loads the
same files through its own checkpoint converters, with default settings (I3D BatchNorm eps
1e-5 from the hassony2 layout; VGGish with its final ReLU, as the released features).

Per video and stream it prints

* ``ratio``: mean |avel row - reference row| / mean |reference row i+1 - reference row i|
  (rows compared up to the shorter of the two; row counts printed);
* ``old ratio/floor`` (``--old``): avel with the rule and resize it used before
  (``frame_selection="previous"``, ``resize="torch"``), against the same floor;
* ``same-input ratio`` (``--same-input``): avel on the very re-encode the reference reads
  (video_features' own ffmpeg command: ``fps=25`` for I3D, ``fps=16`` for VGG-19), against the
  reference: what is left when both tools read the same file (near 0: the rest of the
  difference is the re-encode);
* ``floor``: the same ratio for video_features on the video's 25-fps re-encode (made with
  video_features' own ffmpeg command) against video_features on the video: the noise of the
  libx264 re-encode that every tool reading the original file pays.

What runs as the reference, per stream:

* ``i3d_rgb`` / ``i3d_flow``: video_features' ``ExtractI3D`` (ffmpeg ``fps=25`` re-encode,
  OpenCV frames, PIL resize, RAFT 20 iterations), UnAV-100 settings (24-frame stacks, step 8).
  Flow runs on the first ``--flow-seconds`` of each video only (RAFT on 2 CPU cores), I3D RGB
  and VGG-19 on the first ``--clip-seconds`` (0: whole videos), cut losslessly (libx264
  ``-qp 0``, timestamps kept) so both tools read the same frames; the floor is then measured
  on the same clip.
* ``vggish``: video_features' ``ExtractVGGish`` (ffmpeg aac -> wav, resampy to 16 kHz,
  torchvggish frontend), with ``postprocess=False`` (the released features are raw embeddings).
* ``vgg19``: video_features has no VGG-19 extractor; the reference is its own frame loader
  (``VideoLoader``: ffmpeg ``fps=16`` re-encode, OpenCV) followed by the AVE recipe: one PIL
  bilinear resize to 224 x 224, caffe BGR mean, torchvision VGG-19 pool5, 16 frames averaged.

Results are cached under ``CACHE`` (delete a file to recompute it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLES = ("v_GGSY1Qvo990", "v_ZNVhz7ctTq0")
STREAMS = ("i3d_rgb", "i3d_flow", "vgg19", "vggish")
SEED = 0
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


# -- RAFT weights: torchvision layout -> princeton-vl layout (video_features) -----------------
def _raft_tv_key(key: str) -> str | None:
    """torchvision ``raft_large`` key of a princeton-vl RAFT key (None: a duplicate entry)."""
    parts = key.split(".")
    enc = {"fnet": "feature_encoder", "cnet": "context_encoder"}
    if parts[0] in enc:
        rest = parts[1:]
        top = {"conv1": "convnormrelu.0", "norm1": "convnormrelu.1", "conv2": "conv"}
        if rest[0] in top:
            return ".".join([enc[parts[0]], top[rest[0]], *rest[1:]])
        if rest[0].startswith("layer"):
            layer, block, name = rest[0], rest[1], rest[2]
            if name == "norm3":
                return None  # princeton registers the downsample norm twice (norm3 and downsample.1)
            sub = {
                "conv1": "convnormrelu1.0",
                "norm1": "convnormrelu1.1",
                "conv2": "convnormrelu2.0",
                "norm2": "convnormrelu2.1",
            }.get(name)
            if sub is None:  # downsample.0 / downsample.1
                return ".".join([enc[parts[0]], layer, block, *rest[2:]])
            return ".".join([enc[parts[0]], layer, block, sub, *rest[3:]])
    if parts[0] == "update_block":
        mod, name, leaf = parts[1], parts[2], parts[3:]
        if mod == "encoder":
            sub = {
                "convc1": "convcorr1.0",
                "convc2": "convcorr2.0",
                "convf1": "convflow1.0",
                "convf2": "convflow2.0",
                "conv": "conv.0",
            }[name]
            return ".".join(["update_block.motion_encoder", sub, *leaf])
        if mod == "gru":
            return ".".join(["update_block.recurrent_block", f"convgru{name[-1]}", name[:-1], *leaf])
        if mod == "flow_head":
            return ".".join(["update_block.flow_head", name, *leaf])
        if mod == "mask":
            return ".".join(["mask_predictor", {"0": "convrelu.0", "2": "conv"}[name], *leaf])
    raise KeyError(f"unknown princeton-vl RAFT key {key!r}")


def raft_princeton_state(tv_state: dict, princeton_keys) -> dict:
    """princeton-vl RAFT state dict (video_features) holding torchvision ``raft_large`` weights."""
    out = {}
    for key in princeton_keys:
        tv = _raft_tv_key(key)
        if tv is None:  # norm3 == downsample.1
            tv = _raft_tv_key(key.replace("norm3", "downsample.1"))
        out[key] = tv_state[tv]
    return out


# -- the reference side: runs inside a video_features checkout ------------------------------
def reference_main(args: argparse.Namespace) -> None:
    """``--role reference``: one video_features job, written to ``args.out`` (.npy)."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    torch.set_num_threads(args.threads)
    os.chdir(args.vf)
    sys.path.insert(0, str(args.vf))
    weights = Path(args.weights)
    if args.job == "weights":
        _reference_weights(weights, [Path(v) for v in args.inputs], args.flow_seconds)
        return
    video = str(Path(args.inputs[0]).resolve())
    tmp = Path(args.out).parent / f"tmp-{os.getpid()}"
    if args.job in ("i3d_rgb", "i3d_flow"):
        from models.i3d.extract_i3d import ExtractI3D

        _install_i3d_weights(weights)
        stream = args.job.split("_")[1]
        cfg = OmegaConf.create(
            {
                "feature_type": "i3d",
                "streams": stream,
                "flow_type": "raft",
                "stack_size": 24,
                "step_size": 8,
                "extraction_fps": 25,
                "device": "cpu",
                "on_extraction": "save_numpy",
                "output_path": str(tmp),
                "tmp_path": str(tmp),
                "keep_tmp_files": False,
                "show_pred": False,
            }
        )
        rows = ExtractI3D(cfg).extract(video)[stream]
    elif args.job == "vggish":
        from models.vggish import extract_vggish as ev
        from models.vggish.vggish_src.vggish_slim import VGGish

        def load_model(self):
            model = VGGish(pretrained=False, postprocess=False)
            model.load_state_dict(torch.load(weights / "vggish.pth"))
            return {"model": model.eval()}

        ev.ExtractVGGish.load_model = load_model
        cfg = OmegaConf.create(
            {
                "feature_type": "vggish",
                "device": "cpu",
                "on_extraction": "save_numpy",
                "output_path": str(tmp),
                "tmp_path": str(tmp),
                "keep_tmp_files": False,
                "show_pred": False,
            }
        )
        rows = ev.ExtractVGGish(cfg).extract(video)["vggish"]
    elif args.job == "vgg19":
        rows = _reference_vgg19(video, weights, tmp)
    else:
        raise SystemExit(f"unknown job {args.job}")
    np.save(args.out, np.asarray(rows, np.float32))


def _install_i3d_weights(weights: Path) -> None:
    import shutil

    ckpt = Path("models/i3d/checkpoints")
    ckpt.mkdir(parents=True, exist_ok=True)
    for s in ("rgb", "flow"):
        shutil.copy(weights / f"i3d_{s}.pt", ckpt / f"i3d_{s}.pt")
    raft = Path("models/raft/checkpoints")
    raft.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights / "raft-sintel.pth", raft / "raft-sintel.pth")


def _reference_weights(weights: Path, videos: list[Path], flow_seconds: float) -> None:
    """Seeded random weights of every network, BatchNorm statistics of I3D from real windows."""
    import cv2
    import numpy as np
    import torch
    import torchvision
    from models.i3d.i3d_src.i3d_net import I3D
    from models.raft.raft_src.raft import RAFT, InputPadder
    from models.transforms import ResizeImproved
    from models.vggish.vggish_src.vggish_slim import VGG, make_layers
    from torchvision.models.optical_flow import raft_large

    weights.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    tv_raft = raft_large(weights=None).eval()
    # random RAFT: scale the flow head so that 20 updates give flows of a few pixels (not all
    # clamped at +-20 px, which would make the I3D flow input constant)
    with torch.no_grad():
        tv_raft.update_block.flow_head.conv2.weight.mul_(0.05)
        tv_raft.update_block.flow_head.conv2.bias.zero_()
    torch.save(tv_raft.state_dict(), weights / "raft_large_C_T_SKHT_V1-0b8c9e55.pth")
    pr = RAFT()
    pr.load_state_dict(raft_princeton_state(tv_raft.state_dict(), pr.state_dict().keys()))
    pr.eval()
    # the released raft-sintel.pth is a DataParallel state dict: video_features keeps only the
    # keys starting with "module" (utils.dp_state_to_normal)
    torch.save({f"module.{k}": v for k, v in pr.state_dict().items()}, weights / "raft-sintel.pth")
    torch.manual_seed(SEED + 1)
    torch.save(VGG(make_layers()).state_dict(), weights / "vggish.pth")
    torch.manual_seed(SEED + 2)
    torch.save(torchvision.models.vgg19(weights=None).state_dict(), weights / "vgg19-dcbb9e9d.pth")

    # real windows, preprocessed the video_features way (PIL short side 256), 4 per video
    resize = ResizeImproved(256)
    from PIL import Image

    windows = []
    for v in videos:
        cap = cv2.VideoCapture(str(v))
        frames = []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            img = resize(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            frames.append(torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float())
        cap.release()
        for start in np.linspace(0, len(frames) - 26, 4).astype(int):
            windows.append(torch.stack(frames[start : start + 25]))  # 25 x 3 x H x W in [0, 255]
    for stream in ("rgb", "flow"):
        if (weights / f"i3d_{stream}.pt").exists():
            continue
        torch.manual_seed(SEED + 3 + (stream == "flow"))
        net = I3D(num_classes=400, modality=stream)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.momentum = None  # cumulative average over the passes
        net.train()
        with torch.no_grad():
            for i, w in enumerate(windows):
                if stream == "rgb":
                    x = w[:24]
                elif i % 4:  # RAFT costs: flow statistics from the first window of each video
                    continue
                else:  # RAFT flow of 16 pairs, the I3D flow input as video_features makes it
                    sub = w[:17]
                    padder = InputPadder(sub.shape)
                    p = padder.pad(sub)
                    x = pr(p[:-1], p[1:])
                    x = x.clamp(-20, 20)
                    x = (128 + 255 / 40 * x).round()
                h, wd = x.shape[-2:]
                x = x[..., (h - 224) // 2 : (h - 224) // 2 + 224, (wd - 224) // 2 : (wd - 224) // 2 + 224]
                x = (2 * x / 255 - 1).permute(1, 0, 2, 3).unsqueeze(0)  # 1 x C x T x 224 x 224
                net(x, features=True)
        torch.save(net.state_dict(), weights / f"i3d_{stream}.pt")


def _reference_vgg19(video: str, weights: Path, tmp: Path):
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    from utils.io import VideoLoader

    net = torchvision.models.vgg19(weights=None)
    net.load_state_dict(torch.load(weights / "vgg19-dcbb9e9d.pth"))
    features = net.features.eval()
    mean = torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    maps = []
    loader = VideoLoader(video, batch_size=16, fps=16, tmp_path=str(tmp), keep_tmp=False)
    with torch.no_grad():
        for batch, _, _ in loader:
            x = np.stack([np.asarray(Image.fromarray(f).resize((224, 224), Image.BILINEAR)) for f in batch])
            x = torch.from_numpy(x).permute(0, 3, 1, 2).float().flip(1) - mean  # RGB -> BGR, caffe mean
            maps.append(features(x))  # N x 512 x 7 x 7
    maps = torch.cat(maps)
    n = maps.shape[0] // 16
    return maps[: n * 16].reshape(n, 16, *maps.shape[1:]).mean(1).permute(0, 2, 3, 1).numpy()


# -- the driver --------------------------------------------------------------------------------
def _ffmpeg(setup: Path) -> str:
    return str(setup / "bin" / "ffmpeg")


def _run_reference(args, job: str, inputs: list[Path], out: Path) -> None:
    env = dict(
        os.environ,
        PYTHONPATH=f"{args.setup / 'vf'}:{args.setup / 'deps'}",
        PATH=f"{args.setup / 'bin'}:{os.environ.get('PATH', '')}",
    )
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        "reference",
        "--job",
        job,
        "--vf",
        str(args.setup / "vf"),
        "--weights",
        str(args.cache / "weights"),
        "--out",
        str(out),
        "--threads",
        str(args.threads),
        "--flow-seconds",
        str(args.flow_seconds),
        *map(str, inputs),
    ]
    subprocess.run(cmd, check=True, env=env)


def _avel_rows(args, stream: str, video: Path, **options):
    import torch

    import avel.extractors as E
    from avel.datasets.store import FeatureStore, StoreWriter
    from avel.pipeline.engine import StreamExtractor, run_local
    from avel.pipeline.jobs import VideoJob

    torch.set_num_threads(args.threads)
    w = args.cache / "weights"
    # defaults throughout: BatchNorm eps 1e-5 from the hassony2 layout, VGGish final ReLU on
    if stream == "i3d_rgb":
        ext = E.get("i3d_rgb").from_checkpoint(w / "i3d_rgb.pt", **options)
    elif stream == "i3d_flow":
        ext = E.get("i3d_flow").from_checkpoint(
            {"flow": w / "i3d_flow.pt", "raft": w / "raft_large_C_T_SKHT_V1-0b8c9e55.pth"}, **options
        )
    elif stream == "vggish":
        ext = E.get("vggish").from_checkpoint(w / "vggish.pth")
    else:
        ext = E.get("vgg19").from_checkpoint(w / "vgg19-dcbb9e9d.pth", **options)
    with tempfile.TemporaryDirectory() as tmp:  # the local runner writes a store: read the rows back
        se = StreamExtractor(stream, ext)
        writer = StoreWriter(Path(tmp) / "store", dataset="parity", streams={stream: se.spec()})
        report = run_local([VideoJob(video.stem, video)], [se], writer, batch_size=4, decode_timeout_s=None)
        writer.close()
        if report.videos_failed:
            errors = (Path(tmp) / "store" / "errors.jsonl").read_text()
            raise RuntimeError(f"{video}: avel failed: {errors}")
        rows = FeatureStore(Path(tmp) / "store").read(video.stem, stream)
    return rows.reshape(rows.shape[0], -1)


def _grey_small(path: Path):
    """Grey frames of ``path`` averaged over 4 x 4 pixel cells (N x cells), and their times."""
    import av
    import numpy as np

    frames, times = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            g = f.to_ndarray(format="gray").astype(np.float32)
            h, w = (g.shape[0] // 4) * 4, (g.shape[1] // 4) * 4
            frames.append(g[:h, :w].reshape(h // 4, 4, w // 4, 4).mean((1, 3)).ravel())
            times.append(float(f.pts * f.time_base))
    return np.stack(frames), np.asarray(times)


def selection_check(original: Path, reencoded: Path, fps: float = 25.0) -> dict:
    """Which original frame each frame of video_features' re-encode shows (nearest by mean
    squared difference), against avel's ``ffmpeg_fps`` selection on the original."""
    import numpy as np

    from avel.pipeline.decode import decode_video

    orig, _ = _grey_small(original)
    reenc, _ = _grey_small(reencoded)
    mse = np.stack([((r[None] - orig) ** 2).mean(-1) for r in reenc])  # R x N
    nearest = mse.argmin(1)
    ours = decode_video(original, fps=[fps], frame_selection="ffmpeg_fps", sample_rate=None, short_side=64)
    idx, n_ours = ours.native_index[fps], ours.total_frames[fps]
    n = min(len(idx), len(nearest))
    differ = np.nonzero(idx[:n] != nearest[:n])[0]
    return {
        "slots_avel": int(n_ours),
        "slots_ref": len(nearest),
        "differ": differ.tolist(),
        "mse_avel_vs_ref_pick": [(float(mse[k, idx[k]]), float(mse[k, nearest[k]])) for k in differ[:5]],
    }


def _ratio(rows, ref):
    import numpy as np

    n = min(len(rows), len(ref))
    rows, ref = rows[:n].reshape(n, -1), ref[:n].reshape(n, -1)
    spread = float(np.abs(np.diff(ref, axis=0)).mean())
    return float(np.abs(rows - ref).mean()) / spread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="driver", choices=("driver", "reference"))
    ap.add_argument("inputs", nargs="*")
    ap.add_argument("--setup", type=Path, help="the DIR of benchmarks/setup_video_features.sh")
    ap.add_argument("--samples-from", type=Path, help="a video_features git clone (bare or not) holding sample/")
    ap.add_argument("--cache", type=Path, default=Path("parity-cache"))
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--videos", default=",".join(SAMPLES), help="sample videos to run (names without .mp4)")
    ap.add_argument(
        "--tools",
        default="ref,ref_reenc,avel,avel_old,avel_same",
        help="compute only these (cached) outputs; a row is printed once ref, ref_reenc and avel exist",
    )
    ap.add_argument("--flow-seconds", type=float, default=4.0, help="flow on the first N seconds of each video")
    ap.add_argument(
        "--clip-seconds",
        type=float,
        default=0.0,
        help="I3D RGB and VGG-19 on the first N seconds of each video (0: whole videos)",
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--selection",
        action="store_true",
        help="only compare avel's 25-fps frame selection with the frames of video_features' re-encode",
    )
    ap.add_argument(
        "--same-input",
        action="store_true",
        help="also avel on the re-encode the reference reads (ffmpeg fps=25 / 16): near 0 when only the re-encode differs",
    )
    ap.add_argument(
        "--old",
        action="store_true",
        help="also avel with the previous rule and resize (frame_selection=previous, resize=torch)",
    )
    # reference role
    ap.add_argument("--job")
    ap.add_argument("--vf", type=Path)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.role == "reference":
        reference_main(args)
        return
    import numpy as np

    args.setup, args.cache = args.setup.resolve(), args.cache.resolve()
    videos_dir = args.cache / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    originals = []
    names = [v for v in args.videos.split(",") if v]
    unknown = sorted(set(names) - set(SAMPLES))
    if unknown:
        raise SystemExit(f"--videos: unknown sample(s) {unknown}; expected some of {list(SAMPLES)}")
    for name in SAMPLES:
        path = videos_dir / f"{name}.mp4"
        if not path.exists():
            blob = subprocess.run(
                ["git", "-C", str(args.samples_from), "show", f"HEAD:sample/{name}.mp4"],
                check=True,
                capture_output=True,
            ).stdout
            path.write_bytes(blob)
        originals.append(path)

    def derived(src: Path, tag: str, ffargs: list[str]) -> Path:
        out = videos_dir / f"{src.stem}_{tag}.mp4"
        if not out.exists():
            subprocess.run(
                [_ffmpeg(args.setup), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *ffargs, str(out)],
                check=True,
            )
        return out

    # video_features' own re-encode command (utils/io.py reencode_video_with_diff_fps)
    reencode = lambda src: derived(src, "reenc25", ["-filter:v", "fps=fps=25"])  # noqa: E731

    def subclip(src: Path, seconds: float) -> Path:  # lossless: the same frames and timestamps
        if not seconds:
            return src
        return derived(
            src,
            f"first{seconds:g}s",
            ["-t", f"{seconds:g}", "-c:v", "libx264", "-qp", "0", "-fps_mode", "passthrough", "-c:a", "copy"],
        )

    if args.selection:
        for src in (o for o in originals if o.stem in names):
            r = selection_check(src, reencode(src))
            print(
                f"{src.stem}: slots avel/ref {r['slots_avel']}/{r['slots_ref']}, {len(r['differ'])} differ "
                f"{r['differ'][:10]}; MSE of avel's / the reference's pick to the re-encoded frame "
                + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in r["mse_avel_vs_ref_pick"])
            )
        return
    if not (args.cache / "weights" / "i3d_flow.pt").exists():
        _run_reference(args, "weights", originals, args.cache / "weights" / "done")
    streams = [s for s in args.streams.split(",") if s]
    computed = {t for t in args.tools.split(",") if t}
    results = []
    for stream in streams:
        for src in (o for o in originals if o.stem in names):
            seconds = {"i3d_flow": args.flow_seconds, "vggish": 0.0}.get(stream, args.clip_seconds)
            video = subclip(src, seconds)
            feats = {}
            tools = [("ref", video), ("ref_reenc", reencode(video)), ("avel", video)]
            if args.old and stream != "vggish":
                tools.append(("avel_old", video))
            if args.same_input and stream != "vggish":  # the file the reference reads
                rate = 16 if stream == "vgg19" else 25
                tools.append(("avel_same", derived(video, f"reenc{rate}", ["-filter:v", f"fps=fps={rate}"])))
            for tool, path in tools:
                out = args.cache / "rows" / f"{stream}-{video.stem}-{tool}.npy"
                out.parent.mkdir(parents=True, exist_ok=True)
                if not out.exists() and tool not in computed:
                    continue  # left for a later run (--tools)
                if not out.exists():
                    if tool == "avel":
                        np.save(out, _avel_rows(args, stream, path))
                    elif tool == "avel_same":
                        np.save(out, _avel_rows(args, stream, path))
                    elif tool == "avel_old":
                        np.save(out, _avel_rows(args, stream, path, frame_selection="previous", resize="torch"))
                    else:
                        _run_reference(args, stream, [path], out)
                feats[tool] = np.load(out)
            if not {"ref", "ref_reenc", "avel"} <= set(feats):
                print(f"{src.stem} {stream}: computed {sorted(feats)}; run the others with --tools", file=sys.stderr)
                continue
            results.append(
                {
                    "video": src.stem,
                    "stream": stream,
                    "clip_s": seconds,
                    "rows_avel": len(feats["avel"]),
                    "rows_ref": len(feats["ref"]),
                    "ratio": _ratio(feats["avel"], feats["ref"]),
                    "floor": _ratio(feats["ref_reenc"], feats["ref"]),
                    "ratio_old": _ratio(feats["avel_old"], feats["ref"]) if "avel_old" in feats else None,
                    "ratio_same": _ratio(feats["avel_same"], feats["ref"]) if "avel_same" in feats else None,
                }
            )
    if args.json:
        print(json.dumps(results, indent=1))
        return
    old = any(r["ratio_old"] is not None for r in results)
    same = any(r["ratio_same"] is not None for r in results)
    print(
        f"{'video':<16}{'stream':<10}{'rows avel/ref':>14}{'ratio':>8}{'floor':>8}{'ratio/floor':>13}"
        + (f"{'old ratio/floor':>17}" if old else "")
        + (f"{'same-input ratio':>18}" if same else "")
    )
    for r in results:
        clip = f"  (first {r['clip_s']:g} s)" if r["clip_s"] else ""
        extra = (f"{r['ratio_old'] / r['floor']:>17.2f}" if r["ratio_old"] is not None else f"{'-':>17}") if old else ""
        if same:
            extra += f"{r['ratio_same']:>18.2e}" if r["ratio_same"] is not None else f"{'-':>18}"
        print(
            f"{r['video']:<16}{r['stream']:<10}{r['rows_avel']:>7}/{r['rows_ref']:<6}{r['ratio']:>8.3f}"
            f"{r['floor']:>8.3f}{r['ratio'] / r['floor']:>13.2f}{extra}{clip}"
        )


if __name__ == "__main__":
    main()
