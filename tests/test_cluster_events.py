"""Cluster events cost the database nothing (issue 21, items 1-3 and their counters): while a
node is down its keys are served by a gutter with short TTLs and one computation per key;
deletes and writes that could not reach a node are replayed before it serves reads again, so
a frozen node never comes back with deleted values; and a delete during a ``get_or_set``
computation wins over the value being computed. Against real memcached processes: killed and
restarted, frozen (SIGSTOP) and resumed."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_elasticache_rs import signals
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.faults import classic_only_proxy
from tests.support.processes import freeze, thaw

# The longest a test waits for a condition (then it fails, it does not hang).
BOUND = 30.0


def wait_until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND
    while not done():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)  # polling interval, not synchronisation


@pytest.fixture
def nodes() -> Iterator[list[LocalNode]]:
    """Three memcached nodes of this test's own: they are killed and frozen."""
    started = [LocalNode().start() for _ in range(3)]
    try:
        yield started
    finally:
        for node in started:
            if node.pid is not None:
                thaw(node.pid)
            node.stop()


def backend(addresses: list[str], **options: Any) -> ElastiCache:
    return ElastiCache(
        addresses,
        {
            "KEY_PREFIX": uuid.uuid4().hex,
            "OPTIONS": {
                "discovery": "off",
                "ignore_exc": True,
                "timeout": 0.3,
                "retry_attempts": 1,
                **options,
            },
        },
    )


def owner(cache: ElastiCache, nodes: list[LocalNode], key: str) -> LocalNode:
    """The node holding ``key`` (stored just before), read on the nodes themselves."""
    made = cache.make_key(key)
    [holder] = [node for node in nodes if node.has_key(made)]
    return holder


def keys_on(cache: ElastiCache, nodes: list[LocalNode], node: LocalNode, count: int) -> list[str]:
    """``count`` keys ``cache`` places on ``node`` (found by storing probes)."""
    found: list[str] = []
    for i in range(10_000):
        key = f"key-{i}"
        cache.set(key, "probe")
        if owner(cache, nodes, key) is node:
            found.append(key)
            if len(found) == count:
                return found
    raise AssertionError("no keys on that node")


