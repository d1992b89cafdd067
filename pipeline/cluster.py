"""Cluster settings shared by every Ray-backed command (extraction, distributed training).

One section, the same in an extraction YAML and a training YAML::

    cluster:
      address: ray://head:10001     # or "auto" on a cluster node; omitted: RAY_ADDRESS, else embedded
      runtime_env: {env_vars: {OMP_NUM_THREADS: "1"}}
      storage_path: /shared/avel    # Ray Train results and checkpoints; seen by every node
      namespace: avel

Videos, stores and run directories must lie on storage every node sees (NFS, a shared
volume, ...): workers open them by the same path as the driver.

Ray is imported only inside :meth:`ClusterConfig.init_ray`, so the dataclass can be loaded,
validated and saved without Ray.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from avel.datasets.config_schema import dataclass_from_dict

# Ray's own switch for single-machine instances (its default on macOS and Windows): with it
# off, the node address is the loopback address and every server binds to it.
_RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """Keep a Python SIGTERM handler installed before (the ``avel`` command's) while Ray starts.

    ``ray.init`` installs handlers that skip the caller's cleanup: ``sys.exit(15)`` while
    starting, then a node handler, and the core worker's C++ failure handler, which aborts the
    driver. A SIGTERM left a half-started instance running until its processes noticed the
    driver was gone (66-74 s measured, benchmarks/ray_interrupt.py). While ours is installed,
    Ray's Python handlers are not, and ours is re-installed afterwards (at the C level too); it
    raises, and :meth:`ClusterConfig.init_ray` / the caller's ``finally`` shut Ray down. The
    C++ failure handler must be off before Ray is imported (``RAY_DISABLE_FAILURE_SIGNAL_HANDLER=1``,
    set by the ``avel`` command: no native stack dumps on crashes). Main thread only."""
    import signal
    import threading

    from ray._private import utils as ray_utils

    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    keep = main and callable(before)
    saved = ray_utils.set_sigterm_handler
    if keep:
        ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = saved
        if keep:
            signal.signal(signal.SIGTERM, before)  # at the C level too


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """While an embedded instance starts: its node address is 127.0.0.1, so the GCS, raylet,
    object manager, agents and workers listen on loopback only (nothing reachable from other
    machines). Ray otherwise resolves a loopback ``_node_ip_address`` to the machine's
    routable address and listens on all interfaces."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_RAY_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_RAY_CLUSTER_ENV] = "0"  # inherited by the processes Ray starts now
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_RAY_CLUSTER_ENV, None)
        else:
            os.environ[_RAY_CLUSTER_ENV] = saved_env


# processes of an embedded head that a job on this machine alone never uses, by the ``Node``
# method that starts each: the autoscaler monitor (it also held ``ray.shutdown`` for 1 s, the
# grace of its SIGTERM), the log monitor (it forwards worker output to the driver, off with
# ``log_to_driver=False``) and the API server (dashboard.py with its usage-stats module only:
# ``ray.init`` waited for it before starting the raylet, 1-3 s measured)
_UNUSED_HEAD_PROCESSES = ("start_monitor", "start_log_monitor", "start_api_server")


