"""The local tier for hot keys (issue 23, ``OPTIONS["local_cache"]``): a key read often enough is
served from the process's memory for at most ``ttl``. Shown against real memcached: its
``cmd_get`` stat counts the reads that reached it. This process's writes and deletes are seen
at once, ``clear()`` and ``incr_version`` too; another process's write (pymemcache, in a process
of its own) within ``ttl``; what is kept stays within ``max_keys`` and ``max_bytes``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.backends import cmd_get, own_backend

# The most reads a condition is waited for before the test fails (never a measure of speed).
BOUND = 100_000


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    """A node of this module's own, whose ``cmd_get`` no other test moves."""
    with LocalNode() as local:
        yield local


def backend(node: LocalNode, **local_cache: Any) -> ElastiCache:
    return own_backend(node.address, "local", timeout=10, local_cache=local_cache)


def local_hits(cache: ElastiCache) -> int:
    return sum(n["local_hits"] for n in cache.metrics()["nodes"].values())


def read_until_served_locally(cache: ElastiCache, key: str, expected: Any) -> int:
    """Reads ``key`` (always ``expected``) until a read is served from memory; how many reads
    were not."""
    served = local_hits(cache)
    for reads in range(BOUND):
        assert cache.get(key) == expected
        if local_hits(cache) > served:
            return reads
    raise AssertionError(f"{key} was never served from memory")


def never_called() -> Any:
    raise AssertionError("computed, though the value is cached")


def test_a_hot_key_stops_reaching_its_node(node: LocalNode) -> None:
    cache = backend(node, ttl=600, min_reads_per_second=5)
    cache.set("front-page", {"html": "<p>hello</p>"})
    before = cmd_get(node)
    not_served = read_until_served_locally(cache, "front-page", {"html": "<p>hello</p>"})
    # Never kept before it was read five times within a second.
    assert not_served >= 5
    assert cmd_get(node) == before + not_served
    for _ in range(200):
        assert cache.get("front-page") == {"html": "<p>hello</p>"}
    assert cmd_get(node) == before + not_served, "served from memory"
    # A batch's keys too, an async read, and get_or_set (stampede protection's read).
    assert cache.get_many(["front-page", "other"]) == {"front-page": {"html": "<p>hello</p>"}}
    assert asyncio.run(cache.aget("front-page")) == {"html": "<p>hello</p>"}
    assert cache.get_or_set("front-page", never_called) == {"html": "<p>hello</p>"}
    assert asyncio.run(cache.aget_or_set("front-page", never_called)) == {"html": "<p>hello</p>"}
    assert cmd_get(node) == before + not_served + 1, "only 'other' reached the node"
    assert cache.metrics()["local_keys"] == 1


def test_this_processs_writes_and_deletes_are_seen_at_once(node: LocalNode) -> None:
    cache = backend(node, ttl=600, min_reads_per_second=0)

    def kept(key: str, value: Any) -> None:
        # Read once from the node (and kept), then served from memory.
        assert cache.get(key) == value
        read_until_served_locally(cache, key, value)

    cache.set("k", "one")
    kept("k", "one")
    cache.set("k", "two")
    assert cache.get("k") == "two"
    kept("k", "two")
    cache.set_many({"k": "three"})
    assert cache.get("k") == "three"
    kept("k", "three")
    assert cache.touch("k", 300)
    assert cache.get("k") == "three"
    assert not cache.add("k", "four"), "not stored: nothing changed"
    kept("k", "three")
    cache.delete("k")
    assert cache.get("k") is None
    cache.set("n", 1)
    kept("n", 1)
    assert cache.incr("n") == 2
    assert cache.get("n") == 2
    kept("n", 2)
    cache.delete_many(["n"])
    assert cache.get("n") is None

    # incr_version: the old version is deleted, the new one read from the node.
    cache.set("v", "versioned")
    kept("v", "versioned")
    assert cache.incr_version("v") == 2
    assert cache.get("v") is None
    assert cache.get("v", version=2) == "versioned"

    # clear() empties the tier with the node.
    cache.set("c", "cleared")
    kept("c", "cleared")
    assert cache.metrics()["local_keys"] >= 1
    cache.clear()
    assert cache.metrics()["local_keys"] == 0
    assert cache.get("c") is None


