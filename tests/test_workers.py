"""Concurrent ``a*`` calls all run at once (up to the pool bound), however long the process has
run and whatever load it has seen: on a warm pool on the event loop, on a cold one with each
connect on a native async worker (the worker pool's own logic has Rust unit tests in
``crates/python/src/completion.rs``)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.faults import LoopbackServer

# The workers' bound (MAX_WORKERS in crates/python/src/completion.rs).
WORKERS = 32
# How long the barrier holds requests before giving up (then the test fails, not hangs).
BARRIER_WAIT = 10.0


class BarrierServer(LoopbackServer):
    """A fake memcached that holds every request until it has seen ``parties`` requests in
    flight at once, then answers them all: it proves that the client had that many requests
    in the air together. If that never happens within ``BARRIER_WAIT``, it stops holding
    requests. ``most_in_flight`` is the largest number it saw at once."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.most_in_flight = 0
        self._in_flight = 0
        self._released = False
        self._state = threading.Condition()
        super().__init__()

    def _request(self, conn: socket.socket, buffer: bytearray) -> bytes | None:
        """One whole request (a storage command has a data line after its command line); a
        ``noreply`` one (the lease delete a write sends first) is dropped: it has no reply."""
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end >= 0 and buffer[:line_end].endswith(b" noreply"):
                del buffer[: line_end + 2]
                continue
            if line_end >= 0:
                line = bytes(buffer[:line_end])
                if not line.startswith((b"set ", b"add ")):
                    del buffer[: line_end + 2]
                    return line
                size = int(line.split()[4])
                end = line_end + 2 + size + 2
                if len(buffer) >= end:
                    del buffer[:end]
                    return line
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buffer.extend(chunk)

    def _answer(self, conn: socket.socket) -> None:
        buffer = bytearray()
        while (line := self._request(conn, buffer)) is not None:
            with self._state:
                self._in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self._in_flight)
                if self._in_flight >= self.parties:
                    self._released = True
                    self._state.notify_all()
                if not self._state.wait_for(lambda: self._released, timeout=BARRIER_WAIT):
                    self._released = True  # never reached: let the rest through at once
                    self._state.notify_all()
                self._in_flight -= 1
            conn.sendall(b"STORED\r\n" if line.startswith(b"set ") else b"END\r\n")


@pytest.fixture
def barrier() -> Iterator[BarrierServer]:
    server = BarrierServer(WORKERS)
    try:
        yield server
    finally:
        server.stop()


def backend(address: str, **options: Any) -> ElastiCache:
    return ElastiCache(address, {"OPTIONS": {"discovery": "off", **options}})


async def mixed_load(cache: ElastiCache, bursts: int) -> None:
    """Bursts of ``aset`` and ``aget_many`` of every size up to twice the worker bound: the pool
    grows by connects on the workers, then serves every burst from the loop."""
    for burst in range(bursts):
        size = 1 + burst % (2 * WORKERS)
        calls: list[Any] = []
        for i in range(size):
            key = f"load-{burst % 7}-{i}"
            if i % 3 == 2:
                calls.append(cache.aget_many([key, f"load-{burst % 5}-{i}", "missing"]))
            else:
                calls.append(cache.aset(key, i))
        await asyncio.gather(*calls)


def test_after_heavy_mixed_load_every_worker_runs_at_once(
    memcached: LocalNode, barrier: BarrierServer
) -> None:
    loaded = backend(memcached.address, max_pool_size=2 * WORKERS, timeout=5)
    held = backend(barrier.address, max_pool_size=WORKERS, timeout=2 * BARRIER_WAIT)

    async def scenario() -> None:
        await mixed_load(loaded, 2_000)
        assert await loaded.aget_many(["load-0-0", "load-0-1"]) == {
            "load-0-0": 0,
            "load-0-1": 1,
        }
        # As many calls as workers, each held by the server until all of them are in flight.
        # (Bounded: a call whose job no worker ever takes would otherwise wait for ever.)
        calls = asyncio.gather(*(held.aset(f"held-{i}", i) for i in range(WORKERS)))
        try:
            await asyncio.wait_for(calls, timeout=4 * BARRIER_WAIT)
        except TimeoutError:
            pytest.fail("an async call never ran: it waited for ever")

    asyncio.run(scenario())
    assert barrier.most_in_flight == WORKERS, (
        f"only {barrier.most_in_flight} of {WORKERS} async calls ever ran at the same time"
    )


def test_more_calls_than_workers_all_finish(memcached: LocalNode, barrier: BarrierServer) -> None:
    """Beyond the bound calls queue, and every queued call still gets a worker."""
    held = backend(barrier.address, max_pool_size=WORKERS, timeout=2 * BARRIER_WAIT)
    loaded = backend(memcached.address, max_pool_size=WORKERS, timeout=5)

    async def scenario() -> None:
        held_calls = [held.aset(f"held-{i}", i) for i in range(WORKERS)]
        queued = [loaded.aset(f"queued-{i}", i) for i in range(3 * WORKERS)]
        await asyncio.gather(*held_calls, *queued)
        found = await loaded.aget_many([f"queued-{i}" for i in range(3 * WORKERS)])
        assert found == {f"queued-{i}": i for i in range(3 * WORKERS)}

    asyncio.run(scenario())
    assert barrier.most_in_flight == WORKERS
