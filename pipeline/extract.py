"""``avel extract`` as a library function: dataset -> jobs -> extractors -> store.

Every CLI flag is a field of :class:`ExtractConfig`, so a YAML file can hold the whole job
(``--config``); flags given on the command line override the file. The configuration actually
used is saved in the store manifest (``extra.extract_config``).

Runners:

* ``local``: one process (:func:`avel.pipeline.engine.run_local`): a forked child decodes the
  next chunk while the models extract this one, windows batched across videos.
* ``ray``: the distributed pipeline (:mod:`avel.pipeline.ray_extract`): decode tasks on CPU
  workers, a fixed actor pool per extractor batching windows across videos, one writer.
* ``auto`` (default): :func:`avel.pipeline.tuning.choose_runner`.

The driver builds the extractors on the meta device only (plans, specs, sha256); the models
are built where they run (the local runner: while the first chunk decodes; Ray: in the actors).
Unset batch sizes, actors and threads are chosen by :mod:`avel.pipeline.tuning`; the report's
``settings`` says what was chosen and why.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from avel.datasets.config_schema import ConfigError, dataclass_from_dict, read_yaml
from avel.datasets.store import StoreWriter, append_error
from avel.datasets.store_remote import is_remote, stage_folder
from avel.datasets.unav100 import VIDEO_EXTENSIONS
from avel.pipeline.cluster import ClusterConfig
from avel.pipeline.engine import RunReport, build_stream_extractors, run_local
from avel.pipeline.jobs import dataset_files, plan_jobs
from avel.pipeline.tuning import PRECISIONS


@dataclass
class ExtractConfig:
    """One extraction job.

    Args:
        dataset: ``unav100`` | ``ave`` | ``folder``.
        videos: video directory.
        annotations: annotation file (unav100, ave).
        extractors: registry names; each becomes a store stream of the same name.
        weights: ``{extractor: checkpoint path}``.
        random_weights: allow random weights for extractors without ``weights`` (tests, demo;
            recorded as ``weights_sha256: random``).
        preset: ``full`` (faithful) or ``tiny`` (tests, demo).
        extractor_options: ``{extractor: {config field: value}}``.
        out: store directory.
        runner: ``auto`` (default: local for small jobs on one machine, Ray for a cluster
            address, several GPUs or a big job; :func:`avel.pipeline.tuning.choose_runner`),
            ``local`` or ``ray``.
        auto_ray_min_videos: with ``runner: auto`` on a machine of 4 or more CPUs, jobs of at
            least this many videos run on Ray.
        cluster: where the ray runner runs (:class:`avel.pipeline.cluster.ClusterConfig`:
            address, runtime_env, ...; default: ``RAY_ADDRESS`` or an embedded local instance).
        batch_size: windows per device batch (None: each extractor's ``cpu_batch_size`` /
            ``gpu_batch_size``, e.g. 1 for I3D RGB on a CPU).
        gpus_per_actor: fraction of a GPU per extractor actor (0: CPU; None: the GPUs shared
            evenly by the extractors when the cluster has any, else 0).
        actors_per_extractor: size of each extractor's fixed actor pool (None: one per CPU, or
            one per GPU, shared among the extractors).
        threads_per_actor: torch threads of a CPU extractor actor (ray runner; 0: the cluster's
            CPUs divided among the actors). Rows are bitwise reproducible for a fixed value.
        decode_workers: concurrent decode tasks.
        decode_timeout_s: per-video decode limit (the worker is killed after it).
        chunk_s: long videos are decoded and extracted in chunks of about this many seconds.
        first_chunk_s: local runner: the first video of the run starts with a chunk of this
            many seconds, so the model starts after a short decode rather than a whole chunk's
            (nothing decodes ahead of it; its other chunks are ``chunk_s`` long). Rows do not
            depend on the chunking. A value >= ``chunk_s``: no short chunk.
        decode_memory_gb: Ray ``memory=`` reserved per decode task (the scheduler does not
            start more decode tasks on a node than its memory allows; heap memory is otherwise
            not accounted). None: estimated from the decode request and ``chunk_s``
            (:func:`avel.pipeline.ray_extract.decode_task_memory_bytes`); 0: no reservation.
        shard_max_videos: videos per committed shard.
        retry_failed: redo videos recorded in errors.jsonl.
        fuse_models: run the models fused for inference (``Extractor.fuse_for_inference``: I3D's
            BatchNorm folded into its convolutions, ~10-15 % less CPU time per window; rows move
            by float32 rounding, up to 1.2e-4 on the parity fixtures). False: the modules as loaded.
        device: device of the local runner (``auto``: cuda when available).
        precision: compute precision of the models, both runners: ``fp32`` (default: the
            published presets reproduce the published features only in fp32), ``bf16`` or
            ``fp16`` (``torch.autocast`` on the device: faster on GPUs, rows differ by the
            reduced precision; windows reach a GPU through pinned memory either way).
    """

    dataset: Literal["unav100", "ave", "folder"] = "folder"
    videos: str = ""
    annotations: str | None = None
    extractors: list[str] = field(default_factory=list)
    weights: dict[str, str] = field(default_factory=dict)
    random_weights: bool = False
    preset: str = "full"
    extractor_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    out: str = ""
    runner: Literal["auto", "ray", "local"] = "auto"
    auto_ray_min_videos: int = 16
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    batch_size: int | None = None
    gpus_per_actor: float | None = None
    actors_per_extractor: int | None = None
    threads_per_actor: int = 0
    decode_workers: int = 1
    decode_timeout_s: float = 600.0
    chunk_s: float = 30.0
    first_chunk_s: float = 4.0
    decode_memory_gb: float | None = None
    shard_max_videos: int = 256
    retry_failed: bool = False
    fuse_models: bool = True
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # avel.pipeline.tuning.PRECISIONS

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExtractConfig:
        """Strict: unknown keys and values of the wrong type are errors naming the file and key."""
        data = read_yaml(path)
        if data is None:
            data = {}
        try:
            return dataclass_from_dict(cls, data, source=str(path))
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def check_extractor_options(self) -> None:
        """Each extractor's options merged into its config as extraction will merge them: an
        unknown extractor, key or a value of the wrong type is a :class:`ConfigError` naming
        ``extractor_options.<extractor>`` and the key."""
        from avel.extractors.registry import get

        for name, options in self.extractor_options.items():
            try:
                get(name).make_config(self.preset, **(options or {}))
            except KeyError as e:
                raise ConfigError(f"extractor_options.{name}: {e.args[0]}") from None
            except (TypeError, ValueError) as e:
                raise ConfigError(f"extractor_options.{name}: {e}") from None

    def validate(self) -> None:
        """Raises :class:`ConfigError` for a missing option (a usage error, exit code 2); the values
        were checked when the job was built (field types, :meth:`__post_init__`)."""
        if not self.videos:
            raise ConfigError("videos (the video directory) is required")
        if not self.out:
            raise ConfigError("out (the store directory) is required")
        if not self.extractors:
            raise ConfigError("name at least one extractor (see `avel extractors list`)")
        unknown = sorted(set(self.weights) - set(self.extractors))
        if unknown:
            raise ConfigError(f"weights given for extractors that are not requested: {unknown}")
        self.check_extractor_options()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:  # the Literal of the field, for keyword construction
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        optional = {"batch_size", "actors_per_extractor", "gpus_per_actor"}  # None: chosen for the machine
        for key, low, inclusive in (
            ("batch_size", 1, True),
            ("actors_per_extractor", 1, True),
            ("threads_per_actor", 0, True),
            ("decode_workers", 1, True),
            ("shard_max_videos", 1, True),
            ("gpus_per_actor", 0, True),
            ("chunk_s", 0, False),
            ("first_chunk_s", 0, False),
            ("decode_timeout_s", 0, False),
            ("auto_ray_min_videos", 0, True),
        ):
            value = getattr(self, key)
            if value is None and key in optional:
                continue
            ok = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and (value >= low if inclusive else value > low)
            )
            if not ok:
                raise ValueError(f"{key} must be a number {'>=' if inclusive else '>'} {low}, got {value!r}")
        m = self.decode_memory_gb
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0):
            raise ValueError(
                f"decode_memory_gb must be a number >= 0 (0: no reservation) or null (estimated), got {m!r}"
            )


STORE_INHERITED = ("dataset", "videos", "annotations")
"""Fields ``avel extract --store S`` takes from the store's last extraction unless given."""


