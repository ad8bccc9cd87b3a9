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

from django_elasticache_rs import (
    CacheClientError,
    CacheConnectionError,
    CacheError,
    CacheServerError,
    CacheTimeoutError,
)
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster, LocalNode

TIMEOUT = 0.3
INTERVAL = 0.2


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


# What a failed discovery raises keeps the kind of its cause.
RAISED_FOR: dict[str, type[CacheError]] = {
    "down": CacheConnectionError,  # refused
    "garbage": CacheServerError,  # not the protocol
    "hang": CacheTimeoutError,
    "close": CacheConnectionError,
    "truncated": CacheConnectionError,  # closed mid-reply
    "no-nodes": CacheServerError,  # a reply that lists no node
}


@pytest.mark.parametrize("fault", list(RAISED_FOR))
@pytest.mark.parametrize("ignore_exc", [False, True])
def test_endpoint_failing_at_start(cluster: LocalCluster, fault: str, ignore_exc: bool) -> None:
    if fault == "down":
        cluster.stop_endpoint()
    else:
        cluster.set_fault(fault)
    cache = backend(cluster, ignore_exc=ignore_exc, discovery="on")
    if ignore_exc:
        assert cache.get("k", "miss") == "miss"
        cache.set("k", 1)
        assert cache.get_many(["a", "b"]) == {}
    else:
        with pytest.raises(RAISED_FOR[fault], match="no cluster membership"):
            cache.get("k")
        with pytest.raises(RAISED_FOR[fault]):
            cache.set("k", 1)
    with pytest.raises(InvalidCacheKey):
        cache.get("bad key")

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
    except CacheError:
        return False


@pytest.mark.parametrize("ignore_exc", [False, True])
def test_booting_during_a_long_outage_comes_back_at_the_next_steady_try(
    cluster: LocalCluster, ignore_exc: bool
) -> None:
    """With no membership, discovery is retried about once a second however long the outage:
    never backed off towards the interval (design section 7)."""
    cluster.set_fault("garbage")  # unlike "down", each attempt is counted by the endpoint
    # Timeouts the in-process endpoint meets even on a loaded machine: each attempt is decided
    # by the endpoint's answer, not by a slow reply.
    cache = backend(
        cluster, ignore_exc=ignore_exc, discovery_interval=60, timeout=2, connect_timeout=2
    )

    def attempts_during_outage() -> bool:
        assert not _works(cache)
        return cluster.discovery_requests >= 7

    # Seven attempts: with pauses doubling from a second, the last would come a minute in.
    wait_until("an outage of seven attempts", attempts_during_outage, timeout=30)
    cluster.set_fault(None)
    failed = cluster.discovery_requests  # each later request is answered well
    wait_until("recovery", lambda: _works(cache), timeout=10)
    assert cluster.discovery_requests <= failed + 1, "the first try after the return succeeds"
    assert sorted(cache.servers) == sorted(cluster.addresses)


def test_a_node_removed_by_a_scale_in_leaves_the_ring_at_its_first_failure(
    cluster: LocalCluster,
) -> None:
    cache = backend(cluster, discovery_interval=60, max_pool_size=2)
    keys = [f"user:{i}" for i in range(100)]
    cache.set_many({key: key for key in keys})
    placement = HashClient(cluster.addresses).hasher
    removed = cluster.remove_node()
    owned = [key for key in keys if placement.get_node(f":1:{key}") == removed]
    assert owned, "the removed node owns no key: the test proves nothing"
    with pytest.raises(CacheConnectionError):
        cache.get(owned[0])
    # The next background discovery is a minute away: only the failure can have asked early.
    wait_until("the scale-in", lambda: removed not in cache.servers)
    assert set(cache.servers) == set(cluster.addresses)
    assert cache.get(owned[0]) is None  # now owned by a live node, which never had it


def test_a_burst_of_node_failures_asks_for_the_membership_about_once_a_second(
    cluster: LocalCluster,
) -> None:
    # Never marked down: every call reaches the node and fails.
    cache = backend(
        cluster, discovery_interval=60, retry_attempts=1000, retry_timeout=0, dead_timeout=0
    )
    cache.set("warm", 1)
    down = cluster.nodes[-1]
    placement = HashClient(cluster.addresses).hasher
    key = next(f"k{i}" for i in range(1000) if placement.get_node(f":1:k{i}") == down.address)
    cluster.kill_node(down.address)  # still listed by the endpoint: connections are refused
    before = cluster.discovery_requests
    started = time.monotonic()
    failures = 0
    while time.monotonic() - started < 2.0:  # a burst of two seconds' worth of failures
        with pytest.raises(CacheConnectionError):
            cache.get(key)
        failures += 1
    seconds = time.monotonic() - started
    wait_until("an early discovery", lambda: cluster.discovery_requests > before)
    asked = cluster.discovery_requests - before
    assert failures > 20, "too few failures to show a rate limit"
    assert asked <= seconds + 2, f"{asked} discoveries for {failures} failures in {seconds:.1f} s"


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
    cache.set("plain", "works")
    assert cache.get("plain") == "works"
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
    with pytest.raises(CacheConnectionError):
        cache.get("k")  # no such name here: a clean connection error
