"""``aget`` on the event loop (the engine's asyncio driver): a pooled connection's request is
sent without blocking and its reply read when the loop sees the socket readable. Same values
and same failures as ``get``, the loop free while the reply is on its way, and a connection
never reused after an unfinished reply."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

import pytest

from django_elasticache_rs import CacheServerError, CacheTimeoutError, _futures
from django_elasticache_rs._futures import run
from django_elasticache_rs._native import BLOCK, READ, WAIT
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.faults import FaultyServer, faulty_server
from tests.support.loops import event_loop_kind  # noqa: F401 (an autouse fixture)

WARM_UP = b"END\r\n"


def backend(address: str, **options: Any) -> ElastiCache:
    return ElastiCache(address, {"OPTIONS": {"discovery": "off", "timeout": 2, **options}})


def open_connections(cache: ElastiCache) -> int:
    return sum(count for _, count in cache._native.open_connections())


def warm(cache: ElastiCache) -> None:
    """Pools one connection (the fake servers answer the first request with a miss)."""
    assert cache.get("warm-up") is None
    assert open_connections(cache) == 1


def test_each_test_runs_on_the_loop_it_names(event_loop_kind: str) -> None:  # noqa: F811
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert asyncio.run(loop_module()).startswith("uvloop") == (event_loop_kind == "uvloop")


def test_a_cold_pool_leaves_the_connect_to_a_worker_and_a_warm_one_to_the_loop() -> None:
    gate = threading.Event()
    with faulty_server(b"VALUE k 0 2\r\nhi\r\nEND\r\n", before=[WARM_UP], gate=gate) as server:
        cache = backend(server.address)
        cold = cache._native.start_get("cold")
        # No connection yet: connecting is not done on the loop.
        assert cold.advance() == BLOCK
        assert open_connections(cache) == 0
        cold.close()
        warm(cache)
        pending = cache._native.start_get("k")
        assert pending.advance() == WAIT
        fd, interest = pending.wait_for() or (-1, 0)
        assert fd >= 0 and interest == READ
        assert server.requested.wait(timeout=5)

        async def scenario() -> Any:
            result = asyncio.ensure_future(run(pending))
            await asyncio.sleep(0)
            gate.set()
            return await result

        assert asyncio.run(scenario()) == b"hi"
        assert open_connections(cache) == 1, "a clean reply returns the connection"
        assert server.connections == 1


def test_values_of_every_size_and_misses_match_get(memcached: LocalNode) -> None:
    cache = backend(memcached.address, max_pool_size=8)
    values: dict[str, Any] = {
        "aget-small": "x",
        "aget-int": 42,
        "aget-bytes": b"\x00\xff" * 10,
        "aget-pickled": {"a": [1, 2.5]},
        "aget-large": "L" * (900 * 1024),
    }
    cache.set_many(values)

    async def scenario() -> list[Any]:
        keys = [*values, "aget-absent"] * 20
        return await asyncio.gather(*(cache.aget(k, "default") for k in keys))

    for _ in range(3):  # from a cold pool, then with pooled connections
        assert asyncio.run(scenario()) == [*values.values(), "default"] * 20
    assert open_connections(cache) <= 8


def test_the_loop_runs_other_tasks_while_a_reply_is_on_its_way() -> None:
    """The server answers only once another task on the same loop has run: a loop blocked in
    the aget would time it out instead."""
    gate = threading.Event()
    with faulty_server(b"VALUE :1:k 0 2\r\nok\r\nEND\r\n", before=[WARM_UP], gate=gate) as server:
        cache = backend(server.address)
        warm(cache)

        async def open_the_gate() -> None:
            await asyncio.sleep(0)
            gate.set()

        async def scenario() -> list[Any]:
            return await asyncio.gather(cache.aget("k"), open_the_gate())

        assert asyncio.run(scenario()) == [b"ok", None]
        assert open_connections(cache) == 1


@pytest.mark.parametrize("ignore_exc", [False, True])
def test_a_silent_node_times_out_like_get(ignore_exc: bool) -> None:
    with faulty_server(None, before=[WARM_UP]) as server:
        cache = backend(server.address, timeout=0.3, ignore_exc=ignore_exc)
        warm(cache)

        async def scenario() -> Any:
            return await asyncio.wait_for(cache.aget("k", "default"), timeout=10)

        if ignore_exc:
            assert asyncio.run(scenario()) == "default"
        else:
            with pytest.raises(CacheTimeoutError):
                asyncio.run(scenario())
        assert open_connections(cache) == 0, "a connection with an unread reply is closed"


def test_each_call_of_a_loop_times_out_at_its_own_deadline() -> None:
    """A loop's calls share one deadline timer, set at the earliest deadline: a call with a
    short timeout started after one with a long timeout still ends first, as a timeout, while
    the other goes on waiting."""
    with (
        faulty_server(None, before=[WARM_UP]) as slow,
        faulty_server(None, before=[WARM_UP]) as silent,
    ):
        patient = backend(slow.address, timeout=60)
        hasty = backend(silent.address, timeout=0.3)
        warm(patient)
        warm(hasty)

        async def scenario() -> None:
            long_call = asyncio.ensure_future(patient.aget("k"))
            await asyncio.sleep(0)  # its first step: its request sent, its deadline watched
            short_call = asyncio.ensure_future(hasty.aget("k"))
            done, _ = await asyncio.wait(
                {long_call, short_call}, timeout=30, return_when=asyncio.FIRST_COMPLETED
            )
            assert done == {short_call}
            with pytest.raises(CacheTimeoutError):
                short_call.result()
            long_call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await long_call

        asyncio.run(scenario())
        assert open_connections(patient) == open_connections(hasty) == 0


def test_a_closed_event_loop_is_freed(memcached: LocalNode) -> None:
    """What watches a loop's calls (its poller, its deadline timer) holds no loop alive: each
    ``asyncio.run`` of a process that runs many (a test suite, a management command) is
    freed once closed."""
    cache = backend(memcached.address)
    cache.set("k", "v")
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def calls() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        assert await asyncio.gather(*(cache.aget("k") for _ in range(5))) == ["v"] * 5
        assert await cache.aget_many(["k"]) == {"k": "v"}

    for _ in range(3):
        asyncio.run(calls())
    gc.collect()
    assert [loop() for loop in loops] == [None, None, None]


@pytest.mark.parametrize(
    "reply", [b"garbage\r\n", b"VALUE other 0 1\r\nx\r\nEND\r\n"], ids=["garbage", "other key"]
)
@pytest.mark.parametrize("ignore_exc", [False, True])
def test_garbage_and_values_for_other_keys_never_become_values(
    reply: bytes, ignore_exc: bool
) -> None:
    with faulty_server(reply, before=[WARM_UP]) as server:
        cache = backend(server.address, ignore_exc=ignore_exc)
        warm(cache)
        if ignore_exc:
            assert asyncio.run(cache.aget("k", "default")) == "default"
        else:
            with pytest.raises(CacheServerError):
                asyncio.run(cache.aget("k", "default"))
        assert open_connections(cache) == 0


def test_a_cancelled_aget_closes_its_connection_and_its_late_reply_reaches_nobody() -> None:
    gate = threading.Event()
    server = FaultyServer(b"VALUE k 0 5\r\nstale\r\nEND\r\n", before=[WARM_UP], gate=gate)
    try:
        cache = backend(server.address)
        warm(cache)

        async def scenario() -> None:
            task = asyncio.ensure_future(cache.aget("k"))
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, server.requested.wait, 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(scenario())
        assert open_connections(cache) == 0
        gate.set()
        # The stale reply went to the closed connection: a new one asks again.
        server.before = [WARM_UP, WARM_UP]
        assert asyncio.run(cache.aget("k", "miss")) == "miss"
        assert server.connections == 2
    finally:
        gate.set()
        server.stop()


def test_event_loops_in_many_threads_share_one_pool(memcached: LocalNode) -> None:
    """Threads each running their own event loop take pooled connections from one pool: every
    aget gets its own key's value, and the pool stays within its bound."""
    cache = backend(memcached.address, max_pool_size=6)
    values = {f"threaded-{i}": f"value-{i}" * (1 + i % 50) for i in range(200)}
    cache.set_many(values)
    errors: list[BaseException] = []

    async def read_all(keys: list[str]) -> list[Any]:
        return await asyncio.gather(*(cache.aget(k) for k in keys))

    def worker(offset: int) -> None:
        keys = list(values)[offset:] + list(values)[:offset]
        try:
            for _ in range(5):
                assert asyncio.run(read_all(keys)) == [values[k] for k in keys]
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n * 50,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert open_connections(cache) <= 6


