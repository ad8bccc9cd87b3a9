"""After fork() parent and child both keep working, each on its own connections."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest

import django_elasticache_rs
from django_elasticache_rs import CacheError, CacheTimeoutError, signals
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster, LocalNode
from tests.support.processes import freeze


def _child(cache: ElastiCache, write: int) -> None:
    """Runs in the child: exit status 0 only if everything worked on fresh connections."""
    status = 1
    try:
        inherited = sum(count for _, count in cache.client.open_connections())
        assert inherited == 0, f"child sees {inherited} inherited connections"
        for i in range(50):
            cache.set(f"child-{i}", i)
            assert cache.get(f"child-{i}") == i
        assert cache.get("parent") == "before fork"
        opened = sum(count for _, count in cache.client.open_connections())
        os.write(write, f"{opened}\n".encode())
        status = 0
    finally:
        os._exit(status)


def test_parent_and_child_use_their_own_connections(memcached: LocalNode) -> None:
    cache = ElastiCache(memcached.address, {"OPTIONS": {"max_pool_size": 4}})
    cache.set("parent", "before fork")
    assert cache.get("parent") == "before fork"
    parent_connections = sum(count for _, count in cache.client.open_connections())
    assert parent_connections == 1
    before = int(memcached.stats()["total_connections"])

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(cache, write)
    os.close(write)
    # The parent keeps working while the child runs.
    for i in range(50):
        cache.set(f"parent-{i}", i)
        assert cache.get(f"parent-{i}") == i
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child_connections = int(pipe.read().strip() or -1)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_connections == 1
    # The parent still uses its one pooled connection; the child opened exactly one of its own
    # (plus the one stats() opens).
    assert sum(count for _, count in cache.client.open_connections()) == parent_connections
    assert int(memcached.stats()["total_connections"]) - before == 2
    assert cache.get("child-49") == 49


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling interval, not synchronisation


class AsyncTraffic:
    """An event loop on its own thread making ``aset`` and ``aget_many`` calls until stopped,
    from a cold pool each round, so that the native async workers are busy connecting while
    the loop does the rest; ``done`` counts finished calls, ``errors`` any failure."""

    def __init__(self, cache: ElastiCache) -> None:
        self.cache = cache
        self.done = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        round_ = 0
        while not self._stop.is_set():
            try:
                # Connections are opened on the workers: closing the idle ones keeps them busy.
                self.cache.client.close_idle()
                await asyncio.gather(*(self.cache.aset(f"busy-{i}", round_) for i in range(16)))
                await self.cache.aget_many([f"busy-{i}" for i in range(16)])
                self.done += 17
            except BaseException as error:  # reported by the test
                self.errors.append(error)
                return
            round_ += 1

    def __enter__(self) -> AsyncTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _child_follows_the_cluster(cache: ElastiCache, nodes: int) -> None:
    """Runs in the child: exit status 0 only if the cache works (sync and async) and its own
    refresher picks up the node the parent adds after the fork."""
    status = 1
    try:
        assert cache.get("k") == "v"

        async def both() -> dict[str, object]:
            await cache.aset("child", "async")
            return await cache.aget_many(["child", "k"])

        assert asyncio.run(both()) == {"child": "async", "k": "v"}
        deadline = time.monotonic() + 10
        while len(cache.servers) < nodes and time.monotonic() < deadline:
            time.sleep(0.01)  # polling interval
        status = 0 if len(cache.servers) == nodes else 2
    finally:
        os._exit(status)


def test_fork_parks_the_refresher_and_busy_workers_and_both_sides_restart_them(
    elasticache_cluster: LocalCluster,
) -> None:
    cluster = elasticache_cluster
    options = {"discovery_interval": 0.2, "timeout": 5, "max_pool_size": 32}
    cache = ElastiCache(cluster.configuration_endpoint, {"OPTIONS": options})
    cache.set("k", "v")  # starts the refresher
    nodes = len(cluster.addresses) + 1
    with AsyncTraffic(cache) as traffic:
        wait_until("busy async workers", lambda: traffic.done > 100)
        pid = os.fork()  # with async calls in flight on the workers
        if pid == 0:
            _child_follows_the_cluster(cache, nodes)
        at_fork = traffic.done
        new = cluster.add_node()
        # The parent's refresher runs again (nothing else asks the endpoint: the ring is not
        # empty), and its async calls go on.
        wait_until("the parent's refresher", lambda: new.address in cache.servers)
        wait_until("async calls after the fork", lambda: traffic.done > at_fork + 100)
    assert traffic.errors == []
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# Run by an interpreter that warns about fork() with threads (3.12+): uses the cache (a
# refresher and async workers start), forks, and reports what it saw as JSON.
FORK_SCRIPT = """
import asyncio, json, os, sys, warnings
from django.conf import settings
settings.configure()
from django_elasticache_rs.backend import ElastiCache

options = {"discovery_interval": 0.2, "timeout": 5, "max_pool_size": 32}
cache = ElastiCache(sys.argv[1], {"OPTIONS": options})
cache.set("k", "v")

