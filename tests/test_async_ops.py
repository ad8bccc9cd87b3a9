"""Every ``a*`` method on the event loop (issue 13): the same values and the same failures as the
blocking method, one node or several, on asyncio's loop and on uvloop; the loop free while a
reply is on its way; a cancelled call closes its connections; and on a warm pool no call hands
its I/O to a native worker thread.

Each failure test runs the blocking method and then the ``a*`` method against the same fake
node and compares what they did: the blocking path is the reference the event-loop path must
match."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from django_elasticache_rs import CacheConnectionError, CacheTimeoutError
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster, LocalNode
from tests.support.faults import FaultyServer, faulty_server
from tests.support.loops import event_loop_kind  # noqa: F401 (an autouse fixture)
from tests.support.placement import keys_on
from tests.support.processes import freeze

WARM_UP = b"END\r\n"
REPO_ROOT = Path(__file__).resolve().parent.parent

Sync = Callable[[ElastiCache], Any]
Async = Callable[[ElastiCache], Awaitable[Any]]

# Each method with the same arguments both ways; "k" and "k2" are the keys the fake nodes see.
OPERATIONS: dict[str, tuple[Sync, Async]] = {
    "get": (lambda c: c.get("k", "default"), lambda c: c.aget("k", "default")),
    "has_key": (lambda c: c.has_key("k"), lambda c: c.ahas_key("k")),
    "set": (lambda c: c.set("k", "v"), lambda c: c.aset("k", "v")),
    "add": (lambda c: c.add("k", "v"), lambda c: c.aadd("k", "v")),
    "touch": (lambda c: c.touch("k", 60), lambda c: c.atouch("k", 60)),
    "delete": (lambda c: c.delete("k"), lambda c: c.adelete("k")),
    "get_many": (lambda c: c.get_many(["k", "k2"]), lambda c: c.aget_many(["k", "k2"])),
    "set_many": (
        lambda c: c.set_many({"k": "v", "k2": 2}),
        lambda c: c.aset_many({"k": "v", "k2": 2}),
    ),
    "delete_many": (
        lambda c: c.delete_many(["k", "k2"]),
        lambda c: c.adelete_many(["k", "k2"]),
    ),
    "incr": (lambda c: c.incr("k"), lambda c: c.aincr("k")),
    "decr": (lambda c: c.decr("k"), lambda c: c.adecr("k")),
    "clear": (lambda c: c.clear(), lambda c: c.aclear()),
}
BATCHES = ["get_many", "set_many", "delete_many", "clear"]


def backend(location: str | list[str], prefix: str = "", **options: Any) -> ElastiCache:
    return ElastiCache(
        location,
        {"KEY_PREFIX": prefix, "OPTIONS": {"discovery": "off", "timeout": 2, **options}},
    )


# Failure tests run one failing call after another on the same node: health accounting must
# neither mark it down nor leave it alone between them (that is not what they test), no
# gutter must serve its keys instead, and no replay of a failed write must probe it in the
# background (tests/test_cluster_events.py tests those).
WITHOUT_CLUSTER_EVENTS: dict[str, Any] = {"gutter": False, "max_invalidations": 0}
REPEATABLE_FAILURES: dict[str, Any] = {
    "retry_attempts": 1000,
    "retry_timeout": 0,
    **WITHOUT_CLUSTER_EVENTS,
}


def open_connections(cache: ElastiCache, node: str | None = None) -> int:
    return sum(count for name, count in cache._native.open_connections() if node in (None, name))


def warm(cache: ElastiCache, *keys: str) -> None:
    """Pools one connection per node owning ``keys`` (the fake servers answer a connection's
    first request with a miss)."""
    assert cache.get_many(list(keys or ["warm-up"])) == {}


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call did: ``("returned", value)`` or ``("raised", exception type, message)``."""
    try:
        return ("returned", call())
    except Exception as error:
        return ("raised", type(error), str(error))


