"""The Django backend against real memcached: configuration, sharing, pooling, threads, async."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from typing import Any

import pytest
from django.core.cache import caches
from django.core.cache.backends.base import InvalidCacheKey
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import override_settings

from django_elasticache_rs import CacheTimeoutError
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from django_elasticache_rs.options import parse_location
from tests.support.faults import faulty_server

BACKEND = "django_elasticache_rs.backend.ElastiCache"


@pytest.fixture
def cache(memcached: LocalNode) -> ElastiCache:
    backend = ElastiCache(memcached.address, {})
    backend.clear()
    return backend


def test_location_forms() -> None:
    assert parse_location("a:1;b:2, c:3") == ["a:1", "b:2", "c:3"]
    assert parse_location(["[::1]:11211", "localhost:11211"]) == ["[::1]:11211", "localhost:11211"]
    with pytest.raises(ImproperlyConfigured):
        parse_location(" ; ")


def test_unknown_option_names_the_closest_valid_one(memcached: LocalNode) -> None:
    with pytest.raises(ImproperlyConfigured, match="did you mean 'max_pool_size'"):
        ElastiCache(memcached.address, {"OPTIONS": {"max_poolsize": 4}})
    with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['timeout'\] must be a number"):
        ElastiCache(memcached.address, {"OPTIONS": {"timeout": "soon"}})


def test_elastipymemcache_options_are_accepted(memcached: LocalNode) -> None:
    options = {
        "ignore_exc": True,
        "use_vpc_ip_address": False,
        "discovery_interval": 30,
        "connect_timeout": 0.5,
        "timeout": 0.5,
        "use_pooling": True,
        "max_pool_size": 8,
        "retry_attempts": 3,
        "retry_timeout": 2,
        "dead_timeout": 30,
        "no_delay": True,
        "allow_unicode_keys": True,
        "default_noreply": False,
    }
    cache = ElastiCache(memcached.address, {"OPTIONS": options})
    cache.set("k", "v")
    assert cache.get("k") == "v"


def test_backends_share_one_native_client_per_configuration(memcached: LocalNode) -> None:
    first = ElastiCache(memcached.address, {"KEY_PREFIX": "a"})
    second = ElastiCache([memcached.address], {"KEY_PREFIX": "b"})
    other = ElastiCache(memcached.address, {"OPTIONS": {"timeout": 2}})
    assert first.client is second.client
    assert first.client is not other.client
    first.set("k", 1)
    second.set("k", 2)
    assert (first.get("k"), second.get("k")) == (1, 2)


def test_custom_key_function_goes_through_python(memcached: LocalNode) -> None:
    cache = ElastiCache(
        memcached.address, {"KEY_FUNCTION": lambda key, prefix, version: f"custom-{version}-{key}"}
    )
    cache.set("k", "v")
    assert cache.client.get("custom-1-k") == "v"
    assert cache.get_many(["k", "missing"]) == {"k": "v"}
    assert cache.set_many({"a": 1, "b": 2}) == []
    assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}
    cache.delete_many(["a", "b"])
    assert cache.get_many(["a", "b"]) == {}
    with pytest.raises(InvalidCacheKey):
        cache.get("bad key")


def test_request_cycles_reuse_pooled_connections(memcached: LocalNode) -> None:
    caches_setting = {"default": {"BACKEND": BACKEND, "LOCATION": memcached.address}}
    # Only the cache's handler is under test (as in Django's own test_close): the database's
    # would touch a connection this test has no access to.
    request_finished.disconnect(close_old_connections)
    try:
        _run_request_cycles(memcached, caches_setting)
    finally:
        request_finished.connect(close_old_connections)


def _run_request_cycles(memcached: LocalNode, caches_setting: dict[str, Any]) -> None:
    with override_settings(CACHES=caches_setting):
        caches["default"].set("warm", 1)
        request_finished.send(sender=None)
        before = memcached.stats()["total_connections"]
        for i in range(100):
            cache = caches["default"]
            cache.set(f"k{i}", i)
            assert cache.get(f"k{i}") == i
            request_finished.send(sender=None)
        # The only new connection is the one stats() itself opened.
        assert int(memcached.stats()["total_connections"]) - int(before) == 1


def test_sixteen_threads_only_ever_read_values_written_for_that_key(cache: ElastiCache) -> None:
    keys = [f"shared-{i}" for i in range(8)]
    errors: list[BaseException] = []

    def hammer(thread_id: int) -> None:
        try:
            for round_ in range(300):
                key = keys[(thread_id + round_) % len(keys)]
                cache.set(key, f"{key}|{thread_id}|{round_}")
                value = cache.get(key)
                assert value is None or value.split("|")[0] == key, (key, value)
                got = cache.get_many(keys)
                for k, v in got.items():
                    assert v.split("|")[0] == k, (k, v)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


class _RefusingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A default executor that fails whatever is handed to it."""

    def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        raise AssertionError("the cache used the event loop's default executor")


