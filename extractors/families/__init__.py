"""Backbone families: one generic extractor per model library, configured by name.

A family wraps a library's model constructor and its *own* preprocessing object (read from the
library, never re-typed), so a new backbone is a YAML file in ``configs/backbones/`` rather
than a new extractor class (see :mod:`avel.extractors.backbones` and docs/extractors.md).

===================  =======================================  =====================================
family (registry)    library call                             preprocessing read from
===================  =======================================  =====================================
``tv_video``         ``torchvision.models.get_model(name)``   ``get_model_weights(name).DEFAULT.transforms()``
``tv_image``         ``torchvision.models.get_model(name)``   ``get_model_weights(name).DEFAULT.transforms()``
``timm_image``       ``timm.create_model(name, num_classes=0)``  ``timm.data.resolve_data_config`` + ``create_transform``
``clip_image``       ``open_clip.create_model_and_transforms``  its ``preprocess_val``; text tower via ``embed_text``
``hf_video``         ``transformers`` VideoMAE / TimeSformer / X-CLIP  the model's video / image processor
``hf_audio``         ``transformers`` AST / Wav2Vec2 / HuBERT / CLAP   the model's ``AutoFeatureExtractor``
``torchaudio_audio`` ``torchaudio.pipelines.<BUNDLE>``        the bundle's sample rate and waveform normalisation
===================  =======================================  =====================================

Weights: :meth:`FamilyExtractor.from_checkpoint` takes a local file (state dict, ``.pt``/``.pth``/
``.bin``/``.safetensors``; keys and shapes verified; ``weights_sha256`` = the file's sha256, as
for the published extractors), a local directory (``transformers`` ``save_pretrained`` layout)
or a hub / library weight name (downloaded by the library where there is internet). For a
directory or a hub name ``weights_sha256`` is ``state:<sha256>`` over the loaded tensors
(:func:`state_sha256`). Random weights only through ``random_init`` (``"random"``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avel.extractors import weights as W
from avel.extractors.base import RANDOM_WEIGHTS, CheckpointReport, Extractor, ExtractorConfig, on_meta_device

POOLINGS = ("mean", "max", "center")


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """``state:<hex>``: sha256 over the sorted keys, dtypes, shapes and bytes of a state dict
    (the digest of weights that did not come from one local file)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "state:" + h.hexdigest()


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a local ``.safetensors`` file or a torch file (see :func:`weights.load_state_file`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        from safetensors.torch import load_file

        return load_file(str(path))
    return W.load_state_file(path)


def pool_frames(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """``B x L x D`` per-frame rows -> ``B x D`` by ``mean`` / ``max`` / ``center`` (frame ``L // 2``)."""
    if pooling == "mean":
        return x.mean(dim=1)
    if pooling == "max":
        return x.amax(dim=1)
    if pooling == "center":
        return x[:, x.shape[1] // 2]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def strip_classifier(
    model: nn.Module, attrs: tuple[str, ...] = ("fc", "heads", "head", "classifier")
) -> tuple[int, str]:
    """Replace the model's final classification layer by ``Identity``; returns the feature width
    and the state-dict prefix of the removed layer (``"fc."``; a checkpoint's keys under it are
    checked out of the comparison and not loaded).

    Looks for the first attribute of ``attrs`` holding a ``Linear`` / 1x1 ``Conv3d`` or a
    ``Sequential`` ending in one (torchvision: ResNet ``fc``, ViT ``heads``, MViT / Swin3D
    ``head``, S3D / ConvNeXt / EfficientNet ``classifier``).
    """

    def prefix(parent: nn.Module, key: str) -> str:
        return f"{attr}.{key}." if parent is not model else f"{key}."

    for attr in attrs:
        mod = getattr(model, attr, None)
        if mod is None:
            continue
        parent, key = model, attr
        if isinstance(mod, nn.Sequential) and len(mod):
            parent, key, mod = mod, str(len(mod) - 1), mod[-1]
        if isinstance(mod, nn.Linear):
            setattr(parent, key, nn.Identity())
            return int(mod.in_features), prefix(parent, key)
        if isinstance(mod, (nn.Conv3d, nn.Conv2d)) and set(mod.kernel_size) == {1}:
            setattr(parent, key, nn.Identity())
            return int(mod.in_channels), prefix(parent, key)
    raise ValueError(f"{type(model).__name__}: no classification layer found among {attrs} to strip")


def torchvision_classifier(model_name: str) -> tuple[nn.Module, int, str, Any]:
    """torchvision model ``model_name``, randomly initialised, with its classifier stripped.

    Returns:
        (model, feature width, state-dict prefix of the removed layer (see :func:`strip_classifier`),
        the preset transform of the model's ``DEFAULT`` weights).
    """
    from torchvision import models

    model = models.get_model(model_name, weights=None)
    dim, stripped = strip_classifier(model)
    return model, dim, stripped, models.get_model_weights(model_name).DEFAULT.transforms()


def load_torchvision_weights(model: nn.Module, source: str) -> None:
    """Fill ``model`` (from :func:`torchvision_classifier`) with the torchvision weights named ``source``
    (downloads); keys of the stripped classifier are dropped, every other key must match."""
    from torchvision import models

    state = models.get_weight(source).get_state_dict(progress=False)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


def tensor_transform_ops(transform: Any) -> list[Any]:
    """The tensor-capable steps of a torchvision ``Compose`` (Resize, CenterCrop, Normalize...),
    dropping the PIL -> tensor conversions (``ToTensor``, timm ``MaybeToTensor``, open_clip
    ``_convert_to_rgb``) that a ``float [0, 1]`` ``N x 3 x H x W`` batch does not need."""
    from torchvision import transforms as T

    ops = list(getattr(transform, "transforms", [transform]))
    keep = []
    for op in ops:
        name = getattr(op, "__name__", type(op).__name__)
        if name in ("ToTensor", "MaybeToTensor", "_convert_to_rgb", "convert_to_rgb", "PILToTensor"):
            continue
        if not isinstance(op, (T.Resize, T.CenterCrop, T.Normalize)) and type(op).__name__ not in (
            "ResizeKeepRatio",
            "CenterCropOrPad",
            "ResizeMaxSize",
        ):
            raise ValueError(f"cannot run preprocessing step {op!r} on tensors; use preprocessing='pil'")
        keep.append(op)
    return keep


def guard_local_datasets_folder() -> None:
    """Keep ``transformers`` from mistaking avel's top-level ``datasets/`` folder for HuggingFace
    ``datasets``.

    ``python -m pytest`` and ``PYTHONPATH=<repo>`` put the repository root on ``sys.path``, where
    ``importlib.util.find_spec("datasets")`` finds this repository's ``datasets/`` package;
    ``transformers.utils.is_datasets_available()`` (cached) would then be True. The cache is
    primed here with the repository root hidden from ``sys.path``, so the answer reflects an
    installed HuggingFace ``datasets`` only. Call before using transformers (the hf families do).
    """
    spec = importlib.util.find_spec("datasets") if "datasets" not in sys.modules else None
    ours = Path(__file__).resolve().parents[2] / "datasets" / "__init__.py"
    if spec is None or spec.origin is None or Path(spec.origin).resolve() != ours.resolve():
        return
    from transformers.utils import import_utils

    root = ours.parent.parent.resolve()
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    importlib.invalidate_caches()
    try:
        import_utils.is_datasets_available()
    finally:
        sys.path[:] = saved
        importlib.invalidate_caches()


class FamilyExtractor(Extractor):
    """Base of the family extractors: weights from a local file, a directory or a hub name.

    Subclasses build the library model in ``__init__`` (random init), and implement
    :meth:`library_state` (the module whose ``state_dict`` a checkpoint file fills) and
    :meth:`load_pretrained` (hub names / directories through the library's own loader).
    """

    checkpoint_files = {"model": "a state dict file (.pt/.pth/.bin/.safetensors), a directory or a hub name"}
    model: nn.Module  # the library model, built by the subclass

    ignored_prefixes: tuple[str, ...] = ()
    """Checkpoint key prefixes of layers the family removed (classifier heads): not loaded."""

    def library_state(self) -> nn.Module:
        """The library model a checkpoint file's keys refer to (default: ``self.model``)."""
        return self.model

    def load_pretrained(self, source: str) -> None:
        """Load weights named ``source`` (a hub / library name or a directory) via the library."""
        raise FileNotFoundError(f"{self.name}: {source!r} is not a file; this family takes a local state dict file")

    @classmethod
    def check_checkpoint(cls, path: Any, *, preset: str = "full", **config: Any) -> CheckpointReport:
        """Compare a local state dict file with the library model (built on the meta device)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{cls.name}: checkpoint file not found: {p}")
        cfg = cls.make_config(preset, **config)
        state = load_weights_file(p)
        with on_meta_device("meta"):
            module = cls(cfg)
        missing, unexpected, mismatched = W.compare_state_dicts(
            module.library_state().state_dict(), state, ignore_prefixes=module.ignored_prefixes
        )
        state = {k: v for k, v in state.items() if not k.startswith(module.ignored_prefixes)}
        return CheckpointReport(
            extractor=cls.name,
            files={"model": p},
            expected_files={"model": p.name},
            sha256={"model": W.checkpoint_sha256(p)},
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
            state=state,
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: Any,
        *,
        device: str | torch.device = "cpu",
        preset: str = "full",
        checked: CheckpointReport | None = None,
        **config: Any,
    ) -> FamilyExtractor:
        """Weights from a state dict file (verified, file sha256 recorded), else via the library
        (a directory or hub name; ``state:<sha256>`` recorded). ``checked``: this process's
        earlier :meth:`check_checkpoint` of the same file, used instead of reading it again."""
        cfg = cls.make_config(preset, **config)
        p = Path(str(path))
        if p.is_file():
            if checked is not None:
                checked.require_same(cls.name, {"model": p})
            report = checked or cls.check_checkpoint(p, preset=preset, **config)
            if not report.ok:
                raise report.error()
            module = cls(cfg)
            module.library_state().load_state_dict(report.state, strict=True)
            module.weights_sha256 = report.weights_sha256
        else:
            module = cls(cfg)
            module.load_pretrained(str(path))
            module.weights_sha256 = state_sha256(module.library_state().state_dict())
        return module.to(device).eval()

    def _randomize_buffers(self) -> None:  # library models keep their own init
        return None


def check_pooling(name: str, pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"{name}: pooling must be one of {POOLINGS}, got {pooling!r}")


def uint8_frames_to_unit(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``... x H x W x 3`` -> float ``... x 3 x H x W`` in [0, 1]."""
    return batch.movedim(-1, -3).float() / 255.0


def frames_to_pil(frames: torch.Tensor) -> list[Any]:
    """uint8 ``N x H x W x 3`` -> list of PIL RGB images."""
    from PIL import Image

    arr = frames.detach().cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in arr]


__all__ = [
    "FamilyExtractor",
    "POOLINGS",
    "RANDOM_WEIGHTS",
    "ExtractorConfig",
    "check_pooling",
    "frames_to_pil",
    "guard_local_datasets_folder",
    "load_torchvision_weights",
    "load_weights_file",
    "pool_frames",
    "state_sha256",
    "strip_classifier",
    "tensor_transform_ops",
    "torchvision_classifier",
    "uint8_frames_to_unit",
]