def leaked(done: tuple[Any, ...]) -> bool:
    """Whether a call returned one of the fake replies' values (``x``, ``y``)."""
    if done[0] != "returned":
        return False
    value = done[1]
    found = value.values() if isinstance(value, dict) else [value]
    return any(v in (b"x", b"y", "x", "y") for v in found)


def attempt(call: Callable[[ElastiCache], Any], cache: ElastiCache) -> tuple[Any, ...]:
    """The outcome of a blocking call, or of an async one run to its end."""

    def once() -> Any:
        result = call(cache)
        return run(result) if inspect.isawaitable(result) else result

    return outcome(once)


def run(awaitable: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        # A loop blocked forever must fail the test, not hang it.
        return await asyncio.wait_for(awaitable, timeout=30)

    return asyncio.run(bounded())


# -- values ----------------------------------------------------------------------------------


Call = Callable[..., Awaitable[Any]]


async def story(call: Call) -> list[tuple[Any, ...]]:
    """Every method with values of every kind, hits and misses; ``call(method, *args)`` runs
    the blocking method or its ``a*`` twin. Returns what each step did."""
    values: dict[str, Any] = {
        "small": "x",
        "int": 42,
        "bytes": b"\x00\xff" * 10,
        "pickled": {"a": [1, 2.5]},
        **{f"large-{i}": chr(ord("A") + i) * (900 * 1024) for i in range(4)},
        **{f"many-{i}": f"value-{i}" for i in range(40)},
    }
    steps: list[tuple[Any, ...]] = []

    async def step(method: str, *args: Any) -> None:
        try:
            steps.append(("returned", await call(method, *args)))
        except Exception as error:
            steps.append(("raised", type(error), str(error)))

    await step("set_many", values)
    await step("get_many", [*values, "absent"])
    for key in [*values, "absent"]:
        await step("get", key, "default")
    await step("set", "one", "first")
    await step("get", "one")
    await step("set", "big-one", "B" * (950 * 1024))
    await step("get", "big-one")
    await step("has_key", "one")
    await step("has_key", "absent")
    await step("add", "one", "second")
    await step("add", "two", "second")
    await step("get_many", ["one", "two"])
    await step("touch", "one", 600)
    await step("touch", "absent", 600)
    await step("set", "counter", 10)
    await step("incr", "counter")
    await step("incr", "counter", 5)
    await step("decr", "counter", 3)
    await step("decr", "counter", 100)
    await step("incr", "absent")
    await step("decr", "absent")
    await step("delete", "one")
    await step("delete", "one")
    await step("delete_many", [f"many-{i}" for i in range(20)])
    await step("get_many", list(values))
    await step("clear")
    await step("get_many", [*values, "one", "two", "counter"])
    return steps


def sync_caller(cache: ElastiCache) -> Call:
    async def call(method: str, *args: Any) -> Any:
        return getattr(cache, method)(*args)

    return call


def async_caller(cache: ElastiCache) -> Call:
    async def call(method: str, *args: Any) -> Any:
        return await getattr(cache, "a" + method)(*args)

    return call


@pytest.mark.parametrize("nodes", [1, 3])
def test_every_method_returns_what_the_blocking_method_returns(
    nodes: int,
    memcached: LocalNode,
    memcached_cluster: LocalCluster,
    event_loop_kind: str,  # noqa: F811 (the fixture imported above)
) -> None:
    location = [memcached.address] if nodes == 1 else memcached_cluster.addresses
    blocking = backend(location, f"sync-{event_loop_kind}", max_pool_size=4)
    looping = backend(location, f"async-{event_loop_kind}", max_pool_size=4)
    expected = run(story(sync_caller(blocking)))
    assert ("raised", ValueError, "Key 'absent' not found") in expected  # the story is sound
    for _ in range(2):  # from a cold pool, then with pooled connections
        assert run(story(async_caller(looping))) == expected
    assert open_connections(looping) <= 4 * nodes


def test_concurrent_calls_of_every_method_each_get_their_own_result(
    memcached_cluster: LocalCluster,
) -> None:
    cache = backend(memcached_cluster.addresses, "concurrent", max_pool_size=3)
    values = {f"c-{i}": f"value-{i}" * (1 + i % 30) for i in range(60)}
    cache.set_many(values)
    cache.set_many({f"n-{i}": i for i in range(20)})

    async def scenario() -> list[Any]:
        calls: list[Awaitable[Any]] = []
        for i, key in enumerate(values):
            calls.append(cache.aget(key))
            calls.append(cache.ahas_key(key))
            calls.append(cache.aget_many([key, f"c-{(i + 1) % 60}", "absent"]))
        calls += [cache.aincr(f"n-{i}", i) for i in range(20)]
        calls += [cache.aset(f"s-{i}", i) for i in range(20)]
        return await asyncio.gather(*calls)

    results = run(scenario())
    expected: list[Any] = []
    for i, key in enumerate(values):
        other = f"c-{(i + 1) % 60}"
        expected += [values[key], True, {key: values[key], other: values[other]}]
    expected += [2 * i for i in range(20)]
    expected += [None] * 20
    assert results == expected
    assert cache.get_many([f"s-{i}" for i in range(20)]) == {f"s-{i}": i for i in range(20)}
    assert open_connections(cache) <= 3 * 3


# -- failures --------------------------------------------------------------------------------


def compare_every_method(cache: ElastiCache) -> dict[str, Any]:
    """Each method made blocking, then async, on a freshly pooled connection of a fake node:
    the methods whose async outcome differs, or that left the connection open, with what
    happened (empty: none)."""
    differences: dict[str, Any] = {}
    for method, (blocking_call, async_call) in OPERATIONS.items():
        warm(cache)
        expected = attempt(blocking_call, cache)
        warm(cache)
        got = attempt(async_call, cache)
        left_open = open_connections(cache)
        if got != expected or left_open:
            differences[method] = {"blocking": expected, "async": got, "left open": left_open}
    return differences


@pytest.mark.parametrize("ignore_exc", [False, True])
def test_a_silent_node_times_out_like_the_blocking_methods(ignore_exc: bool) -> None:
    """And a connection with an unread reply is closed."""
    with faulty_server(None, before=[WARM_UP]) as server:
        cache = backend(server.address, timeout=0.1, ignore_exc=ignore_exc, **REPEATABLE_FAILURES)
        assert compare_every_method(cache) == {}
        if not ignore_exc:
            for method, (_, async_call) in OPERATIONS.items():
                warm(cache)
                got = attempt(async_call, cache)
                assert got[:2] == ("raised", CacheTimeoutError), f"{method}: {got}"


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\r\n",
        b"VALUE other 0 1\r\nx\r\nEND\r\n",
        b"VALUE :1:k 0 1\r\nx\r\nVALUE :1:other 0 1\r\ny\r\nEND\r\n",
    ],
    ids=["garbage", "other key", "asked and other key"],
)
@pytest.mark.parametrize("ignore_exc", [False, True])
def test_garbage_and_values_for_other_keys_never_become_values(
    ignore_exc: bool, reply: bytes
) -> None:
    """And a connection after a bad reply is closed."""
    with faulty_server(reply, before=[WARM_UP]) as server:
        cache = backend(server.address, ignore_exc=ignore_exc, **REPEATABLE_FAILURES)
        assert compare_every_method(cache) == {}
        for method, (_, async_call) in OPERATIONS.items():
            warm(cache)
            assert not leaked(attempt(async_call, cache)), f"{method} returned a bad reply's value"