def test_async_methods_run_off_the_event_loop(cache: ElastiCache) -> None:
    """Every async method works, on the cache's own workers: the loop's default executor
    (a handful of threads on a small machine, shared with the app) is never used."""

    async def scenario() -> None:
        asyncio.get_running_loop().set_default_executor(_RefusingExecutor())
        loop_thread = threading.get_ident()
        await cache.aset("a", 1)
        assert await cache.aget("a") == 1
        assert await cache.aadd("a", 2) is False
        await cache.aset_many({"b": 2, "c": 3})
        assert await cache.aget_many(["a", "b", "c", "d"]) == {"a": 1, "b": 2, "c": 3}
        assert await cache.aincr("a", 10) == 11
        assert await cache.adecr("a", 5) == 6
        assert await cache.ahas_key("b")
        assert await cache.atouch("b", 100)
        assert await cache.adelete("b")
        await cache.adelete_many(["a", "c"])
        assert await cache.aget_many(["a", "b", "c"]) == {}
        results = await asyncio.gather(
            *(cache.aincr("counter") for _ in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, ValueError) for r in results)
        await cache.aset("counter", 0)
        await asyncio.gather(*(cache.aincr("counter") for _ in range(50)))
        assert await cache.aget("counter") == 50
        await cache.aclose()
        assert threading.get_ident() == loop_thread

    asyncio.run(scenario())


def test_async_calls_run_concurrently_not_one_after_another() -> None:
    """Four aget() calls are in flight at once: a server that answers only once it holds four
    requests would time every call out if they went through one thread in turn."""
    in_flight = 4
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    barrier = threading.Barrier(in_flight, timeout=10)

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return
            conn.sendall(b"END\r\n")

    def accept() -> None:
        for _ in range(in_flight):
            conn, _ = listener.accept()
            held.append(conn)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    cache = ElastiCache(
        f"127.0.0.1:{port}", {"OPTIONS": {"timeout": 5, "max_pool_size": 8, "discovery": "off"}}
    )

    async def scenario() -> list[object]:
        return await asyncio.gather(*(cache.aget(f"k{i}", "miss") for i in range(in_flight)))

    try:
        assert asyncio.run(scenario()) == ["miss"] * in_flight
    finally:
        barrier.abort()
        listener.close()
        acceptor.join(timeout=10)


def test_aget_raises_what_get_raises_and_survives_cancellation() -> None:
    """From a cold pool aget completes from a native worker: errors arrive as the same
    exceptions, and a cancelled await is simply cancelled."""
    with faulty_server(None) as silent:
        # No pause after the timeout: a node left alone for a while fails the next call at once.
        options = {"timeout": 0.3, "connect_timeout": 0.3, "discovery": "off", "retry_timeout": 0}
        cache = ElastiCache(silent.address, {"OPTIONS": options})

        async def scenario() -> None:
            with pytest.raises(CacheTimeoutError):
                await cache.aget("k")
            task = asyncio.ensure_future(cache.aget("other"))
            await asyncio.sleep(0)  # let the task submit its operation
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The worker's late result meets a closed loop, and is dropped quietly.

        asyncio.run(scenario())
