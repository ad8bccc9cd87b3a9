"""Auto Discovery through the Django backend, against the local ElastiCache-compatible cluster
(real memcached nodes and a configuration endpoint)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache.backends.base import InvalidCacheKey
from pymemcache.client.hash import HashClient

from django_elasticache_rs import CacheClientError, CacheConnectionError
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster, LocalNode

TIMEOUT = 0.3
INTERVAL = 0.2
# Generous bounds: a shared, noisy machine. What matters is that nothing hangs.
BOUND = 5.0


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling interval, not synchronisation


@pytest.fixture
def cluster(elasticache_cluster: LocalCluster) -> LocalCluster:
    """The package's pytest plugin fixture: 3 nodes behind a configuration endpoint."""
    return elasticache_cluster


def backend(cluster: LocalCluster, **options: Any) -> ElastiCache:
    """A backend with its own native client (distinct options: not shared with other tests)."""
    options = {
        "timeout": TIMEOUT,
        "connect_timeout": TIMEOUT,
        "discovery_interval": INTERVAL,
        "dead_timeout": 0.5,
        **options,
    }
    return ElastiCache(cluster.configuration_endpoint, {"OPTIONS": options})


def test_discovers_the_nodes_on_first_use(cluster: LocalCluster) -> None:
    cache = backend(cluster, max_pool_size=3)
    assert cluster.discovery_requests == 0, "nothing is contacted before the first operation"
    assert cache.servers == []
    cache.set("k", "v")
    assert sorted(cache.servers) == sorted(cluster.addresses)
    assert cache.config_version == cluster.version
    assert cache.get("k") == "v"


def test_scale_out_and_in_are_followed_within_the_interval(cluster: LocalCluster) -> None:
    cache = backend(cluster, max_pool_size=4)
    keys = [f"user:{i}" for i in range(300)]
    cache.set_many({key: key for key in keys})
    old_nodes = set(cluster.addresses)

    new = cluster.add_node()
    wait_until("scale-out", lambda: new.address in cache.servers)
    assert cache.config_version == cluster.version
    # The new node holds exactly the keys it wins under rendezvous hashing, once written.
    placement = HashClient(cluster.addresses).hasher
    cache.set_many({key: key for key in keys})
    owned = {key for key in keys if placement.get_node(f":1:{key}") == new.address}
    assert owned, "the new node wins no key: the test proves nothing"
    on_new = {key for key in keys if new.has_key(f":1:{key}")}
    assert on_new == owned

    removed = cluster.remove_node()
    wait_until("scale-in", lambda: removed not in cache.servers)
    assert set(cache.servers) == old_nodes | {new.address} - {removed}
    assert cache.get_many(keys).keys() <= set(keys)


def test_configuration_changes_are_logged(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="elasticache_client")
    cache = backend(cluster)
    cache.get("k")
    new = cluster.add_node()
    wait_until("scale-out", lambda: new.address in cache.servers)
    wait_until(
        "the log record",
        lambda: any(new.address in record.getMessage() for record in caplog.records),
    )


@pytest.mark.parametrize("fault", ["down", "garbage", "hang", "close", "truncated", "no-nodes"])
@pytest.mark.parametrize("ignore_exc", [False, True])
def test_endpoint_failing_at_start(cluster: LocalCluster, fault: str, ignore_exc: bool) -> None:
    if fault == "down":
        cluster.stop_endpoint()
    else:
        cluster.set_fault(fault)
    cache = backend(cluster, ignore_exc=ignore_exc, discovery="on")
    started = time.monotonic()
    if ignore_exc:
        assert cache.get("k", "miss") == "miss"
        cache.set("k", 1)
        assert cache.get_many(["a", "b"]) == {}
    else:
        with pytest.raises(CacheConnectionError):
            cache.get("k")
        with pytest.raises(CacheConnectionError):
            cache.set("k", 1)
    with pytest.raises(InvalidCacheKey):
        cache.get("bad key")
    assert time.monotonic() - started < BOUND

    # It recovers once the endpoint answers.
    if fault == "down":
        cluster.start_endpoint()
    cluster.set_fault(None)
    wait_until("recovery", lambda: _works(cache))
    assert sorted(cache.servers) == sorted(cluster.addresses)


def _works(cache: ElastiCache) -> bool:
    try:
        cache.set("probe", 1)
        return cache.get("probe") == 1
    except CacheConnectionError:
        return False


