"""Bad input and bad peers: each gives its documented error (or a miss under ignore_exc),
never a hang (pytest-timeout bounds every test), a crash, an undocumented exception type, or a
value returned for another key."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from django.core.cache.backends.base import InvalidCacheKey

from django_elasticache_rs import (
    CacheConnectionError,
    CacheServerError,
    CacheTimeoutError,
    Client,
    InvalidKeyError,
    ValueTooLargeError,
)
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.faults import faulty_server

TIMEOUT = 0.3


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
        "\ud800",  # a lone surrogate: no UTF-8 for it
        "lone\udfffsurrogate",
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


def test_value_over_the_client_cap_raises_value_too_large_and_removes_the_old_value(
    cache: ElastiCache,
) -> None:
    cache.set("big", "small")
    with pytest.raises(ValueTooLargeError):
        cache.set("big", b"a" * (2 * 1024 * 1024))
    assert cache.get("big") is None


def test_value_memcached_refuses_as_too_large_raises_value_too_large(cache: ElastiCache) -> None:
    cache.set("big", "small")
    with pytest.raises(ValueTooLargeError):
        cache.set("big", "a" * (1024 * 1024 + 1))
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
def test_bad_peer_raises_its_documented_error(
    reply: bytes | None, close: bool, error: type[Exception]
) -> None:
    with faulty_server(reply, close=close) as server:
        cache = backend_for(server.address)
        with pytest.raises(error) as raised:
            cache.get("k")
        assert type(raised.value) is error
        assert server.requested.is_set(), "the request reached the faulty server"


@pytest.mark.parametrize(("reply", "close", "error"), FAULTS)
def test_bad_peer_reads_as_a_miss_under_ignore_exc(
    reply: bytes | None, close: bool, error: type[Exception]
) -> None:
    with faulty_server(reply, close=close) as server:
        cache = backend_for(server.address, ignore_exc=True)
        assert cache.get("k", "default") == "default"
        assert server.requested.is_set(), "the request reached the faulty server"
        assert cache.get_many(["k", "j"]) == {}
        cache.set("k", 1)
        assert cache.add("k", 1) is False
        with pytest.raises(ValueError, match="not found"):
            cache.incr("k")
        with pytest.raises(InvalidCacheKey):
            cache.get("bad key")


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


# Hostile arguments: each raises its documented exception, never OverflowError,
# UnicodeEncodeError or a PanicException.


def ttl_of(node: LocalNode, key: str) -> int | None:
    """The key's remaining time to live as memcached reports it (meta command ``mg <key> t``):
    -1 when it never expires, ``None`` when it is not there."""
    host, port = node.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"mg %s t\r\n" % key.encode())
        with conn.makefile("rb") as reply:
            line = reply.readline()
    if line == b"EN\r\n":
        return None
    assert line.startswith(b"HD "), line
    (flag,) = [f for f in line.split() if f.startswith(b"t")]
    return int(flag[1:])


NEVER_EXPIRES = [2**63, 2**64, 10**400, 1e300, float("inf"), 60 * 60 * 24 * 365 * 100]
EXPIRED = [-(2**63), -(2**64), -1e300, float("-inf"), -1, 0.5]


@pytest.mark.parametrize("timeout", NEVER_EXPIRES, ids=repr)
def test_a_timeout_past_what_memcached_can_express_never_expires(
    cache: ElastiCache, memcached: LocalNode, timeout: float
) -> None:
    cache.set("huge-set", "v", timeout=timeout)
    assert cache.add("huge-add", "v", timeout=timeout) is True
    assert cache.set_many({"huge-many": "v"}, timeout=timeout) == []
    cache.set("huge-touch", "v", timeout=60)
    assert cache.touch("huge-touch", timeout=timeout) is True
    for key in ("huge-set", "huge-add", "huge-many", "huge-touch"):
        assert cache.get(key) == "v"
        assert ttl_of(memcached, f":1:{key}") == -1


def test_a_long_timeout_memcached_can_express_is_kept(
    cache: ElastiCache, memcached: LocalNode
) -> None:
    year = 60 * 60 * 24 * 365
    cache.set("year", "v", timeout=year)
    ttl = ttl_of(memcached, ":1:year")
    # memcached keeps time in whole seconds of its own clock: allow a little either way.
    assert ttl is not None and year - 60 <= ttl <= year + 5


@pytest.mark.parametrize("timeout", EXPIRED, ids=repr)
def test_a_hugely_negative_timeout_expires_at_once(cache: ElastiCache, timeout: float) -> None:
    cache.set("gone", "old")
    cache.set("gone", "new", timeout=timeout)
    assert cache.get("gone") is None
    cache.set("gone-touch", "old")
    cache.touch("gone-touch", timeout=timeout)
    assert cache.get("gone-touch") is None
    cache.set_many({"gone-many": "v"}, timeout=timeout)
    assert cache.get("gone-many") is None


def test_a_timeout_that_is_not_a_number_raises(cache: ElastiCache) -> None:
    with pytest.raises(TypeError, match="timeout must be a number"):
        cache.set("k", "v", timeout="60")
    with pytest.raises(ValueError, match="timeout must be a number"):
        cache.set("k", "v", timeout=float("nan"))


@pytest.mark.parametrize("delta", [2**64, -(2**64), 2**200, -(2**200)], ids=repr)
def test_a_delta_past_64_bits_raises_value_error(cache: ElastiCache, delta: int) -> None:
    cache.set("counter", 10)
    for call in (cache.incr, cache.decr):
        with pytest.raises(ValueError, match="2\\*\\*64") as raised:
            call("counter", delta)
        assert type(raised.value) is ValueError
    assert cache.get("counter") == 10
    assert cache.incr("counter", 2**64 - 1 - 10) == 2**64 - 1


@pytest.mark.parametrize("delta", ["1", 1.5, None, b"1"], ids=repr)
def test_a_delta_that_is_not_an_int_raises_type_error(cache: ElastiCache, delta: Any) -> None:
    cache.set("counter", 10)
    for call in (cache.incr, cache.decr):
        with pytest.raises(TypeError, match="delta must be an int"):
            call("counter", delta)
    assert cache.get("counter") == 10


def test_key_parts_unencodable_as_utf8_raise_invalid_cache_key(
    cache: ElastiCache, memcached: LocalNode
) -> None:
    before = int(memcached.stats()["cmd_get"]) + int(memcached.stats()["cmd_set"])
    with pytest.raises(InvalidCacheKey):
        cache.get("k", version="\ud800")  # type: ignore[arg-type]
    with pytest.raises(InvalidCacheKey):
        cache.set_many({"k": 1}, version="\ud800")  # type: ignore[arg-type]
    with pytest.raises(InvalidCacheKey):
        cache.client.get("\ud800")  # the native client, without a prefix
    after = int(memcached.stats()["cmd_get"]) + int(memcached.stats()["cmd_set"])
    assert after == before


def test_huge_versions_make_keys_as_django_does(cache: ElastiCache) -> None:
    cache.set("v", "huge", version=2**100)
    assert cache.get("v", version=2**100) == "huge"
    assert cache.client.get(f":{2**100}:v") == "huge"
    assert cache.incr_version("v", version=2**100) == 2**100 + 1
    with pytest.raises(InvalidCacheKey):
        cache.get("v", version=10**300)  # a key over 250 bytes


def test_the_native_client_refuses_hostile_arguments_with_its_documented_exceptions(
    memcached: LocalNode,
) -> None:
    client = Client([memcached.address])
    for prefix in ("\ud800", "ok\udfff"):
        with pytest.raises(InvalidKeyError):
            client.get("k", prefix=prefix)
        with pytest.raises(InvalidKeyError):
            client.set_many({"k": 1}, prefix=prefix)
    for exptime in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(ValueError, match="exptime must fit in 64 bits"):
            client.set("k", 1, exptime)
        with pytest.raises(ValueError, match="exptime must fit in 64 bits"):
            client.touch("k", exptime)
    for exptime in ("60", 1.5, True, None):
        with pytest.raises(TypeError, match="exptime must be an int"):
            client.add("k", 1, exptime)  # type: ignore[arg-type]
    assert client.set("native:kept", "v", 0, prefix="p") is True
    assert client.get("native:kept", prefix="p") == "v"
