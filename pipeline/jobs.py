"""Which videos an extraction run must process, and which it must skip or refuse.

``plan_jobs`` maps a dataset's video ids to files, then splits them into:

* ``todo``: videos still lacking a requested stream in the store (the resume rule);
* ``done``: videos whose requested streams are all committed (skipped);
* ``previously_failed``: videos with an error record in ``errors.jsonl`` that are still
  incomplete: skipped unless ``retry_failed`` (then they are in ``todo``);
* ``rejected``: ids that cannot be processed safely (a file name that would escape the
  store directory, duplicate ids, missing files), each with the reason; they are recorded
  as errors, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avel.datasets.annotations import unsafe_id_reason
from avel.datasets.config_schema import ConfigError
from avel.datasets.store import ERRORS, MANIFEST, FeatureStore


@dataclass(frozen=True)
class VideoJob:
    video_id: str
    path: Path


@dataclass
class JobPlan:
    todo: list[VideoJob] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    previously_failed: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # error records (video_id, path, stage, ...)


def plan_jobs(
    files: dict[str, Path],
    *,
    store_root: Path,
    streams: Sequence[str],
    retry_failed: bool = False,
    missing: Iterable[str] = (),
    duplicates: dict[str, list[Path]] | None = None,
) -> JobPlan:
    """Split ``files`` (``{video_id: path}``) into todo / done / failed / rejected."""
    plan = JobPlan()
    for vid, paths in (duplicates or {}).items():
        plan.rejected.append(
            {
                "video_id": vid,
                "path": str(paths[0]),
                "stage": "list",
                "error_type": "DuplicateVideoId",
                "message": f"files {[str(p) for p in paths]} all map to video id {vid!r}; keep one",
            }
        )
    for vid in missing:
        reason = unsafe_id_reason(vid)
        plan.rejected.append(
            {
                "video_id": vid,
                "path": None,
                "stage": "list",
                "error_type": "UnsafeVideoId" if reason else "MissingVideoFile",
                "message": reason or f"no video file found for id {vid!r}",
            }
        )
    committed: dict[str, set[str]] = {s: set() for s in streams}
    failed: set[str] = set()
    if (store_root / MANIFEST).exists():
        store = FeatureStore(store_root)
        for s in streams:
            if s in store.streams:
                committed[s] = {v for v in store.videos() if store.has(v, s)}
        if (store_root / ERRORS).exists():
            failed = store.failed_videos()
    for vid, path in files.items():
        reason = unsafe_id_reason(vid)
        if reason:
            plan.rejected.append(
                {"video_id": vid, "path": str(path), "stage": "list", "error_type": "UnsafeVideoId", "message": reason}
            )
            continue
        if all(vid in committed[s] for s in streams):
            plan.done.append(vid)
        elif vid in failed and not retry_failed:
            plan.previously_failed.append(vid)
        else:
            plan.todo.append(VideoJob(vid, Path(path)))
    return plan


def dataset_files(
    dataset: str, *, videos_dir: Path, annotations: Path | None = None
) -> tuple[dict[str, Path], list[str], dict[str, list[Path]]]:
    """``({video_id: path}, missing_ids, duplicate_ids)`` for a dataset.

    ``unav100`` and ``ave`` map annotated ids to ``<videos_dir>/<id>.<ext>``; ``folder``
    takes every video under ``videos_dir`` recursively. Two files mapping to one id
    (``a.mp4`` and ``a.mkv``) are both left out and returned in ``duplicate_ids`` so the
    run records them instead of guessing which one is meant.
    """
    if dataset == "folder":
        from avel.datasets.folder import video_files

        by_id: dict[str, list[Path]] = {}
        for vid, path in video_files(Path(videos_dir)):
            by_id.setdefault(vid, []).append(path)
        files = {vid: paths[0] for vid, paths in by_id.items() if len(paths) == 1}
        duplicates = {vid: paths for vid, paths in by_id.items() if len(paths) > 1}
        return files, [], duplicates
    if annotations is None:
        raise ConfigError(f"--annotations is required for dataset {dataset!r}")
    if dataset == "unav100":
        from avel.datasets.unav100 import load_unav100

        ann = load_unav100(annotations)
    elif dataset == "ave":
        from avel.datasets.ave import load_ave

        ann = load_ave(annotations)
    else:
        raise ConfigError(f"unknown dataset {dataset!r}; expected unav100, ave or folder")
    from avel.datasets.unav100 import find_duplicate_video_files, find_video_files

    found, missing = find_video_files(ann.video_ids(), videos_dir)
    duplicates = find_duplicate_video_files(ann.video_ids(), videos_dir)  # same id, several extensions
    return {v: p for v, p in found.items() if v not in duplicates}, list(missing), duplicates