@pytest.mark.parametrize("ignore_exc", [False, True])
@pytest.mark.parametrize("method", BATCHES)
def test_a_silent_node_in_a_batch_fails_like_the_blocking_batch(
    method: str, ignore_exc: bool, memcached: LocalNode
) -> None:
    """Two nodes, one silent: the batch's keys are spread over both."""
    with faulty_server(None, before=[WARM_UP]) as silent:
        cache = backend(
            [memcached.address, silent.address],
            f"batch-{method}",
            timeout=0.1,
            ignore_exc=ignore_exc,
            **REPEATABLE_FAILURES,
        )
        healthy_keys = keys_on(cache, memcached.address, 3, "h")
        silent_keys = keys_on(cache, silent.address, 3, "s")
        keys = [k for pair in zip(healthy_keys, silent_keys, strict=True) for k in pair]
        calls: dict[str, tuple[Sync, Async]] = {
            "get_many": (lambda c: c.get_many(keys), lambda c: c.aget_many(keys)),
            "set_many": (
                lambda c: c.set_many(dict.fromkeys(keys, "new")),
                lambda c: c.aset_many(dict.fromkeys(keys, "new")),
            ),
            "delete_many": (lambda c: c.delete_many(keys), lambda c: c.adelete_many(keys)),
            "clear": (lambda c: c.clear(), lambda c: c.aclear()),
        }
        blocking_call, async_call = calls[method]
        stored = dict.fromkeys(healthy_keys, "stored")

        def prepare() -> None:
            cache.set_many(stored)
            warm(cache, silent_keys[0])

        prepare()
        expected = outcome(lambda: blocking_call(cache))
        after_blocking = cache.get_many(healthy_keys)
        prepare()
        got = outcome(lambda: run(async_call(cache)))
        assert got == expected
        assert cache.get_many(healthy_keys) == after_blocking, "the healthy node did the same"
        if method == "get_many" and ignore_exc:
            assert got == ("returned", stored), "the healthy node's values are returned"
        if not ignore_exc:
            assert got[:2] == ("raised", CacheTimeoutError)
        assert open_connections(cache, silent.address) == 0


