"""get_or_set, lock and incr(initial=) as safe as get and set (issue 19, items 1-6): a value
that cannot be decoded is a miss at once; leases live where no user key can be, and only their
owner ends them; tokens and counters are stored as memcached needs them whatever the serde and
compression; a lock is never shorter than a second and never takes a failure for a holder; an
early-recompute window never stops caching."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_elasticache_rs import CacheConnectionError, LockNotAcquiredError
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.faults import HoldingProxy
from tests.support.raw import put, stored

# The longest a test waits for a condition (then it fails, it does not hang).
BOUND = 30
#: Longer than any test: a caller that waits this long for a lease has stalled.
FOREVER = 3600


def backend(location: str, prefix: str | None = None, **options: Any) -> ElastiCache:
    """A backend with a prefix of its own: tests share the session's memcached."""
    return ElastiCache(
        location,
        {"KEY_PREFIX": prefix or uuid.uuid4().hex, "OPTIONS": {"discovery": "off", **options}},
    )


def made(cache: ElastiCache, key: str) -> str:
    return cache.make_and_validate_key(key)


def finishes(call: Callable[[], Any]) -> Any:
    """``call()``'s result, run on a thread joined with a bound: a call that stalls fails the
    test instead of hanging it."""
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), "the call stalled"
    if failure:
        raise failure[0]
    return outcome[0]


def exchange(address: str, request: bytes, ends: tuple[bytes, ...]) -> bytes:
    """Sends ``request`` to the memcached at ``address`` and reads its reply, as it is."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=BOUND) as conn:
        conn.sendall(request)
        reply = b""
        while not reply.endswith(ends):
            chunk = conn.recv(65536)
            assert chunk, "the node closed the connection"
            reply += chunk
        return reply


def lease_key(cache: ElastiCache, key: str) -> bytes:
    """Where ``key``'s lease lives: a name no key function can make."""
    return b"\xfflease:" + made(cache, key).encode()


def lease_holder(cache: ElastiCache, address: str, key: str) -> bytes | None:
    """The token ``key``'s lease holds on the node at ``address``, or None when it is free."""
    reply = exchange(address, b"get " + lease_key(cache, key) + b"\r\n", (b"END\r\n",))
    if reply == b"END\r\n":
        return None
    return reply.split(b"\r\n")[1]


def take_lease(cache: ElastiCache, address: str, key: str, token: bytes, seconds: int) -> bool:
    """Another client's attempt at ``key``'s lease, as the protocol makes it (``add``)."""
    request = b"add %s 0 %d %d\r\n%s\r\n" % (lease_key(cache, key), seconds, len(token), token)
    return exchange(address, request, (b"STORED\r\n",)) == b"STORED\r\n"


def lease_is_free(cache: ElastiCache, key: str, address: str | None = None) -> bool:
    """Whether ``key``'s lease is free on its node."""
    return lease_holder(cache, address or cache.servers[0], key) is None


# 1. A value that cannot be decoded is a miss to the caller, at once.

#: A pickle of a class that no longer exists (renamed in a deploy).
_GONE_CLASS = pickle.dumps(pickle.loads(pickle.dumps(socket.AddressFamily.AF_INET))).replace(
    b"socket", b"sockxt"
)

UNDECODABLE = {
    "renamed class": (_GONE_CLASS, 1),
    "corrupt pickle": (b"\x80\x05not a pickle at all", 1),
    "corrupt zlib": (b"not zlib data", 8 | 1),
}


