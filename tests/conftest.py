"""Shared fixtures: real memcached processes on random loopback ports.

* ``memcached``: one node for the whole session. Tests share it: use ``cache.clear()`` or keys
  of their own.
* ``memcached_cluster``: three nodes for the whole session.
* ``elasticache_cluster``, ``elasticache_cluster_factory``: the package's pytest plugin (a local
  cluster behind a configuration endpoint, per test).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_elasticache_rs.backend import forget_shared_clients
from django_elasticache_rs.local import LocalCluster, LocalNode

# The package's pytest plugin. Its fixtures are imported rather than the module listed in
# ``pytest_plugins``: should the ``pytest11`` entry point register the module under a name other
# than its module name, ``pytest_plugins`` would register it a second time, which pytest
# rejects. Imported fixtures merely shadow the plugin's own, whether or not the entry point is
# registered, and whatever its name.
from django_elasticache_rs.pytest_plugin import (  # noqa: F401
    elasticache_cluster,
    elasticache_cluster_factory,
)
from tests.django_suite.harness import BACKEND_ENV, backend_path


@pytest.fixture(autouse=True)
def _forget_shared_clients() -> Iterator[None]:
    """Each test's native clients go with it: their discovery threads must not keep polling
    endpoints the test has stopped."""
    yield
    forget_shared_clients()


def pytest_report_header(config: pytest.Config) -> str:
    return f"django cache suite backend: {backend_path()} (${BACKEND_ENV})"


@pytest.fixture(scope="session")
def memcached() -> Iterator[LocalNode]:
    """A memcached node shared by the session; ``.address`` is ``"127.0.0.1:<port>"``."""
    with LocalNode() as node:
        yield node


@pytest.fixture(scope="session")
def memcached_cluster() -> Iterator[LocalCluster]:
    """Three memcached nodes shared by the session."""
    with LocalCluster(nodes=3) as cluster:
        yield cluster
