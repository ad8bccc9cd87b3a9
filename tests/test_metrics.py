"""``cache.metrics()``: the client's counters, per node and per client, against real memcached
(fake servers only for failures). Every call counts, blocking or async, once per node it
touches; keys count as hits and misses one by one."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from django_elasticache_rs import CacheConnectionError, CacheTimeoutError
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster
from tests.support.faults import faulty_server

WARM_UP = b"END\r\n"


def backend(location: str | list[str], **options: Any) -> ElastiCache:
    return ElastiCache(location, {"OPTIONS": {"discovery": "off", **options}})


def node_of(cache: ElastiCache, key: str) -> str:
    return cache._native.node_for(key, cache._prefix, cache.version)


def test_a_batch_counts_each_key_as_a_hit_or_a_miss_on_its_own_node(
    memcached_cluster: LocalCluster,
) -> None:
    cache = backend(memcached_cluster.addresses)
    keys = [f"counted-{i}" for i in range(10)]
    present = keys[:4]
    cache.set_many({key: key for key in present})
    before = cache.metrics()["nodes"]
    assert set(cache.get_many(keys)) == set(present)
    after = cache.metrics()["nodes"]
    for node in memcached_cluster.addresses:
        mine = [key for key in keys if node_of(cache, key) == node]
        hits = len([key for key in mine if key in present])
        assert after[node]["hits"] - before[node]["hits"] == hits, node
        assert after[node]["misses"] - before[node]["misses"] == len(mine) - hits, node
        touched = 1 if mine else 0
        assert after[node]["requests"]["get_many"] - before[node]["requests"]["get_many"] == (
            touched
        )
    assert sum(n["hits"] - before[a]["hits"] for a, n in after.items()) == 4
    assert sum(n["misses"] - before[a]["misses"] for a, n in after.items()) == 6


def test_every_command_blocking_or_async_counts_once_per_node_with_its_latency(
    memcached_cluster: LocalCluster,
) -> None:
    cache = backend(memcached_cluster.addresses)
    node = node_of(cache, "one")

    async def async_calls() -> None:
        await cache.aset("one", 1)
        assert await cache.aget("one") == 1
        assert await cache.aincr("one") == 2
        await cache.adelete("one")

    cache.set("one", 1)
    assert cache.get("one") == 1
    assert cache.incr("one") == 2
    assert cache.touch("one", 60)
    cache.delete("one")
    asyncio.run(async_calls())
    assert cache.get("one") is None
    counted = cache.metrics()["nodes"][node]
    requests = counted["requests"]
    assert (requests["set"], requests["get"], requests["incr"]) == (2, 3, 2)
    assert (requests["touch"], requests["delete"]) == (1, 2)
    assert (counted["hits"], counted["misses"]) == (2, 1)
    latency = counted["latency_seconds"]
    assert latency["count"] == sum(requests.values())
    assert latency["buckets"][-1] == (float("inf"), latency["count"])
    counts = [count for _, count in latency["buckets"]]
    assert counts == sorted(counts), "buckets are cumulative"
    assert 0 < latency["sum"] < 10
    assert counted["errors"] == {"client": 0, "server": 0, "timeout": 0, "connection": 0}
    assert counted["connections_opened"] >= 1


def test_timeouts_marking_down_and_failing_fast_are_counted_by_kind() -> None:
    with faulty_server(None, before=[WARM_UP]) as server:
        cache = backend(server.address, timeout=0.2, retry_attempts=1, dead_timeout=60)
        assert cache.get("warm-up") is None
        with pytest.raises(CacheTimeoutError):
            cache.get("k")
        with pytest.raises(CacheConnectionError):
            cache.get("k")  # marked down: fails at once
        counted = cache.metrics()["nodes"][server.address]
        assert counted["errors"]["timeout"] == counted["timeouts"] == 1
        assert counted["errors"]["connection"] == 1
        assert counted["marked_down"] == 1
        assert counted["requests"]["get"] == 2  # the warm-up and the one that timed out


def test_failures_ignored_under_ignore_exc_are_counted() -> None:
    # Every request gets garbage (each on a new connection: the last one was closed).
    with faulty_server(b"garbage\r\n") as server:
        cache = backend(server.address, ignore_exc=True, retry_attempts=1000, retry_timeout=0)
        for _ in range(3):
            assert cache.get("k", "default") == "default"
        metrics = cache.metrics()
        assert metrics["ignored_failures"] == 3
        assert metrics["nodes"][server.address]["errors"]["server"] == 3


def test_waits_for_a_pooled_connection_are_counted() -> None:
    gate = threading.Event()
    with faulty_server(b"VALUE k 0 1\r\nx\r\nEND\r\n", before=[WARM_UP], gate=gate) as server:
        # Each read its own request: the second must wait for the connection, not join the first.
        cache = backend(server.address, max_pool_size=1, timeout=5, coalesce_reads=False)
        assert cache.get("warm-up") is None
        holder = threading.Thread(target=cache.client.get, args=("k",))
        holder.start()
        assert server.requested.wait(timeout=5)
        waiter = threading.Thread(target=cache.client.get, args=("k",))
        waiter.start()
        pause = threading.Event()
        for _ in range(500):  # bounded: until the second call waits for the connection
            if cache.metrics()["nodes"][server.address]["pool_waits"] >= 1:
                break
            pause.wait(0.01)  # polling interval, not synchronisation
        gate.set()
        holder.join(timeout=10)
        waiter.join(timeout=10)
        assert cache.metrics()["nodes"][server.address]["pool_waits"] >= 1


def test_with_counters_off_nothing_is_counted(memcached_cluster: LocalCluster) -> None:
    cache = backend(memcached_cluster.addresses, counters=False)
    cache.set_many({f"uncounted-{i}": i for i in range(10)})
    cache.get_many([f"uncounted-{i}" for i in range(12)])
    for counted in cache.metrics()["nodes"].values():
        assert sum(counted["requests"].values()) == 0
        assert (counted["hits"], counted["misses"], counted["latency_seconds"]["count"]) == (
            0,
            0,
            0,
        )


def test_discoveries_membership_changes_and_the_configuration_version_are_counted() -> None:
    with LocalCluster(nodes=2) as cluster:
        cache = ElastiCache(
            cluster.configuration_endpoint, {"OPTIONS": {"discovery_interval": None}}
        )
        cache.set("k", "v")
        first = cache.metrics()
        assert first["discoveries"] >= 1
        assert first["membership_changes"] == 1
        assert first["config_version"] == cluster.version
        assert set(first["nodes"]) == set(cluster.addresses)
        cluster.add_node()
        cache.client.refresh()
        second = cache.metrics()
        assert second["discoveries"] == first["discoveries"] + 1
        assert second["membership_changes"] == 2
        assert second["config_version"] == cluster.version
        assert len(second["nodes"]) == 3
        assert second["discovery_failures"] == 0
