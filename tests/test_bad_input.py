"""Bad input and bad peers: each gives its documented error (or a miss under ignore_exc) within
the timeout, never a hang, a crash, or a value returned for another key."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.cache.backends.base import InvalidCacheKey

from django_elasticache_rs import (
    CacheConnectionError,
    CacheError,
    CacheServerError,
    CacheTimeoutError,
    Client,
)
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.faults import faulty_server

TIMEOUT = 0.3
# Generous: a shared, noisy machine. What matters is that the call does not hang.
BOUND = TIMEOUT * 2 + 2.0


@pytest.fixture
def cache(memcached: LocalNode) -> ElastiCache:
    backend = ElastiCache(memcached.address, {})
    backend.clear()
    return backend


def backend_for(address: str, **options: Any) -> ElastiCache:
    """A backend for one misbehaving node (not a configuration endpoint: no discovery)."""
    options = {"timeout": TIMEOUT, "connect_timeout": TIMEOUT, "discovery": "off", **options}
    return ElastiCache(address, {"OPTIONS": options})


@pytest.mark.parametrize(
    "key",
    [
        "k" * 251,
        "é" * 126,  # 126 characters, 252 bytes once encoded
        "has space",
        "tab\there",
        "crlf\r\nflush_all",
        "nul\x00",
        "del\x7f",
    ],
)
def test_invalid_keys_raise_invalid_cache_key_and_send_nothing(
    cache: ElastiCache, memcached: LocalNode, key: str
) -> None:
    cache.set("sentinel", "kept")
    before = int(memcached.stats()["cmd_get"]) + int(memcached.stats()["cmd_set"])
    for call in (
        lambda: cache.get(key),
        lambda: cache.set(key, 1),
        lambda: cache.add(key, 1),
        lambda: cache.delete(key),
        lambda: cache.incr(key),
        lambda: cache.touch(key),
        lambda: cache.get_many(["fine", key]),
        lambda: cache.set_many({"fine": 1, key: 2}),
        lambda: cache.delete_many(["fine", key]),
    ):
        with pytest.raises(InvalidCacheKey):
            call()
    after = int(memcached.stats()["cmd_get"]) + int(memcached.stats()["cmd_set"])
    assert after == before
    assert cache.get("sentinel") == "kept"


def test_non_str_keys_are_made_like_django_does(cache: ElastiCache) -> None:
    cache.set(42, "int key")
    assert cache.get("42") == "int key"
    raw = Client([cache.client.servers[0]])
    with pytest.raises(TypeError, match="cache keys must be str"):
        raw.get(42)  # type: ignore[arg-type]


def test_key_of_exactly_250_characters_is_fine(cache: ElastiCache) -> None:
    key = "k" * (250 - len(":1:"))
    cache.set(key, "v")
    assert cache.get(key) == "v"


def test_oversized_value_raises_and_removes_the_old_value(cache: ElastiCache) -> None:
    cache.set("big", "small")
    with pytest.raises(CacheError):
        cache.set("big", "a" * (1024 * 1024 + 1))
    assert cache.get("big") is None
    cache.set("big", "small")
    with pytest.raises(CacheError):
        cache.set("big", b"a" * (2 * 1024 * 1024))
    assert cache.get("big") is None


def test_oversized_value_under_ignore_exc_still_removes_the_old_value(memcached: LocalNode) -> None:
    cache = backend_for(memcached.address, ignore_exc=True)
    cache.set("big2", "small")
    cache.set("big2", "a" * (1024 * 1024 + 1))
    assert cache.get("big2") is None


FAULTS = [
    # (reply, close after reply, error class)
    pytest.param(b"VALUE :1:k 0 10\r\nabc", True, CacheConnectionError, id="closes-mid-reply"),
    pytest.param(b"\x00\xff\xfeHELLO\r\n", False, CacheServerError, id="garbage"),
    pytest.param(b"VALUE :1:k 0 99999999999\r\n", False, CacheServerError, id="huge-length"),
    pytest.param(b"VALUE :1:other 0 1\r\nx\r\nEND\r\n", False, CacheServerError, id="wrong-key"),
    pytest.param(None, False, CacheTimeoutError, id="never-answers"),
]


@pytest.mark.parametrize(("reply", "close", "error"), FAULTS)
def test_bad_peer_raises_within_the_timeout(
    reply: bytes | None, close: bool, error: type[Exception]
) -> None:
    with faulty_server(reply, close=close) as server:
        cache = backend_for(server.address)
        started = time.monotonic()
        with pytest.raises(error):
            cache.get("k")
        assert time.monotonic() - started < BOUND


@pytest.mark.parametrize(("reply", "close", "error"), FAULTS)
def test_bad_peer_reads_as_a_miss_under_ignore_exc(
    reply: bytes | None, close: bool, error: type[Exception]
) -> None:
    with faulty_server(reply, close=close) as server:
        cache = backend_for(server.address, ignore_exc=True)
        started = time.monotonic()
        assert cache.get("k", "default") == "default"
        assert cache.get_many(["k", "j"]) == {}
        cache.set("k", 1)
        assert cache.add("k", 1) is False
        with pytest.raises(ValueError):
            cache.incr("k")
        with pytest.raises(InvalidCacheKey):
            cache.get("bad key")
        assert time.monotonic() - started < BOUND * 6


def test_timeout_error_is_also_the_builtin_timeout_error() -> None:
    with faulty_server(None) as server:
        with pytest.raises(TimeoutError):
            backend_for(server.address).get("k")


def test_refused_connection_raises_connection_error() -> None:
    with faulty_server(None) as server:
        address = server.address
    with pytest.raises(ConnectionError):
        backend_for(address).get("k")


def test_a_failing_node_is_marked_down_and_then_fails_fast() -> None:
    with faulty_server(None) as server:
        cache = backend_for(server.address, retry_attempts=1, dead_timeout=60)
        with pytest.raises(CacheTimeoutError):
            cache.get("k")
        connections = server.connections
        with pytest.raises(CacheConnectionError, match="marked down"):
            cache.get("k")
        assert server.connections == connections, "a node marked down is not contacted"


def test_set_many_reports_oversized_values_as_failed_and_drops_their_old_values(
    cache: ElastiCache,
) -> None:
    cache.set_many({"a": "old", "b": "old", "c": "old"})
    failed = cache.set_many({"a": "new", "b": "x" * (1024 * 1024 + 1), "c": b"y" * 3_000_000})
    assert sorted(failed) == ["b", "c"]
    assert cache.get_many(["a", "b", "c"]) == {"a": "new"}