@pytest.mark.parametrize("method", ["get", "set", "get_many", "incr"])
def test_failures_on_the_loop_count_towards_marking_a_node_down(method: str) -> None:
    """Health accounting is the blocking path's: one timeout marks the node down (with
    ``retry_attempts`` 1), and the next call fails fast, whichever way either call is made."""
    blocking_call, async_call = OPERATIONS[method]
    histories = []
    for first, then in [
        (blocking_call, blocking_call),
        (async_call, async_call),
        (blocking_call, async_call),
        (async_call, blocking_call),
    ]:
        # The warm-up must be answered within the 100 ms timeout, by the fake server's threads
        # in this process: on a loaded machine it can be late, and then marks the node down
        # before the calls under test. Such a setup is made again (a few times at most).
        for _ in range(3):
            with faulty_server(None, before=[WARM_UP]) as server:
                cache = backend(
                    server.address,
                    timeout=0.1,
                    retry_attempts=1,
                    dead_timeout=60,
                    **WITHOUT_CLUSTER_EVENTS,
                )
                try:
                    warm(cache)
                except CacheTimeoutError:
                    continue
                histories.append([attempt(first, cache)[:2], attempt(then, cache)[:2]])
                assert server.connections == 1, "a node marked down is not contacted"
                break
        else:
            pytest.fail("the fake server answered no warm-up within the timeout, three times")
    assert histories[0][0] == ("raised", CacheTimeoutError)
    assert histories[0][1][:2] == ("raised", CacheConnectionError)
    assert histories == [histories[0]] * 4


# -- the loop stays free ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def freezable() -> Iterator[LocalNode]:
    """A node of this module's own, stopped (SIGSTOP) and continued by tests."""
    with LocalNode() as node:
        yield node