@pytest.mark.parametrize("epoll", [True, False], ids=["epoll", "loop readers"])
def test_sockets_closed_and_their_numbers_reused_are_waited_on_afresh(
    memcached: LocalNode, epoll: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop keeps one way of waiting on sockets (an epoll set of ours where there is one, or
    its own readers): connections closed between calls, their numbers given to new ones, are
    each waited on correctly, and a cancelled wait leaves nothing behind."""
    monkeypatch.setattr(_futures, "_HAS_EPOLL", epoll)
    cache = backend(memcached.address, max_pool_size=4)
    cache.set_many({f"fresh-{i}": i for i in range(8)})

    async def scenario() -> list[Any]:
        seen: list[Any] = []
        for round_ in range(20):
            cache.client.close_idle()  # the next calls connect anew, often on the same numbers
            seen += await asyncio.gather(*(cache.aget(f"fresh-{i}") for i in range(8)))
            task = asyncio.ensure_future(cache.aget_many([f"fresh-{i}" for i in range(8)]))
            if round_ % 2:
                await asyncio.sleep(0)
                task.cancel()
            try:
                seen.append(len(await task))
            except asyncio.CancelledError:
                seen.append("cancelled")
        return seen

    seen = asyncio.run(scenario())
    for round_ in range(20):
        got = seen[9 * round_ : 9 * round_ + 9]
        assert got[:8] == list(range(8)), (round_, got)
        # A cancel that comes after the call is done leaves its result standing.
        assert got[8] == 8 or (round_ % 2 and got[8] == "cancelled"), (round_, got)
    assert open_connections(cache) <= 4


def test_a_call_cancelled_while_it_waits_for_a_connection_off_the_loop_loses_nothing() -> None:
    """With the pool's only connection busy, a call waits on the loop for it; cancelled
    meanwhile, the call ends at once, and once the connection comes back it stays in the pool
    unused: nothing leaks, nothing is reopened."""
    gate = threading.Event()
    with faulty_server(b"VALUE :1:k 0 2\r\nok\r\nEND\r\n", before=[WARM_UP], gate=gate) as server:
        cache = backend(server.address, max_pool_size=1, timeout=5)
        warm(cache)

        async def scenario() -> Any:
            holder = asyncio.ensure_future(cache.aget("k"))
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, server.requested.wait, 5)
            waiter = asyncio.ensure_future(cache.aget("other"))
            await asyncio.sleep(0)  # it waits for the pool's connection
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            gate.set()
            return await holder

        assert asyncio.run(scenario()) == b"ok"
        # The holder's connection went back to the pool, and is the one used now.
        assert cache.get("k") == b"ok"
        assert open_connections(cache) == 1
        assert server.connections == 1
