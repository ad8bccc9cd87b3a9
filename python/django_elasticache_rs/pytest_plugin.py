"""pytest fixtures for testing an application against a real local ElastiCache-compatible
cluster (memcached nodes behind a configuration endpoint; see
:class:`django_elasticache_rs.local.LocalCluster`).

* ``elasticache_cluster``: a running 3-node cluster, stopped after the test.
* ``elasticache_cluster_factory``: ``factory(nodes=N, legacy=False, tls=False,
  require_client_cert=False)`` starts a cluster; every cluster it started is stopped after the
  test. ``tls=True`` needs the ``cryptography`` package (``pip install cryptography``).

Example::

    def test_cache_survives_scale_out(elasticache_cluster, settings):
        settings.CACHES = elasticache_cluster.caches_setting(discovery_interval=1)
        ...
        elasticache_cluster.add_node()

The plugin is registered through the ``pytest11`` entry point, so installing the package is
enough. memcached must be installed; a fixture raises ``MemcachedNotInstalled`` (saying how to
install it) if it is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pytest

from django_elasticache_rs.local import LocalCluster

__all__ = ["ClusterFactory", "elasticache_cluster", "elasticache_cluster_factory"]


class ClusterFactory(Protocol):
    """Starts a local cluster that is stopped after the test."""

    def __call__(
        self,
        nodes: int = 3,
        *,
        legacy: bool = False,
        tls: bool = False,
        require_client_cert: bool = False,
    ) -> LocalCluster: ...


@pytest.fixture
def elasticache_cluster_factory() -> Iterator[ClusterFactory]:
    """Call it with ``nodes=N`` (default 3), ``legacy=True`` for an endpoint that answers
    only ``get AmazonElastiCache:cluster``, ``tls=True`` for a cluster serving TLS only (and
    ``require_client_cert=True`` for nodes requiring a client certificate); returns a started
    :class:`LocalCluster`."""
    started: list[LocalCluster] = []

    def start(
        nodes: int = 3,
        *,
        legacy: bool = False,
        tls: bool = False,
        require_client_cert: bool = False,
    ) -> LocalCluster:
        cluster = LocalCluster(
            nodes, legacy=legacy, tls=tls, require_client_cert=require_client_cert
        )
        started.append(cluster)
        return cluster.start()

    try:
        yield start
    finally:
        for cluster in reversed(started):
            cluster.stop()


@pytest.fixture
def elasticache_cluster(elasticache_cluster_factory: ClusterFactory) -> LocalCluster:
    """A running 3-node local cluster; ``.caches_setting()`` gives the ``CACHES`` entry."""
    return elasticache_cluster_factory(nodes=3)
