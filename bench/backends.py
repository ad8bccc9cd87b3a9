"""The backends compared, and the Django ``CACHES`` setting that configures all of them at once.

Each backend gets one alias per cluster size (``ours_3n``, ``ours_10n``, ...). Backends with
Auto Discovery get the cluster's configuration endpoint as ``LOCATION``; the others the static
list of nodes. Every alias has its own ``KEY_PREFIX`` (all of the same length), so no backend
ever reads what another wrote (pylibmc's value flags differ from pymemcache's), and
``TIMEOUT: None`` so nothing expires during a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.cache.backends.base import BaseCache

from django_elasticache_rs.local import LocalCluster


@dataclass(frozen=True)
class Backend:
    """One cache backend under test."""

    name: str
    """Short name used in aliases, the table and ``--only`` style options."""
    label: str
    """What it is, for the report."""
    path: str
    """Django's ``BACKEND``."""
    discovery: bool
    """Whether ``LOCATION`` is the configuration endpoint (else the static node list)."""
    key_prefix: str
    options: dict[str, Any] = field(default_factory=dict)

    def alias(self, nodes: int) -> str:
        """The Django cache alias of this backend on the cluster of ``nodes`` nodes."""
        return f"{self.name}_{nodes}n"

    def location(self, cluster: LocalCluster) -> str | list[str]:
        """``LOCATION`` for ``cluster``: its configuration endpoint or its nodes."""
        return cluster.configuration_endpoint if self.discovery else cluster.addresses

    def settings(self, location: str | list[str], key_prefix: str | None = None) -> dict[str, Any]:
        """This backend's entry of ``CACHES``."""
        return {
            "BACKEND": self.path,
            "LOCATION": location,
            "KEY_PREFIX": self.key_prefix if key_prefix is None else key_prefix,
            "TIMEOUT": None,
            "OPTIONS": dict(self.options),
        }


OURS = Backend(
    name="ours",
    label="django-elasticache-rs (`django_elasticache_rs.backend.ElastiCache`), "
    "configuration endpoint, Auto Discovery",
    path="django_elasticache_rs.backend.ElastiCache",
    discovery=True,
    key_prefix="b0",
    options={"discovery": "on"},
)
ELASTIPYMEMCACHE = Backend(
    name="elastipymemcache",
    label="django-elastipymemcache (`django_elastipymemcache.backend.ElastiPymemcache`), "
    "configuration endpoint, Auto Discovery",
    path="django_elastipymemcache.backend.ElastiPymemcache",
    discovery=True,
    key_prefix="b1",
    options={"use_pooling": True},
)
PYMEMCACHE = Backend(
    name="pymemcache",
    label="Django's `PyMemcacheCache` (pymemcache `HashClient`), static node list",
    path="django.core.cache.backends.memcached.PyMemcacheCache",
    discovery=False,
    key_prefix="b2",
    options={"use_pooling": True},
)
PYLIBMC = Backend(
    name="pylibmc",
    label="Django's `PyLibMCCache` (pylibmc, libmemcached), static node list",
    path="django.core.cache.backends.memcached.PyLibMCCache",
    discovery=False,
    key_prefix="b3",
    options={"binary": False},
)

BACKENDS: tuple[Backend, ...] = (OURS, ELASTIPYMEMCACHE, PYMEMCACHE, PYLIBMC)
"""All backends, ours first: the order of the report's columns."""
ALTERNATIVES: tuple[Backend, ...] = BACKENDS[1:]


def caches_setting(clusters: dict[int, LocalCluster]) -> dict[str, dict[str, Any]]:
    """``CACHES`` with an alias for every backend on every cluster (keyed by node count), and a
    ``default`` that no workload uses (Django requires one)."""
    caches: dict[str, dict[str, Any]] = {
        "default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
    }
    for nodes, cluster in clusters.items():
        for backend in BACKENDS:
            caches[backend.alias(nodes)] = backend.settings(backend.location(cluster))
    return caches


def discovered_nodes(backend: Backend, cache: BaseCache) -> int | None:
    """How many nodes a discovering backend uses now (``None`` for static backends)."""
    if backend is OURS:
        return len(cache.servers)  # type: ignore[attr-defined]
    if backend is ELASTIPYMEMCACHE:
        return len(cache._cache.clients)  # type: ignore[attr-defined]
    return None
