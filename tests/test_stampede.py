"""Stampede protection (issue 12): ``get_or_set`` with a callable runs it once per miss across
every process, thread, task and greenlet sharing the cluster, and the others get its value;
early recompute keeps a hot key served through its expiry; a server without meta commands gets
the ``add``-based lease; every value is one pymemcache reads. Also the extras Django's API
leaves out: ``ttl``, ``lock``, ``incr`` with ``initial``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache.backends.memcached import PyMemcacheCache

from django_elasticache_rs import (
    CacheClientError,
    CacheConnectionError,
    LockNotAcquiredError,
)
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster, LocalNode
from django_elasticache_rs.local.certs import make_certificates
from tests.support.faults import classic_only_proxy
from tests.support.raw import stored

WORKER = Path(__file__).parent / "support" / "stampede_worker.py"
# The longest a test waits for its processes (then it fails, it does not hang).
BOUND = 60


def backend(location: str | list[str], **options: Any) -> ElastiCache:
    """A backend with a prefix of its own: tests share the session's memcached."""
    return ElastiCache(
        location,
        {"KEY_PREFIX": uuid.uuid4().hex, "OPTIONS": {"discovery": "off", **options}},
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize(
    ("mode", "processes", "callers"),
    [("threads", 4, 8), ("asyncio", 4, 16), ("gevent", 2, 8)],
)
def test_callers_in_several_processes_compute_a_cold_key_once(
    memcached: LocalNode, tmp_path: Path, mode: str, processes: int, callers: int
) -> None:
    runs = tmp_path / "runs"
    spec = {
        "location": memcached.address,
        "prefix": uuid.uuid4().hex,
        "options": {"discovery": "off"},
        "key": "cold",
        "mode": mode,
        "callers": callers,
        "total": processes * callers,
        "runs": str(runs),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    got: list[Any] = []
    for worker in workers:
        out, err = worker.communicate(timeout=BOUND)
        assert worker.returncode == 0, err
        got.extend(json.loads(out))
    computed = lines(runs)
    assert len(computed) == 1, computed
    assert got == computed * (processes * callers)


def test_without_protection_the_same_callers_each_compute(
    memcached: LocalNode, tmp_path: Path
) -> None:
    """The control: the worker's setup does show a stampede when protection is off."""
    runs = tmp_path / "runs"
    spec = {
        "location": memcached.address,
        "prefix": uuid.uuid4().hex,
        "options": {"discovery": "off", "stampede_protection": False},
        "key": "cold",
        "mode": "threads",
        "callers": 4,
        "total": 4,
        "runs": str(runs),
    }
    done = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode == 0, done.stderr
    assert len(lines(runs)) > 1


def test_many_tasks_on_one_loop_compute_a_cold_key_once(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    runs: list[int] = []

    def compute() -> dict[str, int]:
        runs.append(1)
        return {"rows": len(runs)}

    async def every() -> list[Any]:
        return list(await asyncio.gather(*(cache.aget_or_set("k", compute) for _ in range(64))))

    assert asyncio.run(every()) == [{"rows": 1}] * 64
    assert runs == [1]
    assert cache.get("k") == {"rows": 1}


def test_a_failing_callable_releases_the_lease_at_once(memcached: LocalNode) -> None:
    cache = backend(memcached.address, stampede_wait=60)

    def fail() -> Any:
        raise ValueError("no value today")

    with pytest.raises(ValueError, match="no value today"):
        cache.get_or_set("k", fail)
    # The next caller wins the lease at once (it would otherwise wait for up to a minute).
    value, won = cache._native_client.start_get_or_lease("k", 10, 0, None, cache._prefix, 1).wait()
    assert (value, won) == (None, True)


def test_a_caller_left_waiting_computes_itself_once_its_wait_is_over(
    memcached: LocalNode,
) -> None:
    cache = backend(memcached.address, stampede_wait=0.05, stampede_lease=60)
    # Another client won the lease and died: nobody will store the value.
    _, won = cache._native_client.start_get_or_lease("k", 60, 0, None, cache._prefix, 1).wait()
    assert won
    assert cache.get_or_set("k", lambda: "mine") == "mine"
    assert cache.get("k") == "mine"


def test_early_recompute_keeps_a_hot_key_served_through_its_expiry(memcached: LocalNode) -> None:
    cache = backend(memcached.address, early_recompute=2)
    computed: list[Any] = []
    stop = threading.Event()
    served: list[list[Any]] = [[], [], []]

    def compute() -> int:
        # What the key holds while it is recomputed: the previous value, never a miss.
        computed.append(cache.get("hot", "MISSING"))
        return len(computed)

    assert cache.get_or_set("hot", compute, 3) == 1

    def reader(mine: list[Any]) -> None:
        while not stop.is_set():
            mine.append(cache.get_or_set("hot", compute, 3))

    readers = [threading.Thread(target=reader, args=(mine,)) for mine in served]
    for thread in readers:
        thread.start()
    give_up = time.monotonic() + 30
    while len(computed) < 4 and time.monotonic() < give_up:
        time.sleep(0.01)  # polling the condition, bounded above
    stop.set()
    for thread in readers:
        thread.join()
    # Three refreshes, each made while the value it replaced was still there (each item lives
    # 3 s, so they span several expiries).
    assert len(computed) >= 4
    assert computed[0] == "MISSING"
    assert computed[1:] == list(range(1, len(computed)))
    for mine in served:
        # Each reader was served every value in turn, never a miss.
        assert mine and None not in mine
        assert mine == sorted(mine)


def test_early_recompute_as_an_argument(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    cache.set("k", "old", 1000)
    assert cache.get_or_set("k", lambda: "new", 1000) == "old"
    # 1000 s left is inside a 2000 s window (capped at the 1500 s timeout less a second): the
    # first caller refreshes it.
    assert cache.get_or_set("k", lambda: "new", 1500, early_recompute=2000) == "new"
    # The new value is inside a 2000 s window: another client wins its refresh...
    start = cache._native_client.start_get_or_lease
    assert start("k", 10, 2000, None, cache._prefix, 1).wait() == ("new", True)
    # ...and everyone else keeps being served the current value meanwhile.
    assert cache.get_or_set("k", lambda: "newer", 1500, early_recompute=2000) == "new"
    with pytest.raises(ValueError, match="early_recompute"):
        cache.get_or_set("k", lambda: 1, early_recompute=-1)


def test_a_value_that_is_not_callable_keeps_djangos_semantics(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    assert cache.get_or_set("k", "first") == "first"
    assert cache.get_or_set("k", "second") == "first"
    assert cache.get_or_set("none", None) is None
    assert cache.get("none", "absent") is None  # Django stores the None it was given


@pytest.mark.parametrize(
    "value",
    [b"raw", "text", 42, {"rows": [1, 2]}, 2**70],
    ids=["bytes", "str", "int", "pickle", "big"],
)
def test_values_computed_under_a_lease_read_back_in_pymemcache(
    memcached: LocalNode, value: Any
) -> None:
    prefix = uuid.uuid4().hex
    ours = ElastiCache(memcached.address, {"KEY_PREFIX": prefix, "OPTIONS": {"discovery": "off"}})
    theirs = PyMemcacheCache(memcached.address, {"KEY_PREFIX": prefix})
    assert ours.get_or_set("k", lambda: value) == value
    got = theirs.get("k")
    assert got == value
    assert type(got) is type(value)
    # And the lease never shows as a value of the key.
    assert asyncio.run(ours.aget_or_set("a", lambda: value)) == value
    assert theirs.get("a") == value


def test_a_server_without_meta_commands_gets_the_add_based_lease(memcached: LocalNode) -> None:
    with classic_only_proxy(memcached.address) as proxy:
        cache = backend(proxy.address)
        runs: list[int] = []
        gate = threading.Event()
        results: list[Any] = []

        def compute() -> str:
            runs.append(1)
            gate.wait(10)  # the others meet the key while it is computed
            return "computed"

        def caller() -> None:
            results.append(cache.get_or_set("k", compute))

        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        give_up = time.monotonic() + 10
        while not runs and time.monotonic() < give_up:
            time.sleep(0.001)  # polling the condition, bounded above
        gate.set()
        for thread in threads:
            thread.join()
        assert runs == [1]
        assert results == ["computed"] * 8
        # Probed by the first callers (those that met the node before any answer), answered
        # ERROR, and remembered: nothing later probes again.
        probes = proxy.meta_refused
        assert 1 <= probes <= 8
        # What needs the TTL says so; the rest works the classic way.
        with pytest.raises(CacheClientError, match="meta commands"):
            cache.ttl("k")
        assert cache.incr("n", 5, initial=10) == 10
        assert cache.incr("n", 5, initial=10) == 15
        with cache.lock("job", timeout=30) as lock:
            assert lock.held
            assert not cache.lock("job", blocking_timeout=0).acquire(blocking=False)
        assert cache.lock("job").acquire(blocking=False)
        assert cache.get_or_set("k2", lambda: "v") == "v"
        assert proxy.meta_refused == probes


def test_ttl(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    cache.set("forever", 1, None)
    cache.set("brief", 1, 100)
    assert cache.ttl("forever") is None
    assert 0 < (cache.ttl("brief") or 0) <= 100
    assert cache.ttl("absent") == 0
    assert asyncio.run(cache.attl("forever")) is None
    assert asyncio.run(cache.attl("absent")) == 0


def test_incr_with_initial_creates_a_missing_counter_once(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    with pytest.raises(ValueError, match="not found"):
        cache.incr("n")
    assert cache.incr("n", initial=1) == 1
    assert cache.get("n") == 1  # stored as set stores an int
    assert cache.incr("n", 2, initial=1) == 3
    seen: list[int] = []

    def count() -> None:
        for _ in range(20):
            seen.append(cache.incr("shared", initial=1))

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(1, 81))

    async def acount() -> list[int]:
        return list(await asyncio.gather(*(cache.aincr("a", initial=1) for _ in range(10))))

    assert sorted(asyncio.run(acount())) == list(range(1, 11))
    with pytest.raises(ValueError, match="initial"):
        cache.incr("n", initial=-1)


def test_a_lock_is_held_by_one_owner_and_released_only_by_it(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    first = cache.lock("job", timeout=30)
    assert first.acquire()
    second = cache.lock("job", timeout=30, blocking_timeout=0.01)
    assert not second.acquire()
    with pytest.raises(LockNotAcquiredError):
        with second:
            pass
    # Only the owner's release frees it.
    assert not second.release()
    assert not cache.lock("job").acquire(blocking=False)
    assert first.release()
    assert second.acquire(blocking=False)
    second.release()

    async def in_order() -> list[str]:
        events: list[str] = []

        async def worker(name: str) -> None:
            async with cache.lock("async-job", timeout=30):
                events.append(f"{name} in")
                await asyncio.sleep(0)
                events.append(f"{name} out")

        await asyncio.gather(*(worker(str(n)) for n in range(4)))
        return events

    events = asyncio.run(in_order())
    assert [e.split()[1] for e in events] == ["in", "out"] * 4
    assert all(events[i].split()[0] == events[i + 1].split()[0] for i in range(0, 8, 2))


def test_a_lock_that_expired_is_not_released_by_its_old_owner(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    old = cache.lock("job", timeout=30)
    assert old.acquire()
    cache.delete("job")  # as if it expired
    new = cache.lock("job", timeout=30)
    assert new.acquire(blocking=False)
    assert not old.release()
    assert not cache.lock("job").acquire(blocking=False), "the new owner still holds it"


@pytest.fixture
def unreachable() -> Iterator[str]:
    with LocalNode() as node:
        address = node.address
    yield address  # stopped: connections are refused


def test_under_ignore_exc_a_dead_node_computes_and_returns(unreachable: str) -> None:
    cache = backend(unreachable, ignore_exc=True, connect_timeout=0.5, timeout=0.5)
    runs: list[int] = []
    assert cache.get_or_set("k", lambda: runs.append(1) or "v") == "v"
    assert asyncio.run(cache.aget_or_set("k", lambda: runs.append(1) or "v")) == "v"
    assert runs == [1, 1]
    strict = backend(unreachable, connect_timeout=0.5, timeout=0.5)
    with pytest.raises(CacheConnectionError):
        strict.get_or_set("k", lambda: "v")


def test_over_tls(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    with LocalNode(tls=certs) as node:
        # By name: the certificate is for localhost.
        cache = backend(f"localhost:{node.port}", tls_ca_file=str(certs.ca_cert))
        runs: list[int] = []
        assert cache.get_or_set("k", lambda: runs.append(1) or "v") == "v"
        assert cache.get_or_set("k", lambda: runs.append(1) or "w") == "v"
        assert asyncio.run(cache.aget_or_set("k", lambda: runs.append(1) or "w")) == "v"
        assert runs == [1]
        assert 0 < (cache.ttl("k") or 0) <= 300
        assert cache.incr("n", initial=7) == 7
        with cache.lock("job"):
            pass


def test_with_discovery_each_key_is_leased_on_its_own_node(
    memcached_cluster: LocalCluster,
) -> None:
    prefix = uuid.uuid4().hex
    ours = ElastiCache(memcached_cluster.configuration_endpoint, {"KEY_PREFIX": prefix})
    theirs = PyMemcacheCache(memcached_cluster.addresses, {"KEY_PREFIX": prefix})
    runs: list[str] = []

    def compute(key: str) -> Any:
        runs.append(key)
        return {"key": key}

    keys = [f"k{n}" for n in range(30)]
    for _ in range(2):
        for key in keys:
            assert ours.get_or_set(key, lambda key=key: compute(key)) == {"key": key}
    assert runs == keys
    assert len({ours.client.node_for(key, prefix, 1) for key in keys}) == 3
    assert theirs.get_many(keys) == {key: {"key": key} for key in keys}


def test_the_native_lease_arguments_are_checked(memcached: LocalNode) -> None:
    client = backend(memcached.address)._native_client
    with pytest.raises(ValueError, match="lease must be a whole number from 1"):
        client.start_get_or_lease("k", 0)
    with pytest.raises(TypeError):
        client.start_get_or_lease("k", True)
    with pytest.raises(ValueError, match="early_recompute must be a whole number"):
        client.start_get_or_lease("k", 10, -1)
    with pytest.raises(ValueError, match="initial must be an int"):
        client.start_incr_or_create("k", 1, 2**64)


def test_an_async_waiter_leaves_the_loop_free(memcached: LocalNode) -> None:
    """While ``aget_or_set`` waits for another client's value, the loop runs other tasks: here
    the very task that stores the value, which could never run if the wait blocked the loop."""
    cache = backend(memcached.address, stampede_wait=30)
    # Another client holds the lease.
    start = cache._native_client.start_get_or_lease
    assert start("k", 60, 0, None, cache._prefix, 1).wait() == (None, True)

    async def scenario() -> Any:
        def never() -> str:
            raise AssertionError("the waiter computed the value itself")

        waiter = asyncio.ensure_future(cache.aget_or_set("k", never))
        ticks = 0
        while ticks < 20 and not waiter.done():
            ticks += 1
            await asyncio.sleep(0)
        await cache.aset("k", "theirs")
        return await waiter

    assert asyncio.run(scenario()) == "theirs"


def test_values_computed_under_a_lease_are_compressed_as_set_compresses_them(
    memcached: LocalNode,
) -> None:
    prefix = uuid.uuid4().hex
    options = {"discovery": "off", "min_compress_len": 1000}
    cache = ElastiCache(memcached.address, {"KEY_PREFIX": prefix, "OPTIONS": options})
    value = "compressible " * 1000
    assert cache.get_or_set("big", lambda: value) == value
    data, flags = stored(memcached.address, f"{prefix}:1:big")
    assert flags & 8 and len(data) < len(value)
    assert cache.get_or_set("big", lambda: "not this") == value
