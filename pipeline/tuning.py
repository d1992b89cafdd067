"""Settings that fit the machine: runner, batch sizes, actors and threads when the user gives none.

Every choice comes with the reason, recorded in the run's report (``settings``) next to the
value, and every setting stays an override (``--runner``, ``--batch-size``,
``--actors-per-extractor``, ``--threads-per-actor``, ``--gpus-per-actor``).

* Batch size: the extractor's ``cpu_batch_size`` / ``gpu_batch_size``
  (:class:`avel.extractors.base.Extractor`): a CPU wants small batches (I3D RGB: 1; per
  window, batch 32 cost 22-28 % more on the 2-core machine), a GPU large ones (32).
* Ray pools: on CPUs one torch thread per actor and as many actors as CPUs (shared among the
  extractors): one-thread actors gave 1.20-1.26 I3D windows/s against 0.85-0.93 for one actor
  of 2 threads at batch 32 on 2 cores. On GPUs one actor per GPU and extractor, the GPU shared
  evenly by the extractors.
* Runner (``auto``): Ray when a cluster address is set, when the machine has several GPUs (the
  local runner drives one), or for a job of at least ``auto_ray_min_videos`` videos on a machine
  with at least :data:`AUTO_RAY_MIN_CPUS` CPUs; otherwise local, which pays no Ray start-up
  (10-12 s measured on 2 cores) and on 2 cores ran as fast as tuned Ray (1.21-1.27 against
  1.20-1.26 windows/s for I3D RGB).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16")
"""Compute precisions of the extraction models (``--precision``, both runners): ``fp32`` (the
default: the published presets reproduce the published features in it) or autocast to
bfloat16 / float16 (faster on GPUs; rows differ from the fp32 ones by the reduced precision)."""

AUTO_RAY_MIN_CPUS = 4  # below this, Ray's processes compete with the model for the same cores


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_batch_sizes(
    batch_size: int | None, extractors: Sequence[Any], device_type: str
) -> tuple[dict[str, int], dict[str, str]]:
    """``({stream: batch size}, {stream: why})``: ``batch_size`` when given, else the
    extractor's preferred size on ``device_type`` (``cpu`` / ``cuda``)."""
    sizes, why = {}, {}
    for se in extractors:
        if batch_size is not None:
            sizes[se.stream], why[se.stream] = int(batch_size), "given (--batch-size)"
            continue
        ext = se.extractor
        gpu = device_type == "cuda"
        sizes[se.stream] = int(ext.gpu_batch_size if gpu else ext.cpu_batch_size)
        why[se.stream] = (
            f"{ext.name} on {'a GPU' if gpu else 'the CPU'}: its "
            f"{'gpu' if gpu else 'cpu'}_batch_size ({'large batches fill the GPU' if gpu else 'small batches keep the memory-bound layers in cache'})"
        )
    return sizes, why


def choose_runner(
    runner: str, *, address: str | None, videos: int, cpus: int, gpus: int, auto_ray_min_videos: int
) -> tuple[str, str]:
    """``(local | ray, why)`` for ``runner`` (``auto``, ``local`` or ``ray``)."""
    if runner != "auto":
        return runner, f"given (--runner {runner})"
    if address:
        return "ray", f"a Ray cluster address is set ({address})"
    if gpus > 1:
        return "ray", f"{gpus} GPUs: the local runner drives one"
    if videos >= auto_ray_min_videos and cpus >= AUTO_RAY_MIN_CPUS:
        return "ray", (
            f"{videos} videos >= auto_ray_min_videos ({auto_ray_min_videos}) on {cpus} CPUs: "
            f"parallel decode and one actor per CPU repay Ray's start-up"
        )
    reason = (
        f"{videos} video(s) < auto_ray_min_videos ({auto_ray_min_videos})"
        if videos < auto_ray_min_videos
        else f"{cpus} CPUs < {AUTO_RAY_MIN_CPUS}"
    )
    return "local", f"{reason}: one process, no Ray start-up"


def choose_ray_pool(
    *,
    actors_per_extractor: int | None,
    threads_per_actor: int,
    gpus_per_actor: float | None,
    extractors: int,
    cpus: float,
    gpus: float,
) -> dict[str, Any]:
    """Actors per extractor, torch threads per CPU actor and GPU fraction per actor for a
    cluster of ``cpus`` / ``gpus``; returns the values and ``why`` for each."""
    why: dict[str, str] = {}
    if gpus_per_actor is None:
        gpus_per_actor = round(1.0 / max(1, extractors), 4) if gpus >= 1 else 0.0
        why["gpus_per_actor"] = (
            f"{gpus:g} GPU(s): each of {extractors} extractor(s) gets {gpus_per_actor:g} of one"
            if gpus >= 1
            else "no GPU in the cluster: CPU actors"
        )
    else:
        why["gpus_per_actor"] = "given (--gpus-per-actor)"
    gpu = gpus_per_actor > 0
    if actors_per_extractor is None:
        if gpu:
            actors_per_extractor = max(1, int(gpus / (gpus_per_actor * extractors) + 1e-9))
            why["actors_per_extractor"] = "one actor per GPU and extractor"
        else:
            actors_per_extractor = max(1, int(cpus) // max(1, extractors))
            why["actors_per_extractor"] = (
                f"{int(cpus)} CPUs shared by {extractors} extractor(s): one single-threaded actor per CPU"
            )
    else:
        why["actors_per_extractor"] = "given (--actors-per-extractor)"
    if threads_per_actor:
        threads, why["threads_per_actor"] = int(threads_per_actor), "given (--threads-per-actor)"
    elif gpu:
        threads, why["threads_per_actor"] = 1, "GPU actor: the GPU computes"
    else:
        threads = max(1, int(cpus) // max(1, actors_per_extractor * extractors))
        why["threads_per_actor"] = f"{int(cpus)} CPUs / {actors_per_extractor * extractors} actor(s)"
    return {
        "actors_per_extractor": actors_per_extractor,
        "threads_per_actor": threads,
        "gpus_per_actor": gpus_per_actor,
        "why": why,
    }


def precision_why(precision: str) -> str:
    """Why the models run in ``precision`` (the report's ``settings.why.precision``)."""
    if precision == "fp32":
        return "fp32 (the default): the published presets reproduce the published features in fp32"
    return f"given (--precision {precision}): autocast to {precision}; rows differ from fp32 by its rounding"


def settings_report(values: Mapping[str, Any], why: Mapping[str, Any]) -> dict[str, Any]:
    """The report's ``settings``: the chosen values and, under ``why``, the reasons."""
    return {**values, "why": dict(why)}
