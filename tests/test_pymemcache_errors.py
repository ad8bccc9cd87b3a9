"""Code written for ``PyMemcacheCache`` catches our errors: for each real failure (a name that
does not resolve, a closed port, a reset connection), the exception we raise is an instance of
the class pymemcache raises for it, and still a ``CacheConnectionError``."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.cache.backends.memcached import PyMemcacheCache

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.exceptions import (
    CacheConnectionRefusedError,
    CacheConnectionResetError,
    CacheError,
    CacheNameResolutionError,
    CacheTimeoutError,
    CacheTlsError,
)
from django_elasticache_rs.local import LocalNode
from tests.support.faults import FaultyServer, LoopbackServer


class ResettingServer(LoopbackServer):
    """Reads a request, then resets the connection (a close with zero linger sends RST)."""

    def _answer(self, conn: socket.socket) -> None:
        if conn.recv(65536):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()


@contextmanager
def unresolvable() -> Iterator[str]:
    # `.invalid` never resolves (RFC 6761).
    yield "no-such-node.invalid:11211"


@contextmanager
def closed_port() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    yield f"127.0.0.1:{port}"


@contextmanager
def resetting() -> Iterator[str]:
    server = ResettingServer()
    try:
        yield server.address
    finally:
        server.stop()


@contextmanager
def silent() -> Iterator[str]:
    server = FaultyServer(None)  # reads requests, never answers
    try:
        yield server.address
    finally:
        server.stop()


FAILURES: list[tuple[str, Callable[[], Any], type[BaseException], type[CacheError]]] = [
    ("unresolvable host", unresolvable, socket.gaierror, CacheNameResolutionError),
    ("closed port", closed_port, ConnectionRefusedError, CacheConnectionRefusedError),
    ("reset", resetting, ConnectionResetError, CacheConnectionResetError),
    # socket.timeout is TimeoutError (Python 3.10+), which CacheTimeoutError has always been.
    ("no answer", silent, TimeoutError, CacheTimeoutError),
]
#: Short enough for the no-answer case, the same for both clients.
TIMEOUTS = {"timeout": 0.3, "connect_timeout": 0.3}


def _raised(call: Callable[[], Any]) -> BaseException:
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    ("failure", "builtin", "ours"),
    [(make, builtin, ours) for _, make, builtin, ours in FAILURES],
    ids=[name for name, *_ in FAILURES],
)
def test_each_failure_is_the_class_pymemcache_raises(
    failure: Callable[[], Any], builtin: type[BaseException], ours: type[CacheError]
) -> None:
    with failure() as location:
        theirs = _raised(lambda: PyMemcacheCache(location, {"OPTIONS": TIMEOUTS}).add("k", 1))
        # The audit: pymemcache raises exactly this builtin for the failure...
        assert isinstance(theirs, builtin), repr(theirs)
        # ...and ours is one too, as well as a CacheConnectionError. `discovery` off: the
        # failure comes from a node, as with pymemcache (discovery's own failures map alike).
        for options in ({"discovery": "off"}, {}):
            cache = ElastiCache(location, {"OPTIONS": {**options, **TIMEOUTS}})
            error = _raised(lambda: cache.add("k", 1))  # noqa: B023 (called at once)
            assert isinstance(error, ours), repr(error)
            assert isinstance(error, builtin)


def test_a_refused_connect_carries_the_system_errno() -> None:
    with closed_port() as location:
        theirs = _raised(lambda: PyMemcacheCache(location, {}).get("k"))
        error = _raised(lambda: ElastiCache(location, {"OPTIONS": {"discovery": "off"}}).get("k"))
    assert isinstance(theirs, OSError) and isinstance(error, OSError)
    assert error.errno == theirs.errno


def test_ratelimits_guard_fails_closed_on_an_unresolvable_host() -> None:
    """django-ratelimit 4.1.0 guards ``add`` with ``except socket.gaierror``."""
    cache = ElastiCache("no-such-node.invalid:11211", {})
    try:
        added = cache.add("ratelimit-key", 1, 60)
    except socket.gaierror:
        added = False
    assert added is False


def test_a_failed_tls_handshake_is_an_ssl_error(memcached: LocalNode) -> None:
    # TLS asked of a plaintext node: the handshake fails.
    context = ssl.create_default_context()
    theirs = _raised(
        lambda: PyMemcacheCache(memcached.address, {"OPTIONS": {"tls_context": context}}).get("k")
    )
    assert isinstance(theirs, ssl.SSLError), repr(theirs)
    options = {"tls_context": context, "discovery": "off", **TIMEOUTS}
    error = _raised(lambda: ElastiCache(memcached.address, {"OPTIONS": options}).get("k"))
    assert isinstance(error, CacheTlsError), repr(error)
    assert isinstance(error, ssl.SSLError) and isinstance(error, ConnectionError)
    assert str(error).startswith("TLS with "), str(error)