async def load():
    await asyncio.gather(*(cache.aset(f"a{i}", i) for i in range(64)))
    return await asyncio.gather(*(cache.aget_many([f"a{i}"]) for i in range(64)))

assert len(asyncio.run(load())) == 64
threads = len(os.listdir("/proc/self/task"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pid = os.fork()
if pid == 0:
    works = cache.get("k") == "v" and asyncio.run(load())[0] == {"a0": 0}
    os._exit(0 if works else 1)
_, status = os.waitpid(pid, 0)
print(json.dumps({
    "threads_before_fork": threads,
    "warnings": [str(w.message) for w in caught],
    "child": os.waitstatus_to_exitcode(status),
    "parent": cache.get("k") == "v" and asyncio.run(load())[0] == {"a0": 0},
}))
"""


def _python_312_or_later() -> str | None:
    """An interpreter 3.12+ that can run the script, if this machine has one."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (13, 12)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")))
    for candidate in candidates:
        if candidate is None:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; sys.exit(sys.version_info < (3, 12))"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    return None


def test_fork_raises_no_threads_warning_on_python_312(elasticache_cluster: LocalCluster) -> None:
    python = _python_312_or_later()
    if python is None:
        pytest.skip("no Python 3.12+ interpreter on this machine to run the fork warning check")
    package = Path(django_elasticache_rs.__file__).parent.parent
    site_packages = Path(django.__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), str(site_packages)])}
    endpoint = elasticache_cluster.configuration_endpoint
    run = subprocess.run(
        [python, "-W", "error::DeprecationWarning", "-c", FORK_SCRIPT, endpoint],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "multi-threaded" not in run.stderr, run.stderr
    seen = json.loads(run.stdout)
    # The process had our threads (a refresher, async workers) just before forking...
    assert seen["threads_before_fork"] > 1, seen
    # ... and forked with none of them, and both sides work after.
    assert seen["warnings"] == [], seen
    assert seen["child"] == 0, seen
    assert seen["parent"] is True, seen


# -- signal receivers ------------------------------------------------------------------------

BOUND = 10.0


class BlockingReceiver:
    """Receives ``node_down`` and ``node_up``, recording them in order; the first ``node_down``
    blocks (from its native delivery thread) until the test sets ``release``. ``running`` is
    set once it blocks."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.running = threading.Event()
        self.release = threading.Event()
        self._changed = threading.Condition()

    def node_down(self, sender: object, **kwargs: object) -> None:
        if not self.running.is_set():
            self.running.set()
            self.release.wait(timeout=6 * BOUND)  # bounded: the test releases it
        self._record("node_down")

    def node_up(self, sender: object, **kwargs: object) -> None:
        self._record("node_up")

    def _record(self, name: str) -> None:
        with self._changed:
            self.events.append(name)
            self._changed.notify_all()

    def wait_for(self, count: int) -> list[str]:
        """The events received, once there are ``count`` of them (bounded)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.events) >= count, timeout=BOUND)
            return list(self.events)


@pytest.fixture
def blocking_receiver() -> Iterator[BlockingReceiver]:
    receiver = BlockingReceiver()
    signals.node_down.connect(receiver.node_down, weak=False)
    signals.node_up.connect(receiver.node_up, weak=False)
    try:
        yield receiver
    finally:
        receiver.release.set()
        signals.node_down.disconnect(receiver.node_down)
        signals.node_up.disconnect(receiver.node_up)


def _marked_down(cache: ElastiCache, node: LocalNode) -> None:
    """A call fails on the stopped node: with ``retry_attempts=1`` it is marked down
    (``node_down``)."""
    assert node.pid is not None
    try:
        freeze(node.pid)
        with pytest.raises(CacheTimeoutError):
            cache.get("k")
    finally:
        os.kill(node.pid, signal.SIGCONT)


def _answering_again(cache: ElastiCache) -> None:
    """Calls until the node marked down is tried again (``dead_timeout`` later) and answers
    (``node_up``)."""
    deadline = time.monotonic() + BOUND
    while True:
        try:
            if cache.get("k") == "v":
                return
        except CacheError:  # still marked down: fails fast until dead_timeout passes
            pass
        assert time.monotonic() < deadline, "the node never answered again"
        time.sleep(0.05)  # polling interval, not synchronisation


def _child_uses_the_cache(cache: ElastiCache) -> None:
    """Runs in the child: exit status 0 only if the cache works there, blocking and async."""
    status = 1
    try:
        cache.set("child", "forked")
        assert cache.get("child") == "forked"
        assert asyncio.run(cache.aget("child")) == "forked"
        status = 0
    finally:
        os._exit(status)