@contextlib.contextmanager
def _lean_head() -> Iterator[None]:
    """While an embedded instance starts: :data:`_UNUSED_HEAD_PROCESSES` are not started."""
    from ray._private.node import Node

    saved = {name: Node.__dict__[name] for name in _UNUSED_HEAD_PROCESSES if name in Node.__dict__}
    for name in saved:
        setattr(Node, name, lambda self, *args, **kwargs: None)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(Node, name, method)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment while an embedded instance starts: the raylet
    inherits it, and so does every worker it starts. Actors given an environment this way need
    no ``runtime_env`` of their own, which would make Ray start them a worker of that
    environment (and ask its runtime-env agent first) beside the ordinary ones."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class ClusterConfig:
    """Where Ray-backed work runs.

    Args:
        address: Ray cluster address (``auto``, ``HOST:6379``, ``ray://HOST:10001``). ``None``:
            the ``RAY_ADDRESS`` environment variable, and when that is unset an embedded local
            instance started for this command and stopped after it; it listens on 127.0.0.1
            only and has no dashboard (see docs/cluster.md for the ports of a real cluster).
        runtime_env: Ray runtime environment for every task and actor (``env_vars``,
            ``working_dir``, ...); see the Ray documentation.
        storage_path: shared directory for Ray Train results and checkpoints (distributed
            training). ``None``: the run directory itself, which must then be shared.
        namespace: Ray namespace (``None``: an anonymous one).
        num_cpus: CPUs of an embedded local instance (``None``: all); ignored on a cluster.
    """

    address: str | None = None
    runtime_env: dict[str, Any] = field(default_factory=dict)
    storage_path: str | None = None
    namespace: str | None = None
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"num_cpus must be a positive integer, got {self.num_cpus!r}")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<config>") -> ClusterConfig:
        """Strict (:func:`avel.datasets.config_schema.dataclass_from_dict`): unknown keys, wrong
        types and bad values are a ``ValueError`` naming ``source`` and ``cluster.<key>``."""
        if data is None:
            return cls()
        return dataclass_from_dict(cls, data, path="cluster", source=source)

    def resolved_address(self) -> str | None:
        """The address Ray will connect to; ``None`` means an embedded local instance."""
        return self.address or os.environ.get("RAY_ADDRESS") or None

    def init_ray(self, *, lean: bool = False, worker_env: dict[str, str] | None = None) -> bool:
        """Connect to (or start) Ray; returns True when this call started it, so the caller
        knows to shut it down. Already initialized: nothing happens, returns False.

        A SIGTERM handler installed before (the ``avel`` command's, which raises so that
        ``finally`` blocks shut Ray down as on Ctrl-C) stays in place (:func:`_keep_sigterm_handler`);
        an embedded instance listens on 127.0.0.1 only (:func:`_loopback_only`) and is stopped
        with :func:`shutdown_ray`.

        Args:
            lean: an embedded instance starts without the head processes a job on this
                machine never uses (:data:`_UNUSED_HEAD_PROCESSES`: monitor, log monitor,
                API server) and without prestarting a worker per CPU.
            worker_env: environment variables of every worker of an embedded instance
                (inherited from the raylet; :func:`embedded_worker_env` tells the caller they
                were set). Ignored when connecting to a cluster: pass them per task there.
        """
        import ray

        if ray.is_initialized():
            return False
        address = self.resolved_address()
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.runtime_env:
            kwargs["runtime_env"] = self.runtime_env
        if self.namespace:
            kwargs["namespace"] = self.namespace
        if address is None and self.num_cpus is not None:
            kwargs["num_cpus"] = self.num_cpus
        if address is None and lean:
            kwargs["_system_config"] = {
                # no worker per CPU started when the driver connects: the caller's actors and
                # tasks start the workers they need (with the prestarted ones, one more worker
                # was started and never used: ~0.9 CPU s measured on the 2-core machine)
                "prestart_worker_first_driver": False,
                # workers starting at once (Ray's default: one per CPU): the decode task's
                # worker no longer waits for the two actors' workers of a 2-core job (1-3 s)
                "worker_maximum_startup_concurrency": max(4, os.cpu_count() or 1),
            }
        try:
            with _keep_sigterm_handler():
                if address is not None:
                    ray.init(address=address, **kwargs)
                    return True
                # "local": a new embedded instance even when a `ray start` cluster runs on this
                # machine (address=None would connect to it); loopback only.
                global _embedded_baseline, _embedded_env
                _embedded_baseline = _descendants()
                with (
                    _loopback_only(),
                    _environment(worker_env or {}),
                    _lean_head() if lean else contextlib.nullcontext(),
                ):
                    ray.init(address="local", _node_ip_address=LOOPBACK, **kwargs)
                _embedded_env = dict(worker_env or {})
        except BaseException:  # interrupted or failed while starting: stop what was started
            shutdown_ray()
            raise
        return True


# descendants of this process before it started an embedded instance (None: it started none)
_embedded_baseline: dict[int, int] | None = None
# the environment every worker of the embedded instance this process started inherited
_embedded_env: dict[str, str] | None = None


def embedded_worker_env() -> dict[str, str] | None:
    """The ``worker_env`` every worker of the running embedded instance inherited (given to
    :meth:`ClusterConfig.init_ray` by this process), or ``None`` when Ray runs otherwise (a
    cluster, or an instance started elsewhere): then tasks need a ``runtime_env``."""
    import ray

    return dict(_embedded_env) if _embedded_env is not None and ray.is_initialized() else None


def _descendants() -> dict[int, int]:
    """``{pid: start time}`` of this process's live descendants (Linux ``/proc``; else empty)."""
    from pathlib import Path

    kids: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    try:
        entries = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return {}
    for d in entries:
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X"):
            kids.setdefault(int(fields[1]), []).append(int(d))
            starts[int(d)] = int(fields[19])
    out: dict[int, int] = {}
    todo = list(kids.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        out[pid] = starts[pid]
        todo += kids.get(pid, [])
    return out


def _alive(procs: dict[int, int]) -> dict[int, int]:
    """The entries of ``procs`` still running (same pid and start time, not a zombie)."""
    from pathlib import Path

    out = {}
    for pid, start in procs.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[19]) == start:
            out[pid] = start
    return out


def ray_error_types() -> tuple[type[BaseException], ...]:
    """Ray's exception base class (``ray.exceptions.RayError``), or nothing without Ray: lets
    callers (the CLI's exit codes) recognise Ray failures without importing Ray themselves."""
    try:
        import ray.exceptions as rex
    except ImportError:
        return ()
    return (rex.RayError,)


def shutdown_ray(*, grace_s: float = 5.0) -> None:
    """``ray.shutdown()``, then stop what it leaves of the instance this process started.

    ``ray.shutdown`` kills the GCS and raylet of an embedded instance, but the raylet's agents
    (dashboard agent, runtime-env agent) only notice its death after about a minute (68-78 s
    measured, benchmarks/ray_interrupt.py). When :meth:`ClusterConfig.init_ray` started an
    embedded instance, every descendant of this process that appeared since and still runs
    after the shutdown gets SIGTERM, then SIGKILL after ``grace_s``. A cluster this process
    merely connected to is only disconnected from.
    """
    import signal
    import time

    import ray

    global _embedded_baseline, _embedded_env
    baseline, _embedded_baseline, _embedded_env = _embedded_baseline, None, None
    before = {} if baseline is None else {p: t for p, t in _descendants().items() if baseline.get(p) != t}
    ray.shutdown()
    left = _alive(before)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 1.0)):
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait_s
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = _alive(left)
        if not left:
            return