@pytest.mark.parametrize("stored_as", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_an_undecodable_value_is_recomputed_at_once(
    memcached: LocalNode, stored_as: tuple[bytes, int]
) -> None:
    cache = backend(memcached.address, stampede_wait=FOREVER)
    put(memcached.address, made(cache, "k"), *stored_as)
    assert cache.get("k", "MISSING") == "MISSING"
    runs: list[int] = []
    value = finishes(lambda: cache.get_or_set("k", lambda: runs.append(1) or "fresh"))
    assert (value, runs) == ("fresh", [1])
    assert cache.get("k") == "fresh"
    # The lease it took to compute was ended: the next miss is computed at once too.
    assert lease_is_free(cache, "k")


@pytest.mark.parametrize("stored_as", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_an_undecodable_value_is_recomputed_at_once_by_async_callers(
    memcached: LocalNode, stored_as: tuple[bytes, int]
) -> None:
    cache = backend(memcached.address, stampede_wait=FOREVER)
    put(memcached.address, made(cache, "k"), *stored_as)

    async def scenario() -> Any:
        return await asyncio.wait_for(cache.aget_or_set("k", lambda: "fresh"), BOUND)

    assert asyncio.run(scenario()) == "fresh"
    assert cache.get("k") == "fresh"
    assert lease_is_free(cache, "k")


def test_callers_that_cannot_decode_a_value_compute_it_once_between_them(
    memcached: LocalNode,
) -> None:
    cache = backend(memcached.address, stampede_wait=FOREVER)
    put(memcached.address, made(cache, "k"), *UNDECODABLE["corrupt pickle"])
    computing, finish = threading.Event(), threading.Event()
    runs: list[int] = []

    def compute() -> str:
        runs.append(1)
        computing.set()
        assert finish.wait(BOUND)
        return "fresh"

    results: list[Any] = []
    callers = [
        threading.Thread(target=lambda: results.append(cache.get_or_set("k", compute)))
        for _ in range(8)
    ]
    for caller in callers:
        caller.start()
    assert computing.wait(BOUND)
    finish.set()
    for caller in callers:
        caller.join(BOUND)
    assert results == ["fresh"] * 8
    assert runs == [1]


# 2. Leases live in a name space no key function can produce, and only their owner ends them.


def test_a_user_key_named_like_a_lease_does_not_stall_get_or_set(memcached: LocalNode) -> None:
    cache = backend(memcached.address, stampede_wait=FOREVER)
    cache.set("foo:lease", "user input")
    assert finishes(lambda: cache.get_or_set("foo", lambda: "computed")) == "computed"
    assert cache.get("foo:lease") == "user input"


def test_a_held_lease_never_reads_as_a_user_value(memcached: LocalNode) -> None:
    cache = backend(memcached.address, stampede_wait=FOREVER)
    seen: list[Any] = []

    def compute() -> str:
        # The lease of "bar" is held now.
        seen.append(cache.get("bar:lease", "MISSING"))
        seen.append(cache.get_many(["bar:lease"]))
        return "computed"

    assert cache.get_or_set("bar", compute) == "computed"
    assert seen == ["MISSING", {}]


def test_a_user_value_written_during_a_lease_outlives_it(memcached: LocalNode) -> None:
    cache = backend(memcached.address)

    def compute() -> str:
        cache.set("baz:lease", "the user's")
        return "computed"

    assert cache.get_or_set("baz", compute) == "computed"
    assert cache.get("baz:lease") == "the user's"


def test_a_winner_slower_than_its_lease_leaves_the_next_winners_lease(
    memcached: LocalNode,
) -> None:
    cache = backend(memcached.address, stampede_lease=1)
    client, prefix = cache._native_client, cache._prefix
    next_token = b"next-winner"

    def another_wins() -> bool:
        return take_lease(cache, memcached.address, "k", next_token, 60)

    def slow() -> str:
        # Another caller wins the lease once this one's has run out (whole seconds).
        for _ in range(BOUND * 20):
            if another_wins():
                return "slow"
            time.sleep(0.05)  # polling the condition, bounded above
        raise AssertionError("the first lease never ran out")

    assert finishes(lambda: cache.get_or_set("k", slow)) == "slow"
    # The slow winner's release left the next winner's lease alone...
    assert lease_holder(cache, memcached.address, "k") == next_token
    # ...which its owner ends.
    assert client.start_release_lease("k", next_token, prefix, 1).wait()
    assert lease_is_free(cache, "k")


@pytest.fixture
def lease_held_back(memcached: LocalNode) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(memcached.address, b"add \xfflease:", hold=BOUND)
    try:
        yield proxy
    finally:
        proxy.proceed.set()
        proxy.stop()


def test_a_cancelled_aget_or_set_ends_the_lease_it_won(
    memcached: LocalNode, lease_held_back: HoldingProxy
) -> None:
    prefix = uuid.uuid4().hex
    cache = backend(lease_held_back.address, prefix, stampede_lease=FOREVER, timeout=BOUND)
    direct = backend(memcached.address, prefix)

    async def scenario() -> None:
        task = asyncio.ensure_future(cache.aget_or_set("k", lambda: "never stored"))
        loop = asyncio.get_running_loop()
        # The lease is won on the server; its answer is held back from the caller.
        assert await loop.run_in_executor(None, lease_held_back.sent.wait, BOUND)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        lease_held_back.proceed.set()
        for _ in range(BOUND * 20):
            if lease_is_free(direct, "k"):
                return
            await asyncio.sleep(0.05)  # polling the condition, bounded above
        raise AssertionError("the cancelled caller's lease was never ended")

    asyncio.run(scenario())
    assert direct.get("k", "MISSING") == "MISSING"


# 3. Tokens and counters are stored as memcached needs them, whatever the codec.


class UpperSerde:
    """A custom serde that changes every value's bytes (as a user's JSON or msgpack serde
    does)."""

    def serialize(self, key: str, value: Any) -> tuple[bytes, int]:
        return pickle.dumps(value), 1 | 64

    def deserialize(self, key: str, value: bytes, flags: int) -> Any:
        return pickle.loads(value) if flags & 64 else value


CODECS = {
    "custom serde": {"serde": UpperSerde()},
    "compression of every value": {"min_compress_len": 1},
}


@pytest.mark.parametrize("options", CODECS.values(), ids=CODECS.keys())
def test_a_lock_is_released_whatever_the_codec(
    memcached: LocalNode, options: dict[str, Any]
) -> None:
    cache = backend(memcached.address, **options)
    with cache.lock("report", blocking_timeout=0) as lock:
        assert lock.held
        assert stored(memcached.address, made(cache, "report"))[1] == 0
    again = cache.lock("report")
    assert again.acquire(blocking=False)
    assert again.release()


@pytest.mark.parametrize("options", CODECS.values(), ids=CODECS.keys())
def test_a_counter_created_with_initial_counts_whatever_the_codec(
    memcached: LocalNode, options: dict[str, Any]
) -> None:
    cache = backend(memcached.address, **options)
    # Digits that compress: zlib makes 11 bytes of these 19.
    big = 10**18
    assert cache.incr("hits", initial=big) == big
    assert stored(memcached.address, made(cache, "hits")) == (b"1000000000000000000", 2)
    assert cache.incr("hits") == big + 1
    assert cache.incr("hits", 5, initial=99) == big + 6

    async def scenario() -> int:
        assert await cache.aincr("async", initial=1) == 1
        return await cache.aincr("async")

    assert asyncio.run(scenario()) == 2


@pytest.mark.parametrize(
    ("initial", "error"),
    [(True, TypeError), (1.0, TypeError), ("1", TypeError), (-1, ValueError), (2**64, ValueError)],
)
def test_initial_must_be_an_int_a_counter_holds(
    memcached: LocalNode, initial: Any, error: type[Exception]
) -> None:
    cache = backend(memcached.address)
    with pytest.raises(error, match="initial must be an int"):
        cache.incr("n", initial=initial)
    assert cache.get("n", "MISSING") == "MISSING"


# 4. A lock lasts at least a second.


@pytest.mark.parametrize("timeout", [0, 0.5, 0.999, -1, float("nan")])
def test_a_lock_shorter_than_a_second_is_refused(memcached: LocalNode, timeout: float) -> None:
    cache = backend(memcached.address)
    with pytest.raises(ValueError, match="at least 1 second"):
        cache.lock("k", timeout=timeout)


def test_locks_of_a_second_or_more_exclude_each_other(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    for timeout in (1, 1.5, None):
        first, second = cache.lock("k", timeout=timeout), cache.lock("k", timeout=timeout)
        assert first.acquire(blocking=False)
        assert not second.acquire(blocking=False)
        assert first.release()


# 5. A lock never takes a failure of the cache for another holder.


def dead_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_a_lock_on_an_unreachable_cache_raises_at_once_under_ignore_exc() -> None:
    cache = backend(dead_address(), ignore_exc=True, connect_timeout=1)
    # Plain operations are misses under ignore_exc...
    assert cache.add("k", "v") is False
    # ...but the lock tells the truth, at once: no waiting out blocking_timeout.
    lock = cache.lock("k", blocking_timeout=FOREVER)
    with pytest.raises(CacheConnectionError):
        finishes(lock.acquire)
    with pytest.raises(CacheConnectionError):
        lock.release()

    async def scenario() -> None:
        with pytest.raises(CacheConnectionError):
            await asyncio.wait_for(lock.aacquire(), BOUND)

    asyncio.run(scenario())


def test_a_release_that_cannot_reach_the_node_raises() -> None:
    with LocalNode() as node:
        cache = backend(node.address, ignore_exc=True, connect_timeout=1)
        lock = cache.lock("k")
        assert lock.acquire()
        node.stop()
        with pytest.raises(CacheConnectionError):
            lock.release()


def test_a_failed_release_leaves_the_bodys_error(caplog: pytest.LogCaptureFixture) -> None:
    with LocalNode() as node:
        cache = backend(node.address, ignore_exc=True, connect_timeout=1)
        with pytest.raises(ZeroDivisionError), caplog.at_level(logging.WARNING):
            with cache.lock("k"):
                node.stop()
                1 / 0  # noqa: B018
        assert any("could not be released" in r.getMessage() for r in caplog.records)


def test_a_failed_release_after_a_body_that_succeeded_raises() -> None:
    with LocalNode() as node:
        cache = backend(node.address, ignore_exc=True, connect_timeout=1)
        with pytest.raises(CacheConnectionError), cache.lock("k"):
            node.stop()


def test_an_async_release_leaves_the_bodys_error() -> None:
    with LocalNode() as node:
        cache = backend(node.address, ignore_exc=True, connect_timeout=1)

        async def scenario() -> None:
            async with cache.lock("k"):
                node.stop()
                raise KeyError("the body's")

        with pytest.raises(KeyError, match="the body's"):
            asyncio.run(scenario())


def test_lock_not_acquired_still_means_another_holder(memcached: LocalNode) -> None:
    cache = backend(memcached.address, ignore_exc=True)
    with cache.lock("k"):
        with pytest.raises(LockNotAcquiredError):
            with cache.lock("k", blocking_timeout=0):
                pass


# 6. An early-recompute window never stops caching.


def test_a_window_longer_than_the_timeout_still_caches(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    runs: list[int] = []

    def compute() -> int:
        runs.append(1)
        return len(runs)

    values = [cache.get_or_set("k", compute, 10, early_recompute=30) for _ in range(20)]
    assert runs == [1]
    assert values == [1] * 20


def test_the_options_window_is_capped_by_each_calls_timeout(memcached: LocalNode) -> None:
    cache = backend(memcached.address, early_recompute=30)
    runs: list[int] = []
    for _ in range(20):
        cache.get_or_set("k", lambda: runs.append(1) or "v", 10)
    assert runs == [1]


def test_lease_tokens_are_unique_per_call_and_a_forked_child_makes_its_own() -> None:
    from django_elasticache_rs.stampede import lease_token

    assert lease_token() != lease_token()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next token, to the parent
        os.write(write, lease_token())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        childs = pipe.read()
    os.waitpid(pid, 0)
    parents = lease_token()
    # The same counter value in both, but never the same token: the child's prefix is its own.
    assert childs and childs.split(b":")[0] != parents.split(b":")[0]
