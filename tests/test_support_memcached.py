"""Tests of ``tests/support/memcached.py``, the memcached process helper other tests use."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tests.support import memcached as support
from tests.support.memcached import MemcachedError, MemcachedProcess


def _set(server: MemcachedProcess, key: str, value: bytes) -> None:
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
        assert sock.recv(64) == b"STORED\r\n"


def test_context_manager_starts_a_server_of_its_own_and_stops_it() -> None:
    with MemcachedProcess() as server:
        assert server.is_running()
        assert repr(server) == f"<MemcachedProcess {server.address} running>"
        assert server.address == f"127.0.0.1:{server.port}"
        stats = server.stats()
        assert stats["pid"] == str(server.pid)
        assert server.stats("settings")["maxbytes"] == str(64 * 1024 * 1024)
        _set(server, "k", b"v")
        assert server.stats()["curr_items"] == "1"
        server.flush_all()
        assert support.raw_command(server.host, server.port, b"get k\r\n") == b"END\r\n"
    assert not server.is_running()
    assert repr(server) == f"<MemcachedProcess {server.address} stopped>"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_a_port_lost_to_another_process_is_retried_on_a_new_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        real_free_port = support.free_port
        offered = iter([taken])
        monkeypatch.setattr(
            support, "free_port", lambda host: next(offered, None) or real_free_port(host)
        )
        with MemcachedProcess() as server:
            assert server.port != taken
            assert server.stats()["pid"] == str(server.pid)


def test_a_fixed_port_that_is_taken_fails_with_memcacheds_reason() -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        server = MemcachedProcess(port=squatter.getsockname()[1], startup_timeout=5)
        with pytest.raises(MemcachedError, match="Address already in use"):
            server.start()
        assert not server.is_running()


def test_restart_on_the_same_port_after_a_crash(
    memcached_factory: Callable[..., MemcachedProcess],
) -> None:
    first = memcached_factory()
    first.kill()
    assert not first.is_running()
    second = memcached_factory(port=first.port)
    assert second.port == first.port
    assert second.stats()["pid"] == str(second.pid)


def test_session_fixture_serves(memcached: MemcachedProcess) -> None:
    assert memcached.stats()["pid"] == str(memcached.pid)