WRITER = """
import sys
from pymemcache.client.base import Client

host, port = sys.argv[1].rsplit(":", 1)
Client((host, int(port))).set(sys.argv[2], sys.argv[3].encode())
"""


def test_another_processs_write_is_seen_within_ttl(node: LocalNode) -> None:
    ttl = 0.5
    cache = backend(node, ttl=ttl, min_reads_per_second=0)
    cache.set("flag", b"old")
    assert cache.get("flag") == b"old"
    read_until_served_locally(cache, "flag", b"old")
    # Another process (pymemcache, with no serializer: bytes are stored as they are).
    subprocess.run(
        [sys.executable, "-c", WRITER, node.address, cache.make_key("flag"), "new"],
        check=True,
        timeout=60,
    )
    written = time.monotonic()
    stale = 0
    for _ in range(BOUND * 10):
        started = time.monotonic()
        value = cache.get("flag")
        if value == b"new":
            break
        assert value == b"old"
        stale += 1
        # Every read that starts ttl after the write ended sees it.
        assert started < written + ttl, f"still stale {started - written:.3f} s after the write"
    else:
        raise AssertionError("the other process's write was never seen")
    assert cache.get("flag") == b"new"


def test_what_is_kept_stays_within_max_keys_and_max_bytes(node: LocalNode) -> None:
    cache = backend(node, ttl=600, max_keys=20, max_bytes=64 * 1024, min_reads_per_second=0)
    cache.set_many({f"small:{i}": i for i in range(100)})
    most_keys = 0
    for _ in range(2):
        for i in range(100):
            assert cache.get(f"small:{i}") == i
            most_keys = max(most_keys, cache.metrics()["local_keys"])
    assert most_keys == 20
    big = b"x" * 10_000
    cache.set_many({f"big:{i}": big for i in range(30)})
    most_bytes = 0
    for i in range(30):
        assert cache.get(f"big:{i}") == big
        metrics = cache.metrics()
        most_bytes = max(most_bytes, metrics["local_bytes"])
        assert metrics["local_keys"] <= 20
    # Six of these values (with their keys and overhead) fit in 64 KiB: the bytes bound the tier.
    assert 6 * 10_000 < most_bytes <= 64 * 1024
    # A value larger than the whole bound is never kept, and still read.
    huge = b"y" * 100_000
    cache.set("huge", huge)
    served = local_hits(cache)
    for _ in range(3):
        assert cache.get("huge") == huge
    assert local_hits(cache) == served


def test_with_large_values_batches_keep_small_values_and_large_ones_read_whole(
    node: LocalNode,
) -> None:
    cache = own_backend(
        node.address,
        "local",
        large_values=True,
        local_cache={"ttl": 600, "min_reads_per_second": 0},
    )
    big = bytes(range(256)) * (3 * 4096)  # 3 MiB: chunks plus an index
    cache.set_many({"big": big, "small": "s"})
    for _ in range(5):
        assert cache.get("big") == big
        assert cache.get_many(["big", "small"]) == {"big": big, "small": "s"}
    # The small value is kept (a get with large_values on is a batch); the large one is read
    # whole from the node each time, never kept.
    assert cache.metrics()["local_keys"] == 1
    assert local_hits(cache) == 4, "the first batch read it from the node"
    cache.set("big", b"other")
    assert cache.get("big") == b"other"


def test_off_by_default(node: LocalNode) -> None:
    cache = own_backend(node.address, "local")
    cache.set("k", "v")
    before = cmd_get(node)
    for _ in range(50):
        assert cache.get("k") == "v"
    assert cmd_get(node) == before + 50
    assert local_hits(cache) == 0
    assert cache.metrics()["local_keys"] == 0
