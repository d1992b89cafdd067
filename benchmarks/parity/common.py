"""Shared by the parity recorders (run outside the repo's code) and the comparisons (our code).

A parity fixture is ``tests/extractors/parity/<name>.npz`` (inputs, the reference's outputs and
any weights the reference produced itself, e.g. BatchNorm statistics) plus ``<name>.json`` (which
repository, commit, file and command produced it; the checkpoint's key list; the weights seed and
digest). Weights too large to store are regenerated from the seed by :func:`seeded_state`, which
depends only on ``(key, shape)`` pairs and the seed, and checked against the recorded digest, so a
test rebuilds bit for bit the checkpoint file the reference ran.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "tests" / "extractors" / "parity"
TOLERANCE = 1e-4
"""Max abs difference allowed between our fp32 output and the reference's."""


def state_spec(state: Mapping[str, torch.Tensor]) -> list[list[Any]]:
    """``[[key, shape, dtype], ...]`` of a state dict, in its order (recorded in the sidecar)."""
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state.items()]


def seeded_state(
    spec: Sequence[Sequence[Any]], seed: int, stored: Mapping[str, np.ndarray] | None = None
) -> dict[str, torch.Tensor]:
    """Random weights from ``(key, shape, dtype)`` and a seed, in the spec's order.

    Rule by key: conv / linear weights (ndim >= 2) ``N(0, 2 / fan_in)``; 1-D ``weight``
    (normalisation scale) U(0.5, 1.5); biases U(-0.1, 0.1); ``running_mean`` U(-0.1, 0.1);
    ``running_var`` U(0.5, 1.5); integer buffers 0. Keys in ``stored`` take the stored array
    instead (their draw is still made, so the other keys do not depend on what is stored).
    """
    g = torch.Generator().manual_seed(seed)
    stored = stored or {}
    out: dict[str, torch.Tensor] = {}
    for key, shape, dtype in spec:
        shape = tuple(shape)
        if not dtype.startswith("float"):
            out[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        leaf = key.rsplit(".", 1)[-1]
        u = torch.rand(shape, generator=g)
        n = torch.randn(shape, generator=g)
        if leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
            value = 0.5 + u
        elif leaf in ("bias", "running_mean") or len(shape) <= 1:
            value = 0.2 * u - 0.1
        else:
            value = n * math.sqrt(2.0 / max(1, int(np.prod(shape[1:]))))
        out[key] = torch.as_tensor(stored[key]).reshape(shape).float() if key in stored else value
    return out


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over keys, shapes, dtypes and raw values (independent of the file format)."""
    h = hashlib.sha256()
    for k, v in state.items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{list(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def write_fixture(
    name: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], out_dir: Path | None = None
) -> Path:
    """``<name>.npz`` (compressed) + ``<name>.json`` in ``out_dir`` (default :data:`FIXTURE_DIR`,
    which ``record.py --out`` changes); returns the npz path."""
    out_dir = out_dir or FIXTURE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.npz"
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})
    (out_dir / f"{name}.json").write_text(json.dumps(dict(meta), indent=1, sort_keys=True) + "\n")
    return path


def load_fixture(name: str, fixture_dir: Path = FIXTURE_DIR) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and sidecar of a recorded fixture."""
    npz = fixture_dir / f"{name}.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"parity fixture {npz} missing; record it with benchmarks/parity/record.py")
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((fixture_dir / f"{name}.json").read_text())


def fixture_names(fixture_dir: Path = FIXTURE_DIR) -> list[str]:
    """Names of the recorded fixtures."""
    return sorted(p.stem for p in fixture_dir.glob("*.json"))


def rebuild_checkpoint(
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    path: Path,
    *,
    entry: str = "weights",
    tamper: Callable[[dict], None] | None = None,
    wrap: str | None = None,
) -> Path:
    """Write the checkpoint file the reference ran (``meta[entry]``: spec, seed, digest, stored
    keys with arrays ``<entry>/<key>``) to ``path``; raise if the digest differs. ``tamper``
    may change the state dict after the check (tests that show a wrong weight is caught).
    Without ``tamper``, a file already at ``path`` from an earlier call is reused. ``wrap``
    nests the state dict under that key (fairseq checkpoints: ``"model"``)."""
    w = meta[entry]
    marker = path.with_name(path.name + ".digest")
    if tamper is None and path.is_file() and marker.is_file() and marker.read_text() == w["digest"]:
        return path
    stored = {k: arrays[f"{entry}/{k}"] for k in w.get("stored", [])}
    state = seeded_state(w["spec"], w["seed"], stored)
    state.update({k: state[v] for k, v in w.get("aliases", {}).items()})  # keys sharing one tensor
    digest = state_digest(state)
    if digest != w["digest"]:
        raise AssertionError(
            f"{path.name}: regenerated weights differ from the recorded ones (digest {digest} "
            f"vs {w['digest']}); this torch draws other random numbers: re-record"
        )
    if tamper is not None:
        tamper(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {w.get("key_prefix", "") + k: v for k, v in state.items()}
    torch.save({wrap: state} if wrap else state, path)
    if tamper is None:
        marker.write_text(w["digest"])
    return path


def max_abs_diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a - b).max())