class Database:
    """A counted computation: what a ``get_or_set`` default costs the database."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.computes = 0

    def compute(self) -> int:
        with self.lock:
            self.computes += 1
            return self.computes


def test_a_killed_nodes_keys_are_computed_once_on_the_gutter_and_go_back_after_its_restart(
    nodes: list[LocalNode],
) -> None:
    cache = backend([n.address for n in nodes], dead_timeout=600)
    [key, other] = keys_on(cache, nodes, nodes[0], 2)
    nodes[0].stop()
    cache.get(other)  # the node fails once: marked down (retry_attempts=1)
    database = Database()
    results: list[Any] = []

    def call() -> None:
        for _ in range(10):
            results.append(cache.get_or_set(key, database.compute, timeout=3600))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert results == [1] * 80, "one computation per key on the gutter, not one per read"
    assert database.computes == 1
    metrics = cache.metrics()
    assert metrics["gutter_reads"] >= 1 and metrics["gutter_writes"] >= 1, metrics
    assert 0 < cache.ttl(key) <= 10, "the gutter keeps it gutter_ttl at most, not an hour"

    # A delete while the node is away goes to the gutter, and is remembered for the node.
    cache.delete(key)
    assert cache.get(key) is None
    assert cache.metrics()["invalidations_waiting"] >= 1
    nodes[0].restart()
    wait_until("the node's invalidations are replayed", lambda: _waiting(cache) == 0)
    assert cache.metrics()["invalidations_replayed"] >= 1
    # Back on its owner (the ring never changed), long before dead_timeout.
    cache.set(key, "on the owner")
    assert nodes[0].has_key(cache.make_key(key))
    assert cache.get(key) == "on the owner"


def _waiting(cache: ElastiCache) -> int:
    waiting: int = cache.metrics()["invalidations_waiting"]
    return waiting


@pytest.mark.parametrize("dead_timeout", [1, 600])
def test_deletes_during_a_freeze_are_never_read_stale_after_it(
    nodes: list[LocalNode], dead_timeout: int
) -> None:
    """A short dead_timeout brings the node back to readers on its own; a long one only
    through the replay: either way no deleted value is read back."""
    cache = backend([n.address for n in nodes], dead_timeout=dead_timeout)
    frozen = nodes[0]
    *keys, fresh = keys_on(cache, nodes, frozen, 21)
    cache.set_many(dict.fromkeys(keys, "old"))
    cache.delete(fresh)  # on the node only once a set of it lands there
    assert frozen.pid is not None
    freeze(frozen.pid)
    try:
        for key in keys[:10]:
            cache.delete(key)
        cache.delete_many(keys[10:])
        assert cache.get_many(keys) == {}, "the gutter serves them meanwhile"
    finally:
        thaw(frozen.pid)

    def serves_again() -> bool:
        cache.set(fresh, "back")
        return frozen.has_key(cache.make_key(fresh))

    wait_until("the frozen node serves its keys again", serves_again)
    assert cache.get_many(keys) == {}, "a value deleted during the freeze was read back"
    assert not any(frozen.has_key(cache.make_key(key)) for key in keys)


@pytest.mark.parametrize("meta", [True, False], ids=["meta", "classic"])
@pytest.mark.parametrize("write", ["delete", "set"])
def test_a_write_during_a_slow_compute_wins_over_the_computed_value(
    memcached: LocalNode, meta: bool, write: str
) -> None:
    with classic_only_proxy(memcached.address) as proxy:
        cache = backend(memcached.address if meta else proxy.address)
        computing, go_on = threading.Event(), threading.Event()

        def slow() -> str:
            computing.set()
            assert go_on.wait(BOUND)
            return "computed before the write"

        got: list[Any] = []
        caller = threading.Thread(target=lambda: got.append(cache.get_or_set("k", slow)))
        caller.start()
        assert computing.wait(BOUND)
        if write == "delete":
            cache.delete("k")
        else:
            cache.set("k", "written during the compute")
        go_on.set()
        caller.join(BOUND)
        assert got == ["computed before the write"], "the caller gets its own computation"
        expected = None if write == "delete" else "written during the compute"
        assert cache.get("k") == expected, "the computation was stored over the write"
        # A caller starting after the write computes anew (or reads the write).
        assert cache.get_or_set("k", lambda: "recomputed") == (expected or "recomputed")


def test_a_delete_during_an_async_compute_wins_over_the_computed_value(
    memcached: LocalNode,
) -> None:
    cache = backend(memcached.address)
    computing, go_on = threading.Event(), threading.Event()

    def slow() -> str:
        computing.set()
        assert go_on.wait(BOUND)
        return "computed before the delete"

    got: list[Any] = []
    # Its own loop in a thread: the default is called on the loop (as Django's), and waits.
    caller = threading.Thread(target=lambda: got.append(asyncio.run(cache.aget_or_set("k", slow))))
    caller.start()
    assert computing.wait(BOUND)
    cache.delete("k")
    go_on.set()
    caller.join(BOUND)
    assert got == ["computed before the delete"]
    assert cache.get("k") is None, "the computation was stored over the delete"


def test_past_the_replay_bound_the_node_is_flushed_and_the_overflow_is_reported(
    nodes: list[LocalNode], caplog: pytest.LogCaptureFixture
) -> None:
    received: list[dict[str, Any]] = []
    got = threading.Event()

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append(kwargs)
        got.set()

    signals.invalidations_overflowed.connect(receiver, weak=False)
    try:
        cache = backend([n.address for n in nodes], dead_timeout=600, max_invalidations=3)
        frozen = nodes[0]
        *keys, untouched = keys_on(cache, nodes, frozen, 7)
        cache.set(untouched, "never deleted, flushed all the same")
        assert frozen.pid is not None
        with caplog.at_level(logging.WARNING, logger="elasticache_client.failures"):
            freeze(frozen.pid)
            try:
                for key in keys:
                    cache.delete(key)
                assert got.wait(BOUND)
            finally:
                thaw(frozen.pid)
            wait_until("the node is flushed", lambda: cache.metrics()["invalidation_flushes"] == 1)
        [event] = received
        assert event["node"] == frozen.address and event["kept"] == 3 and event["flush"]
        metrics = cache.metrics()
        assert metrics["invalidations_dropped"] == 3 and metrics["invalidation_overflows"] == 1
        overflow_lines = [r for r in caplog.records if "max_invalidations" in r.getMessage()]
        assert len(overflow_lines) == 1, "one log line per overflow"
        assert not frozen.has_key(cache.make_key(untouched))
    finally:
        signals.invalidations_overflowed.disconnect(receiver)


def test_the_gutter_can_be_turned_off(nodes: list[LocalNode]) -> None:
    cache = backend([n.address for n in nodes], dead_timeout=600, gutter=False)
    [key] = keys_on(cache, nodes, nodes[0], 1)
    nodes[0].stop()
    database = Database()
    for _ in range(3):
        cache.get_or_set(key, database.compute)
    assert database.computes == 3, "without a gutter each read of a down node's key computes"
    assert cache.metrics()["gutter_reads"] == 0