def config_for_store(store: str | Path, base: ExtractConfig | None = None, **given: Any) -> ExtractConfig:
    """The job that adds streams to an existing store: ``out = store``; ``dataset``, ``videos``
    and ``annotations`` from the store's last extraction (``manifest.json`` ``extra.extract_config``)
    unless ``given``; everything else from ``base`` (a job file) and ``given``.

    Raises:
        ValueError: the store has no manifest, or no recorded extraction and no ``videos`` given.
    """
    from avel.datasets.store import MANIFEST

    root = Path(store)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"--store {root}: no {MANIFEST} there (create the store with --out first)")
    previous = (json.loads(manifest_path.read_text(encoding="utf-8")).get("extra") or {}).get("extract_config") or {}
    cfg = dataclasses.replace(base or ExtractConfig(), out=str(root))
    inherited = {k: previous[k] for k in STORE_INHERITED if k in previous and k not in given}
    cfg = dataclasses.replace(cfg, **inherited, **given)
    if not cfg.videos:
        raise ValueError(
            f"--store {root}: {MANIFEST} records no extraction (extra.extract_config.videos); "
            f"pass --videos (and --dataset / --annotations)"
        )
    return cfg


def run_extract(cfg: ExtractConfig, *, progress: Callable[[RunReport, int], None] | None = None) -> dict[str, Any]:
    """Run one extraction job; returns the final report (also written to ``STORE/report.json``)."""
    import torch

    from avel.pipeline.tuning import available_cpus, choose_batch_sizes, choose_runner, precision_why

    cfg.validate()
    # s3://... videos are staged into the local cache first (decoders need local files)
    videos_dir = stage_folder(cfg.videos, VIDEO_EXTENSIONS) if is_remote(cfg.videos) else Path(cfg.videos)
    files, missing, duplicates = dataset_files(
        cfg.dataset, videos_dir=videos_dir, annotations=Path(cfg.annotations) if cfg.annotations else None
    )
    # plans, specs and sha256 only: the models are built where they run
    extractors = build_stream_extractors(
        cfg.extractors,
        weights=cfg.weights,
        random_weights=cfg.random_weights,
        preset=cfg.preset,
        overrides=cfg.extractor_options,
        spec_only=True,
        keep_checked=cfg.runner != "ray",  # a local run builds its models here: they reuse the reads
    )
    writer = StoreWriter(
        cfg.out,
        dataset=cfg.dataset,
        streams={se.stream: se.spec() for se in extractors},
        shard_max_videos=cfg.shard_max_videos,
        extra={"extract_config": dataclasses.asdict(cfg)},
    )
    out = writer.root  # the store, or for s3://... its local cache (shards built there, then uploaded)
    plan = plan_jobs(
        files,
        store_root=out,
        streams=[se.stream for se in extractors],
        retry_failed=cfg.retry_failed,
        missing=missing,
        duplicates=duplicates,
    )
    for rec in plan.rejected:
        append_error(out, rec)
    total = len(plan.todo)
    gpus = 0 if cfg.device == "cpu" else torch.cuda.device_count()
    runner, runner_why = choose_runner(
        cfg.runner,
        address=cfg.cluster.resolved_address(),
        videos=total,
        cpus=available_cpus(),
        gpus=gpus,
        auto_ray_min_videos=cfg.auto_ray_min_videos,
    )
    try:
        if runner == "local":
            device = torch.device(
                "cuda"
                if cfg.device == "auto" and torch.cuda.is_available()
                else ("cpu" if cfg.device == "auto" else cfg.device)
            )
            sizes, sizes_why = choose_batch_sizes(cfg.batch_size, extractors, device.type)

            def load():
                checked = {se.stream: se.checked for se in extractors if se.checked is not None}
                for se in extractors:
                    se.checked = None  # the tensors read are the model's now: not held twice
                return build_stream_extractors(
                    cfg.extractors,
                    weights=cfg.weights,
                    random_weights=cfg.random_weights,
                    preset=cfg.preset,
                    device=device,
                    overrides=cfg.extractor_options,
                    fuse=cfg.fuse_models,
                    checked=checked,
                )

            report = run_local(
                plan.todo,
                extractors,
                writer,
                batch_size=sizes,
                device=device,
                decode_timeout_s=cfg.decode_timeout_s,
                chunk_s=cfg.chunk_s,
                first_chunk_s=cfg.first_chunk_s,
                load=load,
                progress=(lambda r: progress(r, total)) if progress else None,
                precision=cfg.precision,
            )
            report.settings = {
                "runner": "local",
                "device": str(device),
                "batch_size": sizes,
                "torch_threads": torch.get_num_threads(),
                "precision": cfg.precision,
                "why": {
                    "batch_size": sizes_why,
                    "torch_threads": "torch's default: one per core of this process",
                    "precision": precision_why(cfg.precision),
                },
            }
        else:
            for se in extractors:
                se.checked = None  # the models are built in the actors
            from avel.pipeline.ray_extract import run_ray

            report = run_ray(
                plan.todo, cfg, extractors, writer, progress=(lambda r: progress(r, total)) if progress else None
            )
            report.settings.setdefault("runner", "ray")
    except BaseException:
        writer.abort()  # release this writer's claims and lease; committed shards stay
        raise
    writer.close()  # commits the rest, refreshes manifest.json, releases claims
    report.settings.setdefault("why", {})["runner"] = runner_why
    report.videos_skipped += len(plan.done) + len(plan.previously_failed)
    report.videos_failed += len(plan.rejected)
    report.failures = plan.rejected + report.failures
    result = report.as_dict()
    result.update(
        {
            "store": cfg.out,
            "videos_total": len(files) + len(missing) + len(duplicates),
            "previously_failed_skipped": len(plan.previously_failed),
            "shards_written": len(writer.shards_written),
            "bytes_written": sum((out / "shards" / s).stat().st_size for s in writer.shards_written),
        }
    )
    (out / "report.json").write_text(json.dumps(result, indent=1, default=str))
    return result