@pytest.mark.parametrize("fault", ["down", "garbage", "error", "hang", "close", "no-nodes"])
def test_endpoint_failing_later_keeps_the_last_good_membership(
    cluster: LocalCluster, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="elasticache_client")
    cache = backend(cluster, discovery_retry_delay=0)
    cache.set("k", "v")
    good = sorted(cache.servers)
    if fault == "down":
        cluster.stop_endpoint()
    else:
        cluster.set_fault(fault)

    def failed_refreshes() -> int:
        return sum("discovery failed" in record.getMessage() for record in caplog.records)

    # Logged once: further failed refreshes are summarised at most once a minute.
    wait_until("a failed refresh", lambda: failed_refreshes() >= 1)
    for _ in range(20):
        assert cache.get("k") == "v"
    assert sorted(cache.servers) == good


def test_cold_start_with_50_threads_and_50_tasks_makes_one_discovery(
    cluster: LocalCluster,
) -> None:
    cache = backend(cluster, max_pool_size=4, discovery_interval=0, timeout=5)
    errors: list[BaseException] = []
    go = threading.Event()

    def thread_work(i: int) -> None:
        go.wait(10)
        try:
            cache.set(f"thread-{i}", i)
            assert cache.get(f"thread-{i}") == i
        except BaseException as error:
            errors.append(error)

    async def task_work(i: int) -> None:
        await cache.aset(f"task-{i}", i)
        assert await cache.aget(f"task-{i}") == i

    async def tasks() -> None:
        go.set()
        await asyncio.gather(*(task_work(i) for i in range(50)))

    threads = [threading.Thread(target=thread_work, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert cluster.discovery_requests == 1
    for node in cluster.nodes:
        assert int(node.stats()["curr_connections"]) - 2 <= 4  # memcached counts its listener


def test_fork_child_runs_its_own_refresher(cluster: LocalCluster) -> None:
    cache = backend(cluster)
    cache.set("k", "v")
    pid = os.fork()
    if pid == 0:  # the child: sees the node the parent adds, through its own refresher
        status = 1
        try:
            assert cache.get("k") == "v"
            deadline = time.monotonic() + 10
            while len(cache.servers) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)  # polling interval
            status = 0 if len(cache.servers) == 4 else 2
        finally:
            os._exit(status)
    new = cluster.add_node()
    wait_until("the parent's refresher", lambda: new.address in cache.servers)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("ignore_exc", [False, True])
def test_endpoint_answering_error_with_discovery_on_is_a_configuration_error(
    cluster: LocalCluster, ignore_exc: bool
) -> None:
    cluster.set_fault("error")
    cache = backend(cluster, discovery="on", ignore_exc=ignore_exc)
    for _ in range(2):  # the second call, rate-limited, reports the same configuration error
        with pytest.raises(CacheClientError, match="not an ElastiCache configuration endpoint"):
            cache.get("k")


def test_plain_memcached_location_is_one_node_without_a_hang(
    memcached: LocalNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="elasticache_client")
    cache = ElastiCache(memcached.address, {"OPTIONS": {"timeout": TIMEOUT, "max_pool_size": 2}})
    started = time.monotonic()
    cache.set("plain", "works")
    assert cache.get("plain") == "works"
    assert time.monotonic() - started < BOUND
    assert cache.servers == [memcached.address]
    warnings = [
        r for r in caplog.records if "not an ElastiCache configuration endpoint" in r.getMessage()
    ]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    "location",
    [
        "localhost:{port}",
        "127.0.0.1:{port}",
        "[::1]:{port}",
    ],
)
def test_location_forms_reach_the_endpoint(cluster: LocalCluster, location: str) -> None:
    port = cluster.configuration_endpoint.rsplit(":", 1)[1]
    cache = ElastiCache(location.format(port=port), {"OPTIONS": {"timeout": 2, "discovery": "on"}})
    cache.set("k", "v")
    assert cache.get("k") == "v"


def test_long_dns_names_are_valid_locations() -> None:
    name = "my-production-cluster-name-0123456789.abcdef.cfg.euc1.cache.amazonaws.com:11211"
    cache = ElastiCache(name, {"OPTIONS": {"timeout": 0.2, "connect_timeout": 0.2}})
    started = time.monotonic()
    with pytest.raises(CacheConnectionError):
        cache.get("k")  # no such name here: a clean connection error, quickly
    assert time.monotonic() - started < BOUND
