"""After fork() parent and child both keep working, each on its own connections."""

from __future__ import annotations

import os

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode


def _child(cache: ElastiCache, write: int) -> None:
    """Runs in the child: exit status 0 only if everything worked on fresh connections."""
    status = 1
    try:
        inherited = sum(count for _, count in cache.client.open_connections())
        assert inherited == 0, f"child sees {inherited} inherited connections"
        for i in range(50):
            cache.set(f"child-{i}", i)
            assert cache.get(f"child-{i}") == i
        assert cache.get("parent") == "before fork"
        opened = sum(count for _, count in cache.client.open_connections())
        os.write(write, f"{opened}\n".encode())
        status = 0
    finally:
        os._exit(status)


def test_parent_and_child_use_their_own_connections(memcached: LocalNode) -> None:
    cache = ElastiCache(memcached.address, {"OPTIONS": {"max_pool_size": 4}})
    cache.set("parent", "before fork")
    assert cache.get("parent") == "before fork"
    parent_connections = sum(count for _, count in cache.client.open_connections())
    assert parent_connections == 1
    before = int(memcached.stats()["total_connections"])

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(cache, write)
    os.close(write)
    # The parent keeps working while the child runs.
    for i in range(50):
        cache.set(f"parent-{i}", i)
        assert cache.get(f"parent-{i}") == i
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child_connections = int(pipe.read().strip() or -1)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_connections == 1
    # The parent still uses its one pooled connection; the child opened exactly one of its own
    # (plus the one stats() opens).
    assert sum(count for _, count in cache.client.open_connections()) == parent_connections
    assert int(memcached.stats()["total_connections"]) - before == 2
    assert cache.get("child-49") == 49
