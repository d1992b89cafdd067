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

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClusterConfig:
    """Where Ray-backed work runs.

    Args:
        address: Ray cluster address (``auto``, ``HOST:6379``, ``ray://HOST:10001``). ``None``:
            the ``RAY_ADDRESS`` environment variable, and when that is unset an embedded local
            instance started for this command and stopped after it.
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

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<config>") -> "ClusterConfig":
        """Strict: unknown keys and wrong types are errors naming ``source`` and the key."""
        if data is None:
            return cls()
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"{source}: cluster must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown} in cluster; expected some of {sorted(names)}")
        for key in ("address", "storage_path", "namespace"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{source}: cluster.{key} must be a string, got {data[key]!r}")
        if not isinstance(data.get("runtime_env", {}), dict):
            raise ValueError(f"{source}: cluster.runtime_env must be a mapping, got {data['runtime_env']!r}")
        n = data.get("num_cpus")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"{source}: cluster.num_cpus must be a positive integer, got {n!r}")
        return cls(**data)

    def resolved_address(self) -> str | None:
        """The address Ray will connect to; ``None`` means an embedded local instance."""
        return self.address or os.environ.get("RAY_ADDRESS") or None

    def init_ray(self) -> bool:
        """Connect to (or start) Ray; returns True when this call started it, so the caller
        knows to shut it down. Already initialized: nothing happens, returns False."""
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
        # "local": a new embedded instance even when a `ray start` cluster runs on this machine
        # (address=None would connect to it).
        ray.init(address=address or "local", **kwargs)
        return True