@pytest.mark.parametrize("method", list(OPERATIONS))
def test_the_loop_runs_other_tasks_while_a_node_is_frozen(
    method: str, freezable: LocalNode
) -> None:
    """The node is continued by another task of the same loop: a loop blocked in the call
    would time the call out instead of letting that task run."""
    pid = freezable.pid
    assert pid is not None
    cache = backend(freezable.address, "frozen", timeout=2)
    blocking_call, async_call = OPERATIONS[method]
    cache.set_many({"k": 1, "k2": 2})
    expected = outcome(lambda: blocking_call(cache))
    cache.set_many({"k": 1, "k2": 2})
    warm(cache)

    async def continue_the_node() -> None:
        await asyncio.sleep(0)
        os.kill(pid, signal.SIGCONT)

    async def scenario() -> Any:
        return await asyncio.gather(async_call(cache), continue_the_node())

    freeze(pid)
    try:
        got = outcome(lambda: run(scenario()))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert got[0] == "returned", got
    assert outcome(lambda: got[1][0]) == expected
    assert open_connections(cache) == 1


# -- cancellation ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(OPERATIONS))
def test_a_cancelled_call_closes_its_connection_and_its_late_reply_reaches_nobody(
    method: str,
) -> None:
    gate = threading.Event()
    server = FaultyServer(b"END\r\n", before=[WARM_UP], gate=gate)
    try:
        cache = backend(server.address)
        warm(cache)

        async def scenario() -> None:
            task = asyncio.ensure_future(OPERATIONS[method][1](cache))
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, server.requested.wait, 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run(scenario())
        assert open_connections(cache) == 0, "the cancelled call's connection is closed"
        gate.set()
        # The late reply went to the closed connection: a new one asks again.
        assert cache.get("k", "miss") == "miss"
        assert server.connections == 2
    finally:
        gate.set()
        server.stop()


# Not ``clear``: the blocking flush asks one node after another, so there is no moment when
# both nodes hold a request of the same call.
@pytest.mark.parametrize("method", ["get_many", "set_many", "delete_many"])
def test_a_cancelled_batch_closes_its_connection_to_every_node(method: str) -> None:
    gate = threading.Event()
    servers = [FaultyServer(b"END\r\n", before=[WARM_UP], gate=gate) for _ in range(2)]
    try:
        cache = backend([s.address for s in servers])
        keys = [keys_on(cache, s.address, 1, "spread")[0] for s in servers]
        warm(cache, *keys)
        assert open_connections(cache) == 2
        calls: dict[str, Async] = {
            "get_many": lambda c: c.aget_many(keys),
            "set_many": lambda c: c.aset_many(dict.fromkeys(keys, "v")),
            "delete_many": lambda c: c.adelete_many(keys),
        }

        async def scenario() -> None:
            task = asyncio.ensure_future(calls[method](cache))
            loop = asyncio.get_running_loop()
            for server in servers:
                assert await loop.run_in_executor(None, server.requested.wait, 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run(scenario())
        assert open_connections(cache) == 0, "every node's connection of the batch is closed"
        gate.set()
        assert cache.get_many(keys) == {}
        assert [s.connections for s in servers] == [2, 2]
    finally:
        gate.set()
        for server in servers:
            server.stop()


# -- no worker thread on a warm pool ---------------------------------------------------------


def test_no_call_on_a_warm_pool_starts_a_native_worker_thread(
    memcached_cluster: LocalCluster,
    event_loop_kind: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """In a fresh process (other tests' workers must not count): the pool is warmed with
    blocking calls, then every ``a*`` method runs many times; no native worker thread may ever
    exist."""
    script = REPO_ROOT / "tests" / "support" / "async_without_workers.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            json.dumps(memcached_cluster.addresses),
            event_loop_kind,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["workers_after_warm_up"] == 0, "blocking calls never start workers"
    assert report["results_checked"] > 0
    assert report["first_method_with_a_worker"] is None, (
        f"{report['first_method_with_a_worker']} started a native worker thread on a warm pool "
        f"({report['workers_at_end']} worker(s) at the end)"
    )
