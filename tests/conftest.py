"""Shared pytest fixtures: real memcached servers on random loopback ports.

* ``memcached`` - one server for the whole session (per xdist worker).  Other tests may
  have left items in it: flush it (``memcached.flush_all()``) or use unique keys.
* ``memcached_factory`` - starts extra, private servers (e.g. a multi-node cluster or one
  to kill); each is stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.memcached import MemcachedProcess


@pytest.fixture(scope="session")
def memcached() -> Iterator[MemcachedProcess]:
    """A memcached server shared by the session; ``.address`` is ``"127.0.0.1:<port>"``."""
    with MemcachedProcess() as server:
        yield server


@pytest.fixture
def memcached_factory() -> Iterator[Callable[..., MemcachedProcess]]:
    """``start(**kwargs)`` -> a started ``MemcachedProcess(**kwargs)``, stopped at teardown."""
    started: list[MemcachedProcess] = []

    def start(**kwargs: Any) -> MemcachedProcess:
        server = MemcachedProcess(**kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()