class ForkingThread(threading.Thread):
    """Forks from a thread of its own, so that a fork that hangs fails the test instead of
    hanging it; the child runs ``child``. ``pid`` is the child's, in the parent."""

    def __init__(self, child: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self._child = child
        self.pid: int | None = None

    def run(self) -> None:
        pid = os.fork()
        if pid == 0:
            self._child()
        self.pid = pid


def _exit_code(pid: int) -> int:
    """The child's exit code, waiting for it (bounded: a child that hangs is killed)."""
    deadline = time.monotonic() + BOUND
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung")
        time.sleep(0.01)  # polling interval, not synchronisation


def _fork_while_blocked(cache: ElastiCache, receiver: BlockingReceiver) -> tuple[bool, int]:
    """Forks while ``receiver`` is blocked; releases it once the fork returned (or, should the
    fork wait for it, once that is clear). Whether the fork returned while the receiver was
    still blocked, and the child's exit code."""
    forking = ForkingThread(lambda: _child_uses_the_cache(cache))
    forking.start()
    forking.join(timeout=BOUND)
    returned_while_blocked = not forking.is_alive() and not receiver.release.is_set()
    receiver.release.set()
    forking.join(timeout=BOUND)
    assert forking.pid is not None, "the fork never returned"
    return returned_while_blocked, _exit_code(forking.pid)


RECEIVER_OPTIONS = {"discovery": "off", "timeout": 0.3, "retry_attempts": 1, "dead_timeout": 0.5}


def test_a_fork_never_waits_for_a_blocked_signal_receiver(
    blocking_receiver: BlockingReceiver,
) -> None:
    """A ``node_down`` receiver blocks; ``os.fork()`` returns while it is still blocked, the
    child uses the cache and exits cleanly, and once released the receiver's event and the
    later ones reach the parent's receivers in order."""
    with LocalNode() as node:
        cache = ElastiCache(node.address, {"OPTIONS": RECEIVER_OPTIONS})
        cache.set("k", "v")
        _marked_down(cache, node)
        assert blocking_receiver.running.wait(timeout=BOUND), "node_down never delivered"

        returned_while_blocked, child = _fork_while_blocked(cache, blocking_receiver)
        assert returned_while_blocked, "os.fork() waited for a signal receiver"
        assert child == 0

        assert blocking_receiver.wait_for(1) == ["node_down"]
        _answering_again(cache)
        _marked_down(cache, node)
        assert blocking_receiver.wait_for(3) == ["node_down", "node_up", "node_down"]


def test_events_queued_behind_a_blocked_receiver_are_delivered_after_the_fork_in_order(
    blocking_receiver: BlockingReceiver,
) -> None:
    """While a ``node_down`` receiver blocks, the node answers again, fails again and answers
    again: those events wait behind it, through the fork, and then reach the parent's
    receivers in the order they happened."""
    with LocalNode() as node:
        cache = ElastiCache(node.address, {"OPTIONS": RECEIVER_OPTIONS})
        cache.set("k", "v")
        _marked_down(cache, node)
        assert blocking_receiver.running.wait(timeout=BOUND), "node_down never delivered"
        _answering_again(cache)
        _marked_down(cache, node)
        _answering_again(cache)
        assert blocking_receiver.events == []

        returned_while_blocked, child = _fork_while_blocked(cache, blocking_receiver)
        assert returned_while_blocked, "os.fork() waited for a signal receiver"
        assert child == 0
        expected = ["node_down", "node_up", "node_down", "node_up"]
        assert blocking_receiver.wait_for(4) == expected


def test_a_fork_never_waits_for_async_calls_waiting_for_a_pooled_connection() -> None:
    """With no deadline (``timeout`` None) and the one pooled connection held by a call to a
    frozen node, the asyncio calls waiting for a connection wait on their loop, not on the
    cache's worker threads (which a fork parks), so ``os.fork()`` returns at once; once the
    node goes on, every call completes."""
    callers = 8
    with LocalNode() as node:
        options = {"discovery": "off", "timeout": None, "max_pool_size": 1}
        cache = ElastiCache(node.address, {"OPTIONS": options})
        # A key per call: identical reads would join the first one's request, not wait.
        cache.set_many({f"k{i}": "v" for i in range(callers)})
        assert node.pid is not None
        results: list[Any] = []

        async def burst() -> None:
            results.extend(await asyncio.gather(*(cache.aget(f"k{i}") for i in range(callers))))

        def waits() -> int:
            count: int = cache.metrics()["nodes"][node.address]["pool_waits"]
            return count

        loop_thread = threading.Thread(target=lambda: asyncio.run(burst()), daemon=True)
        freeze(node.pid)
        try:
            loop_thread.start()
            deadline = time.monotonic() + BOUND
            while waits() < callers - 1:
                assert time.monotonic() < deadline, "the calls never waited for the pool"
                time.sleep(0.01)  # polling the condition, bounded above
            forking = ForkingThread(lambda: os._exit(0))
            forking.start()
            forking.join(timeout=BOUND)
            returned = not forking.is_alive()
        finally:
            os.kill(node.pid, signal.SIGCONT)
        forking.join(timeout=BOUND)
        assert returned, "os.fork() waited for calls waiting for a pooled connection"
        assert forking.pid is not None
        assert _exit_code(forking.pid) == 0
        loop_thread.join(timeout=BOUND)
        assert results == ["v"] * callers
