"""Record the parity fixtures by running the reference code itself (not avel) on seeded weights.

    benchmarks/parity/setup_refs.sh REFS          # checkouts outside the repo
    PYTHONPATH=REFS/vfsetup/deps python benchmarks/parity/record.py --refs REFS [--only NAME ...]

Writes ``tests/extractors/parity/<name>.{npz,json}`` (see ``common.py``). Each recorder imports
the reference modules from the checkout, builds seeded random weights in the reference's own
key layout (BatchNorm statistics measured by the reference module itself on a calibration input,
in train mode, so that every layer is normalised and the outputs follow the input), saves them
as the reference's checkpoint file, loads that file the way the reference does, and runs its
forward on small fixed inputs. Nothing from ``avel`` is imported here. Sizes are kept small
(64 x 64 frames, 16-frame windows, I3D's final average pool adapted to (2, 2, 2)) so each
fixture is a few hundred kB.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import FIXTURE_DIR, TOLERANCE, seeded_state, state_digest, state_spec, write_fixture  # noqa: E402

RECORDERS: dict[str, Callable[[argparse.Namespace], None]] = {}


def recorder(*names: str):
    def wrap(fn):
        for n in names:
            RECORDERS[n] = fn
        return fn

    return wrap


def git_commit(path: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def command_line() -> str:
    return "python benchmarks/parity/record.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def smooth_frames(g: torch.Generator, t: int, h: int, w: int, c: int, scale: float, offset: float) -> torch.Tensor:
    """``T x H x W x C`` float: random 8 x 8 fields upsampled bilinearly plus fine noise."""
    coarse = torch.rand(t, c, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    x = 0.8 * x + 0.2 * torch.rand(t, c, h, w, generator=g)
    return (x * scale + offset).permute(0, 2, 3, 1).contiguous()


def weights_meta(spec: list, seed: int, state: dict[str, torch.Tensor], stored: list[str], file: str) -> dict:
    return {"spec": spec, "seed": seed, "digest": state_digest(state), "stored": stored, "file": file}


VAR_FLOOR = 1e-3
"""Least running variance kept after calibration: channels that barely vary on the calibration
windows would otherwise amplify any other input without bound (eps still matters at this size)."""


def calibrate_bn(model: torch.nn.Module, run: Callable[[], Any]) -> list[str]:
    """BatchNorm running statistics = the statistics of the calibration forward(s) (cumulative
    average, train mode), variances floored at ``VAR_FLOOR``; returns the state keys it set."""
    bn_names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        run()
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_var.clamp_(min=VAR_FLOOR)
    return [f"{n}.{s}" for n in bn_names for s in ("running_mean", "running_var")]


LAST_BLOCK_SCALE = 0.25
"""Scale of the BatchNorm affine of I3D's last block (``Mixed_5c``): features of about the size of
trained I3D's (mostly < 2). With scale 1 a few of the 2048 outputs reach 7.6 and the reference's own
float32 rounding (against float64) reaches 1.5e-4 there, above the 1e-4 tolerance."""


def scale_bn_affine(model: torch.nn.Module, prefix: str, scale: float) -> list[str]:
    """Multiply weight and bias of every BatchNorm under ``prefix``; returns their state keys."""
    keys = []
    for n, m in model.named_modules():
        if n.startswith(prefix) and isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.mul_(scale)
                m.bias.mul_(scale)
            keys += [f"{n}.weight", f"{n}.bias"]
    return keys


# -- I3D ------------------------------------------------------------------------------------
I3D_T, I3D_HW, I3D_POOL = 16, 64, (2, 2, 2)  # frames per window, frame side, final avg pool


def i3d_inputs(stream: str, seed: int) -> torch.Tensor:
    """rgb: uint8 ``24 + 1 x 64 x 64 x 3`` frames (windows start at 0 and 8); flow: float
    ``24 x 2 x 64 x 64`` flow fields in pixels (std ~10, beyond the +-20 clamp in places)."""
    g = torch.Generator().manual_seed(seed)
    if stream == "rgb":
        return smooth_frames(g, 25, I3D_HW, I3D_HW, 3, 255.0, 0.0).round().clamp(0, 255).to(torch.uint8)
    flow = smooth_frames(g, 24, I3D_HW, I3D_HW, 2, 60.0, -30.0).permute(0, 3, 1, 2)
    return flow.to(torch.float16).float()  # stored as float16, exactly


@recorder("i3d_rgb_video_features", "i3d_flow_video_features")
def record_i3d_video_features(args: argparse.Namespace, stream: str) -> None:
    vf = args.refs / "vfsetup" / "vf"
    sys.path.insert(0, str(vf))
    cwd = os.getcwd()
    os.chdir(vf)  # video_features loads its checkpoints from ./models/...
    try:
        from models.i3d.extract_i3d import ExtractI3D
        from models.i3d.i3d_src.i3d_net import I3D
        from models.raft.raft_src.raft import RAFT
        from models.transforms import TensorCenterCrop
        from omegaconf import OmegaConf

        seed = {"rgb": 11, "flow": 12}[stream]
        net = I3D(num_classes=400, modality=stream)
        spec = state_spec(net.state_dict())
        net.load_state_dict(seeded_state(spec, seed))
        net.avg_pool = torch.nn.AvgPool3d(I3D_POOL, (1, 1, 1))
        calib = torch.cat([i3d_inputs(stream, seed + 1000 + i) for i in range(4)])  # 4 x 25 (24) frames
        cfg = OmegaConf.create(
            {
                "feature_type": "i3d",
                "streams": stream,
                "flow_type": "raft",
                "stack_size": I3D_T,
                "step_size": 8,
                "extraction_fps": None,
                "device": "cpu",
                "on_extraction": "save_numpy",
                "output_path": "/tmp",
                "tmp_path": "/tmp",
                "keep_tmp_files": False,
                "show_pred": False,
            }
        )
        # the transforms of ExtractI3D, with its crop size (224) set to our small frames

        if stream == "rgb":
            frames = calib.permute(0, 3, 1, 2).float()  # T x 3 x H x W in [0, 255], as after resize_transforms
        else:
            frames = calib
        # calibration: the reference's own transforms on the calibration input, train-mode forward
        import torchvision
        from models.transforms import Clamp, PermuteAndUnsqueeze, ScaleTo1_1, ToUInt8

        tf = {
            "rgb": torchvision.transforms.Compose([TensorCenterCrop(I3D_HW), ScaleTo1_1(), PermuteAndUnsqueeze()]),
            "flow": torchvision.transforms.Compose(
                [TensorCenterCrop(I3D_HW), Clamp(-20, 20), ToUInt8(), ScaleTo1_1(), PermuteAndUnsqueeze()]
            ),
        }[stream]
        stored = calibrate_bn(
            net,
            lambda: net(
                torch.cat([tf(frames[s : s + I3D_T]) for s in range(0, len(frames) - I3D_T, 6)]), features=True
            ),
        )
        stored += scale_bn_affine(net, "mixed_5c.", LAST_BLOCK_SCALE)
        state = seeded_state(spec, seed, {k: net.state_dict()[k].numpy() for k in stored})
        ckpt = vf / "models" / "i3d" / "checkpoints" / f"i3d_{stream}.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, ckpt)
        if stream == "flow":  # ExtractI3D loads RAFT for the flow stream; not used here (flow is given)
            raft_ckpt = vf / "models" / "raft" / "checkpoints" / "raft-sintel.pth"
            raft_ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(0)
            torch.save({f"module.{k}": v for k, v in RAFT().state_dict().items()}, raft_ckpt)  # DataParallel keys
        ext = ExtractI3D(cfg)  # loads ./models/i3d/checkpoints/i3d_<stream>.pt as video_features does
        ext.i3d_transforms[stream].transforms[0] = TensorCenterCrop(I3D_HW)
        model = ext.name2module["model"][stream]
        model.avg_pool = torch.nn.AvgPool3d(I3D_POOL, (1, 1, 1))
        data = i3d_inputs(stream, seed)

        def forward(dtype: torch.dtype) -> np.ndarray:
            model.to(dtype)
            outs = []
            with torch.no_grad():
                for s in (0, 8):
                    if stream == "rgb":  # run_on_a_stack: a list of stack_size + 1 frames 1 x 3 x H x W
                        stack = [f[None].to(dtype) for f in data[s : s + I3D_T + 1].permute(0, 3, 1, 2)]
                        outs.append(ext.run_on_a_stack(stack, 0)["rgb"])
                    else:  # run_on_a_stack's flow branch after RAFT: transforms, then the stream model
                        outs.append(model(ext.i3d_transforms["flow"](data[s : s + I3D_T].to(dtype)), features=True))
            return torch.cat(outs).numpy()

        out, out64 = forward(torch.float32), forward(torch.float64)
    finally:
        os.chdir(cwd)
        sys.path.remove(str(vf))
    arrays = {
        "input": data.numpy().astype(np.float16) if stream == "flow" else data.numpy(),
        "output": out,
        "output_fp64": out64,
    }
    arrays.update({f"weights/{k}": state[k].numpy() for k in stored})
    write_fixture(
        f"i3d_{stream}_video_features",
        arrays,
        {
            "reference": {
                "repository": "v-iashin/video_features",
                "commit": git_commit(vf),
                "code": "models/i3d/extract_i3d.py (ExtractI3D.run_on_a_stack, i3d_transforms), "
                "models/i3d/i3d_src/i3d_net.py (I3D)",
            },
            "command": command_line(),
            "torch": torch.__version__,
            "tolerance": TOLERANCE,
            "layout": "video_features",
            "stream": stream,
            "weights": weights_meta(spec, seed, state, stored, f"i3d_{stream}.pt"),
            "setup": {
                "window_frames": I3D_T,
                "frame_hw": I3D_HW,
                "avg_pool_kernel": list(I3D_POOL),
                "window_starts": [0, 8],
                "crop_size": I3D_HW,
            },
            "input": (
                "uint8 frames T x H x W x 3; window s = frames[s:s+17] as video_features' stack (rgb uses the first 16)"
                if stream == "rgb"
                else "float16 flow T x 2 x H x W in pixels (what RAFT would give); window s = input[s:s+16]"
            ),
            "output": "I3D features B x 1024 (forward(features=True)), one row per window start; output_fp64: "
            "the same code in float64 (the float32 rounding floor)",
        },
    )


@recorder("i3d_rgb_pytorch_i3d", "i3d_flow_pytorch_i3d")
def record_i3d_pytorch_i3d(args: argparse.Namespace, stream: str) -> None:
    repo = args.refs / "pytorch-i3d"
    spec_ = importlib.util.spec_from_file_location("pytorch_i3d", repo / "pytorch_i3d.py")
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    seed = {"rgb": 21, "flow": 22}[stream]
    in_ch = 3 if stream == "rgb" else 2
    net = mod.InceptionI3d(400, in_channels=in_ch)
    spec = state_spec(net.state_dict())

    def levels(s: int) -> np.ndarray:
        """uint8 ``B x T x H x W x C``: rgb frames, or flow images (x, y) as pytorch-i3d reads them."""
        g = torch.Generator().manual_seed(s)
        x = torch.stack([smooth_frames(g, I3D_T, I3D_HW, I3D_HW, in_ch, 255.0, 0.0) for _ in range(2)])
        return x.round().clamp(0, 255).to(torch.uint8).numpy()

    def model_input(v: np.ndarray) -> torch.Tensor:
        # charades_dataset.load_rgb_frames / load_flow_frames: (img / 255.) * 2 - 1, float32, then
        # video_to_tensor: T x H x W x C -> C x T x H x W
        x = np.asarray((v / 255.0) * 2 - 1, dtype=np.float32)
        return torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())

    net.load_state_dict(seeded_state(spec, seed))
    net.avg_pool = torch.nn.AvgPool3d(I3D_POOL, (1, 1, 1))
    calib = torch.cat([model_input(levels(seed + 1000 + i)) for i in range(8)])  # 16 windows
    stored = calibrate_bn(net, lambda: net.extract_features(calib))
    stored += scale_bn_affine(net, "Mixed_5c.", LAST_BLOCK_SCALE)
    state = seeded_state(spec, seed, {k: net.state_dict()[k].numpy() for k in stored})
    ckpt = args.work / f"{stream}_imagenet.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, ckpt)
    model = mod.InceptionI3d(400, in_channels=in_ch)
    model.load_state_dict(torch.load(ckpt))  # extract_features.py: i3d.load_state_dict(torch.load(...))
    model.avg_pool = torch.nn.AvgPool3d(I3D_POOL, (1, 1, 1))
    model.eval()
    data = levels(seed)
    with torch.no_grad():
        out = model.extract_features(model_input(data)).mean(dim=(2, 3, 4)).numpy()
        out64 = model.double().extract_features(model_input(data).double()).mean(dim=(2, 3, 4)).numpy()
    arrays = {"input": data, "output": out, "output_fp64": out64}
    arrays.update({f"weights/{k}": state[k].numpy() for k in stored})
    write_fixture(
        f"i3d_{stream}_pytorch_i3d",
        arrays,
        {
            "reference": {
                "repository": "piergiaj/pytorch-i3d",
                "commit": git_commit(repo),
                "code": "pytorch_i3d.py (InceptionI3d.extract_features); input scaling of charades_dataset.py",
            },
            "command": command_line(),
            "torch": torch.__version__,
            "tolerance": TOLERANCE,
            "layout": "pytorch_i3d",
            "stream": stream,
            "weights": weights_meta(spec, seed, state, stored, f"{stream}_imagenet.pt"),
            "setup": {"window_frames": I3D_T, "frame_hw": I3D_HW, "avg_pool_kernel": list(I3D_POOL)},
            "input": "uint8 B x T x H x W x C (rgb frames, or flow images x, y); model input (v / 255) * 2 - 1",
            "output": "mean over T', H', W' of extract_features (B x 1024); output_fp64: the same in float64",
        },
    )


# -- RAFT -----------------------------------------------------------------------------------
RAFT_HW, RAFT_UPDATES = (124, 132), 20  # >= 128 after padding (torchvision); not multiples of 8
RAFT_HEAD_SCALE = 0.05


@recorder("raft_torchvision")
def record_raft(args: argparse.Namespace) -> None:
    """torchvision ``raft_large`` (its own ``OpticalFlow`` transforms) on frame pairs padded by
    video_features' ``InputPadder`` (replicate, sintel split), as video_features' I3D flow does."""
    import torchvision
    from torchvision.models.optical_flow import Raft_Large_Weights, raft_large

    vf = args.refs / "vfsetup" / "vf"
    sys.path.insert(0, str(vf))
    from models.raft.raft_src.raft import InputPadder  # the padder extract_i3d.py imports

    sys.path.remove(str(vf))
    seed = 31
    net = raft_large(weights=None, progress=False)
    spec = state_spec(net.state_dict())
    # the flow head's last conv scaled down: with plain random weights the 20 refinement steps are
    # chaotic (flows of 200 px; a 1e-6 change of the input moves them by 4.6 px), so float32
    # rounding alone would exceed the tolerance
    head = ("update_block.flow_head.conv2.weight", "update_block.flow_head.conv2.bias")
    state = seeded_state(spec, seed)
    state = seeded_state(spec, seed, {k: (RAFT_HEAD_SCALE * state[k]).numpy() for k in head})
    ckpt = args.work / "raft_large_C_T_SKHT_V1-0b8c9e55.pth"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, ckpt)
    model = raft_large(weights=None, progress=False)
    model.load_state_dict(torch.load(ckpt))
    model.eval()
    g = torch.Generator().manual_seed(seed)
    frames = smooth_frames(g, 3, *RAFT_HW, 3, 255.0, 0.0).round().clamp(0, 255).to(torch.uint8)  # T x H x W x 3
    chw = frames.permute(0, 3, 1, 2)
    transforms = Raft_Large_Weights.C_T_SKHT_V1.transforms()  # uint8 -> float [-1, 1]
    padder = InputPadder(chw.shape)

    def flows(dtype: torch.dtype) -> np.ndarray:
        first, second = transforms(chw[:-1], chw[1:])
        first, second = padder.pad(first.to(dtype)), padder.pad(second.to(dtype))
        with torch.no_grad():
            return model.to(dtype)(first, second, num_flow_updates=RAFT_UPDATES)[-1].numpy()

    out = flows(torch.float32)  # (torchvision's RAFT builds float32 grids: no float64 run)
    arrays = {"input": frames.numpy(), "output": out}
    arrays.update({f"weights/{k}": state[k].numpy() for k in head})
    write_fixture(
        "raft_torchvision",
        arrays,
        {
            "reference": {
                "repository": "pytorch/vision",
                "commit": f"torchvision {torchvision.__version__}",
                "code": "torchvision.models.optical_flow.raft_large + Raft_Large_Weights.C_T_SKHT_V1."
                "transforms(); padding: v-iashin/video_features@"
                + git_commit(vf)[:7]
                + " models/raft/raft_src/raft.py InputPadder (as extract_i3d.py)",
            },
            "command": command_line(),
            "torch": torch.__version__,
            "tolerance": TOLERANCE,
            "weights": weights_meta(spec, seed, state, list(head), ckpt.name),
            "setup": {"num_flow_updates": RAFT_UPDATES, "frame_hw": list(RAFT_HW)},
            "input": "uint8 frames T x H x W x 3; pairs (t, t + 1)",
            "output": "flow of the last update, (T - 1) x 2 x H' x W' at the padded size (not unpadded, as video_features)",
        },
    )


@recorder("raft_video_features")
def record_raft_video_features(args: argparse.Namespace) -> None:
    """video_features' RAFT (princeton-vl code, ``raft-sintel.pth`` with DataParallel keys, loaded
    as ``ExtractI3D.load_model`` does) on frames padded by its ``InputPadder``: the flow of its I3D
    flow stream."""
    vf = args.refs / "vfsetup" / "vf"
    sys.path.insert(0, str(vf))
    try:
        from models.raft.raft_src.raft import RAFT, InputPadder
        from utils.utils import dp_state_to_normal

        seed = 32
        net = RAFT()
        spec = state_spec(net.state_dict())
        # norm3 of a residual block is the module registered again as downsample.1: same values
        aliases = {k: k.replace(".norm3.", ".downsample.1.") for k, _, _ in spec if ".norm3." in k}
        head = ("update_block.flow_head.conv2.weight", "update_block.flow_head.conv2.bias")
        state = seeded_state(spec, seed)
        state = seeded_state(spec, seed, {k: (RAFT_HEAD_SCALE * state[k]).numpy() for k in head})
        state.update({k: state[v] for k, v in aliases.items()})
        ckpt = vf / "models" / "raft" / "checkpoints" / "raft-sintel.pth"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({f"module.{k}": v for k, v in state.items()}, ckpt)
        model = RAFT()
        model.load_state_dict(dp_state_to_normal(torch.load(ckpt, map_location="cpu")))
        model.eval()
        g = torch.Generator().manual_seed(seed)
        frames = smooth_frames(g, 3, *RAFT_HW, 3, 255.0, 0.0).round().clamp(0, 255).to(torch.uint8)
        stack = frames.permute(0, 3, 1, 2).float()  # T x 3 x H x W in [0, 255], as its rgb_stack
        padder = InputPadder(stack.shape)
        with torch.no_grad():  # run_on_a_stack: flow_xtr_model(padder.pad(rgb_stack)[:-1], padder.pad(rgb_stack)[1:])
            out = model(padder.pad(stack)[:-1], padder.pad(stack)[1:]).numpy()
    finally:
        sys.path.remove(str(vf))
    arrays = {"input": frames.numpy(), "output": out}
    arrays.update({f"weights/{k}": state[k].numpy() for k in head})
    write_fixture(
        "raft_video_features",
        arrays,
        {
            "reference": {
                "repository": "v-iashin/video_features",
                "commit": git_commit(vf),
                "code": "models/raft/raft_src/raft.py (RAFT, default iters=20, test_mode; InputPadder), "
                "ExtractI3D.load_model's checkpoint loading (dp_state_to_normal)",
            },
            "command": command_line(),
            "torch": torch.__version__,
            "tolerance": TOLERANCE,
            "weights": {
                **weights_meta(spec, seed, state, list(head), ckpt.name),
                "aliases": aliases,
                "key_prefix": "module.",
            },
            "setup": {"num_flow_updates": 20, "frame_hw": list(RAFT_HW)},
            "input": "uint8 frames T x H x W x 3; pairs (t, t + 1)",
            "output": "flow_up of the last iteration, (T - 1) x 2 x H' x W' at the padded size",
        },
    )


# -- VGGish ---------------------------------------------------------------------------------
def _resampy_standin() -> None:
    """vggish_input imports resampy (numba) at module level, for inputs not at 16 kHz only; ours
    are at 16 kHz, so a stand-in that refuses to run replaces it."""
    import types

    mod = types.ModuleType("resampy")

    def resample(*a, **k):
        raise RuntimeError("resampy stand-in: inputs must be 16 kHz")

    mod.resample = resample
    sys.modules.setdefault("resampy", mod)


def vggish_waveform(seed: int) -> np.ndarray:
    """2.1 s at 16 kHz in [-1, 1]: noise plus two tones."""
    rng = np.random.default_rng(seed)
    t = np.arange(33600) / 16000.0
    wave = 0.3 * rng.uniform(-1, 1, t.size) + 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)
    return wave.astype(np.float32)


@recorder("vggish_torchvggish")
def record_vggish_torchvggish(args: argparse.Namespace) -> None:
    repo = args.refs / "torchvggish"
    _resampy_standin()
    sys.path.insert(0, str(repo))
    try:
        from torchvggish import vggish, vggish_input

        seed = 41
        net = vggish.VGGish(urls={}, pretrained=False, preprocess=False, postprocess=False, device="cpu")
        spec = state_spec(net.state_dict())
        state = seeded_state(spec, seed)
        ckpt = args.work / "vggish-10086976.pth"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, ckpt)
        g = torch.Generator().manual_seed(seed + 1)
        pca = {
            "pca_eigen_vectors": torch.linalg.qr(torch.randn(128, 128, generator=g))[0].numpy(),
            "pca_means": (0.1 * torch.randn(128, generator=g)).numpy(),
        }
        # the hub's load: state_dict from the .pth file; PCA params as numpy arrays in the file
        model = vggish.VGGish(urls={}, pretrained=False, preprocess=True, postprocess=True, device="cpu")
        model.load_state_dict(torch.load(ckpt), strict=False)
        model.pproc.load_state_dict(
            {
                "pca_eigen_vectors": torch.as_tensor(pca["pca_eigen_vectors"]).float(),
                "pca_means": torch.as_tensor(pca["pca_means"].reshape(-1, 1)).float(),
            }
        )
        model.eval()
        wave = vggish_waveform(seed)
        with torch.no_grad():
            examples = vggish_input.waveform_to_examples(wave.astype(np.float64), 16000)  # N x 1 x 96 x 64
            model.postprocess = False
            emb = model(wave.astype(np.float64), 16000)
            model.postprocess = True
            quant = model.float()(wave.astype(np.float64), 16000)
    finally:
        sys.path.remove(str(repo))
    write_fixture(
        "vggish_torchvggish",
        {
            "input": wave,
            "examples": examples.numpy(),
            "output": emb.numpy(),
            "output_postprocess": quant.numpy(),
            "pca/pca_eigen_vectors": pca["pca_eigen_vectors"],
            "pca/pca_means": pca["pca_means"],
        },
        {
            "reference": {
                "repository": "harritaylor/torchvggish",
                "commit": git_commit(repo),
                "code": "torchvggish/vggish.py VGGish(preprocess=True) forward (vggish_input."
                "waveform_to_examples, VGG, Postprocessor); resampy replaced by a stand-in (16 kHz)",
            },
            "command": command_line(),
            "torch": torch.__version__,
            "tolerance": TOLERANCE,
            "weights": weights_meta(spec, seed, state, [], ckpt.name),
            "setup": {"hop_s": 0.96, "sample_rate": 16000},
            "input": "float32 waveform at 16 kHz (the reference gets it as float64, as soundfile would)",
            "output": "examples: N x 1 x 96 x 64 log-mel; output: N x 128 embeddings (final ReLU); "
            "output_postprocess: PCA + quantised with the stored pca/ arrays",
        },
    )


@recorder("vggish_video_features")
def record_vggish_video_features(args: argparse.Namespace) -> None:
    vf = args.refs / "vfsetup" / "vf"
    _resampy_standin()
    sys.path.insert(0, str(vf))
    try:
        from models.vggish.vggish_src import vggish_input
        from models.vggish.vggish_src.vggish_slim import VGGish

        seed = 42
        net = VGGish(pretrained=False, preprocess=True, postprocess=False)
        spec = state_spec(net.state_dict())
        state = seeded_state(spec, seed)
        ckpt = args.work / "vggish-10086976.pth"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, ckpt)
        net.load_state_dict(torch.load(ckpt))  # what hub.load_state_dict_from_url returns for this file
        net.eval()
        wave = vggish_waveform(seed)
        with torch.no_grad():
            examples = vggish_input.waveform_to_examples(wave.astype(np.float64), 16000)
            emb = net(wave.astype(np.float64), torch.device("cpu"), 16000)
    finally:
        sys.path.remove(str(vf))
    write_fixture(
        "vggish_video_features",
        {"input": wave, "examples": examples.numpy(), "output": emb.numpy()},
        {
            "reference": {
                "repository": "v-iashin/video_features",
                "commit": git_commit(vf),
                "code": "models/vggish/vggish_src/vggish_slim.py VGGish(preprocess=True) forward "
                "(vggish_input.waveform_to_examples); resampy replaced by a stand-in (16 kHz)",
            },
            "command": command_line(),
            "torch": torch.__version__,
            "tolerance": TOLERANCE,
            "weights": weights_meta(spec, seed, state, [], ckpt.name),
            "setup": {"hop_s": 0.96, "sample_rate": 16000},
            "input": "float32 waveform at 16 kHz (the reference gets it as float64)",
            "output": "examples: N x 1 x 96 x 64 log-mel; output: N x 128 embeddings",
        },
    )


# -- ONE-PEACE ------------------------------------------------------------------------------
def _fairseq_standins(repo: Path) -> None:
    """ONE-PEACE's model code imports fairseq, whose vendored copy does not import on Python 3.11
    (dataclass configs with mutable defaults). The few names the image adapter and the encoder
    use get inference-time stand-ins: ``FairseqDropout`` (dropout, identity in eval),
    ``LayerDropModuleList`` (a ``ModuleList``; layerdrop is 0), ``FairseqEncoder`` (a ``Module``
    keeping the dictionary), ``utils.softmax`` (softmax in float32, as fairseq's) and
    ``utils.new_arange`` (as fairseq's). The
    ``one_peace`` packages are registered without running their ``__init__`` (which imports the
    fairseq task and model registries); the model files themselves run unchanged."""
    import types

    import torch.nn.functional as F

    class FairseqDropout(torch.nn.Module):
        def __init__(self, p, module_name=None):
            super().__init__()
            self.p = p

        def forward(self, x, inplace: bool = False):
            return F.dropout(x, self.p, self.training)

    class LayerDropModuleList(torch.nn.ModuleList):
        def __init__(self, p, modules=None):
            super().__init__(modules)
            self.p = p

    class FairseqEncoder(torch.nn.Module):
        def __init__(self, dictionary):
            super().__init__()
            self.dictionary = dictionary

    fq, mods, fd, models, utils = (
        types.ModuleType(n)
        for n in ("fairseq", "fairseq.modules", "fairseq.modules.fairseq_dropout", "fairseq.models", "fairseq.utils")
    )
    utils.softmax = lambda x, dim, onnx_trace=False: F.softmax(x.float(), dim=dim)
    utils.new_arange = (
        lambda x, *size: torch.arange((size or x.size())[-1], device=x.device).expand(*(size or x.size())).contiguous()
    )
    fd.FairseqDropout = mods.FairseqDropout = FairseqDropout
    mods.LayerDropModuleList, mods.fairseq_dropout, models.FairseqEncoder = LayerDropModuleList, fd, FairseqEncoder
    fq.modules, fq.models, fq.utils = mods, models, utils
    sys.modules.update(
        {
            "fairseq": fq,
            "fairseq.modules": mods,
            "fairseq.modules.fairseq_dropout": fd,
            "fairseq.models": models,
            "fairseq.utils": utils,
        }
    )
    for name, path in (("one_peace", repo / "one_peace"), ("one_peace.models", repo / "one_peace" / "models")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules[name] = pkg


# tiny architecture = avel's onepeace_image "tiny" preset; switches as run_scripts/finetune_3B.yaml
OP_DIM, OP_HEADS, OP_FFN, OP_LAYERS, OP_IMAGE, OP_POS_BUCKET = 64, 2, 128, 2, 64, 4
OP_AUDIO_SPEC, OP_AUDIO_BUCKET = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] + [(32, 2, 2)]", 8
# the reference builds the audio bucket matrix for 1024 positions (hard-coded); avel's
# audio_max_positions is set to 1024 for this comparison (its tiny preset uses 64)


@recorder("onepeace_image", "onepeace_audio")
def record_onepeace(args: argparse.Namespace, modality: str) -> None:
    """ONE-PEACE image or audio branch (its adapter + ``TransformerEncoder``, glued as
    ``ModelWrapper.forward`` does for ``encoder_type=modality``) on a tiny configuration."""
    from types import SimpleNamespace as NS

    repo = args.refs / "one-peace"
    _fairseq_standins(repo)
    sys.path.insert(0, str(repo))
    try:
        from one_peace.models.adapter.audio import AudioAdapter
        from one_peace.models.adapter.image import ImageAdapter
        from one_peace.models.transformer.transformer_encoder import TransformerEncoder
    finally:
        sys.path.remove(str(repo))
    grid = OP_IMAGE // 16
    common_cfg = dict(
        dropout=0.0, shrink_alpha=1.0, layernorm_embedding=False, add_type_embedding=False, use_attn_bias=True
    )
    img_cfg = NS(vision_encoder_type="hmlp", bucket_size=OP_POS_BUCKET, rel_bucket_size=grid, **common_cfg)
    aud_cfg = NS(
        feature_encoder_spec=OP_AUDIO_SPEC,
        conv_bias=False,
        abs_pos_type="conv",
        conv_pos_depth=5,
        conv_pos_width=95,
        conv_pos_groups=16,
        conv_pos_pre_ln=False,
        bucket_size=OP_AUDIO_BUCKET,
        **common_cfg,
    )
    enc_cfg = NS(
        dropout=0.0,
        layerdrop=0.0,
        embed_dim=OP_DIM,
        max_positions=1024,
        attention_heads=OP_HEADS,
        drop_path_rate=0.0,
        layers=OP_LAYERS,
        use_text_moe=False,
        use_image_moe=modality == "image",
        use_audio_moe=modality == "audio",
        ffn_embed_dim=OP_FFN,
        activation_dropout=0.0,
        attention_dropout=0.0,
        scale_attn=False,
        use_layer_scale=True,
        layer_scale_init_value=1e-6,
        scale_heads=False,
        magneto_scale_attn=True,
        scale_fc=True,
        encoder=NS(normalize_before=True, layers=OP_LAYERS),
    )

    class Wrapper(torch.nn.Module):  # ModelWrapper's part for this modality (module names as the checkpoint)
        def __init__(self):
            super().__init__()
            if modality == "image":
                self.image_adapter = ImageAdapter(img_cfg, OP_DIM, OP_HEADS, None)
            else:
                self.audio_adapter = AudioAdapter(aud_cfg, OP_DIM, OP_HEADS, None)
            self.fusion_model = TransformerEncoder(
                enc_cfg, None, use_text_norm=True, use_image_norm=True, use_audio_norm=True
            )

    class Top(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder_wrapper = Wrapper()
            self.add_module(f"{modality}_proj", torch.nn.Linear(OP_DIM, OP_DIM))

    seed = {"image": 61, "audio": 62}[modality]
    model = Top()
    buffers = {n for n, _ in model.named_buffers()}  # position_idx, rp_bucket, version: built by the code
    spec = state_spec({k: v for k, v in model.state_dict().items() if k not in buffers})
    state = seeded_state(spec, seed)
    ckpt = args.work / "one-peace.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, ckpt)  # fairseq checkpoints hold the weights under "model"
    missing, unexpected = model.load_state_dict(torch.load(ckpt)["model"], strict=False)
    assert not unexpected and set(missing) <= buffers, (missing, unexpected)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    wrapper = model.encoder_wrapper
    with torch.no_grad():  # ModelWrapper.forward for encoder_type=modality
        if modality == "image":
            inputs = torch.randn(2, 3, OP_IMAGE, OP_IMAGE, generator=g)  # normalised pixels
            info = wrapper.image_adapter(inputs, None, None, None, False)
        else:  # hub_interface.process_audio: layer-normalised 16 kHz waveform, mask of T + 1 False
            wave = torch.randn(2, 16000, generator=g) * 0.1 + torch.sin(torch.arange(16000) * 0.05)
            inputs = torch.nn.functional.layer_norm(wave, wave.shape[-1:])
            frames = wrapper.audio_adapter.embed_audios(inputs).size(1)
            info = wrapper.audio_adapter(inputs, torch.zeros(2, frames + 1, dtype=torch.bool))
        out = wrapper.fusion_model(
            None, info if modality == "image" else None, info if modality == "audio" else None, encoder_type=modality
        )
        tokens = out["encoder_out"][0].transpose(0, 1)[:, -info[0].size(1) :, :]
    write_fixture(
        f"onepeace_{modality}",
        {"input": inputs.numpy(), "output": tokens.numpy()},
        {
            "reference": {
                "repository": "OFA-Sys/ONE-PEACE",
                "commit": git_commit(repo),
                "code": f"one_peace/models/adapter/{modality}.py, one_peace/models/transformer/"
                "transformer_encoder.py TransformerEncoder (+ its layer and attention), glued as "
                f"one_peace_base.ModelWrapper.forward(encoder_type='{modality}'); fairseq stand-ins "
                "(FairseqDropout, LayerDropModuleList, FairseqEncoder, utils.softmax / new_arange)",
            },
            "command": command_line(),
            "torch": torch.__version__,
            "tolerance": TOLERANCE,
            "weights": weights_meta(spec, seed, state, [], ckpt.name),
            "setup": {
                "preset": "tiny",
                "embed_dim": OP_DIM,
                "layers": OP_LAYERS,
                "attention_heads": OP_HEADS,
                "image_size": OP_IMAGE,
                "pos_bucket_size": OP_POS_BUCKET,
                "audio_rel_bucket_size": OP_AUDIO_BUCKET,
                "audio_max_positions": 1024,
            },
            "input": (
                "float32 B x 3 x 64 x 64 normalised images"
                if modality == "image"
                else "float32 B x 16000 layer-normalised 16 kHz waveforms (1 s)"
            ),
            "output": f"{modality} tokens after {modality}_layer_norm, B x (1 + N) x 64",
        },
    )


# -- VGG-19 ---------------------------------------------------------------------------------
@recorder("vgg19_torchvision")
def record_vgg19(args: argparse.Namespace) -> None:
    """torchvision ``vgg19`` ``features`` (pool5) after its ``ImageClassification`` transforms
    (resize and crop set to the 64 x 64 fixture frames)."""
    import torchvision
    from torchvision.models import VGG19_Weights, vgg19

    seed = 51
    net = vgg19(weights=None)
    spec = state_spec({k: v for k, v in net.state_dict().items() if k.startswith("features.")})
    state = seeded_state(spec, seed)  # the features part of vgg19-dcbb9e9d.pth's layout
    ckpt = args.work / "vgg19-dcbb9e9d.pth"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, ckpt)
    missing, unexpected = net.load_state_dict(torch.load(ckpt), strict=False)
    assert not unexpected and all(k.startswith("classifier.") for k in missing), (missing, unexpected)
    net.eval()
    g = torch.Generator().manual_seed(seed)
    frames = torch.stack([smooth_frames(g, 2, 64, 64, 3, 255.0, 0.0) for _ in range(2)])
    frames = frames.round().clamp(0, 255).to(torch.uint8)  # B x L x H x W x 3
    transforms = VGG19_Weights.IMAGENET1K_V1.transforms(crop_size=64, resize_size=64)
    x = transforms(frames.flatten(0, 1).permute(0, 3, 1, 2))  # B*L x 3 x 64 x 64

    def pool5(dtype: torch.dtype) -> np.ndarray:
        with torch.no_grad():
            return net.features.to(dtype)(x.to(dtype)).float().numpy()

    out, out64 = pool5(torch.float32), pool5(torch.float64)
    write_fixture(
        "vgg19_torchvision",
        {"input": frames.numpy(), "output": out, "output_fp64": out64},
        {
            "reference": {
                "repository": "pytorch/vision",
                "commit": f"torchvision {torchvision.__version__}",
                "code": "torchvision.models.vgg19().features (pool5) after "
                "VGG19_Weights.IMAGENET1K_V1.transforms(crop_size=64, resize_size=64)",
            },
            "command": command_line(),
            "torch": torch.__version__,
            "tolerance": TOLERANCE,
            "weights": weights_meta(spec, seed, state, [], ckpt.name),
            "setup": {"image_size": 64, "window_frames": 2, "preprocessing": "torchvision"},
            "input": "uint8 B x L x 64 x 64 x 3 frames",
            "output": "pool5 per frame (B*L) x 512 x 2 x 2",
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", type=Path, required=True, help="directory made by setup_refs.sh")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default REFS/work)")
    ap.add_argument("--out", type=Path, default=FIXTURE_DIR, help="fixture directory (default: the tests')")
    ap.add_argument("--only", nargs="*", default=None, help=f"fixtures to record (default all: {sorted(RECORDERS)})")
    args = ap.parse_args()
    args.refs = args.refs.resolve()
    args.work = (args.work or args.refs / "work").resolve()
    common.FIXTURE_DIR = args.out.resolve()
    torch.set_num_threads(1)
    for name in args.only or sorted(RECORDERS):
        fn = RECORDERS[name]
        if name.startswith("i3d_"):
            fn(args, "flow" if "_flow_" in name else "rgb")
        elif name.startswith("onepeace_"):
            fn(args, name.split("_")[1])
        else:
            fn(args)
        print(f"recorded {name}", flush=True)


if __name__ == "__main__":
    main()
