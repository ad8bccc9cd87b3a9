"""A local ElastiCache-compatible cluster for development, demos and tests: real ``memcached``
processes on random 127.0.0.1 ports behind a configuration endpoint that answers Auto Discovery
exactly as ElastiCache does, whose membership changes on command, and which misbehaves on demand.

* :class:`LocalNode`: one memcached process.
* :class:`LocalCluster`: nodes + configuration endpoint; ``add_node()``, ``remove_node()``,
  ``set_fault()``, ``stop_endpoint()``/``start_endpoint()``; a context manager. ``tls=True``:
  everything over TLS, like ElastiCache in-transit encryption.
* :func:`make_certificates`: the TLS mode's CA, server and client certificates (and variants for
  tests: another CA, expired, other hostnames).
* ``python -m django_elasticache_rs.local --nodes 3``: the same from a shell, with a control
  interface (:mod:`django_elasticache_rs.local.control`).
* pytest fixtures: :mod:`django_elasticache_rs.pytest_plugin`.
"""

from __future__ import annotations

from django_elasticache_rs.local.certs import (
    Certificates,
    CryptographyNotInstalled,
    make_certificates,
)
from django_elasticache_rs.local.cluster import BACKEND, HOSTNAME, LocalCluster, local_cluster
from django_elasticache_rs.local.endpoint import (
    FAULTS,
    ClusterConfig,
    ConfigEndpoint,
    Fault,
    config_frame,
    legacy_frame,
)
from django_elasticache_rs.local.node import LocalNode, MemcachedNotInstalled

__all__ = [
    "BACKEND",
    "FAULTS",
    "HOSTNAME",
    "Certificates",
    "ClusterConfig",
    "ConfigEndpoint",
    "CryptographyNotInstalled",
    "Fault",
    "LocalCluster",
    "LocalNode",
    "MemcachedNotInstalled",
    "config_frame",
    "legacy_frame",
    "local_cluster",
    "make_certificates",
]
