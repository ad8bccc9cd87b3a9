"""Identical reads in flight share one request (issue 23, ``coalesce_reads``): across asyncio
tasks, threads and greenlets, a read of a key this process is already reading from the same
node joins that read. Shown against real memcached: its ``cmd_get`` stat counts the requests
that reached it. Never across a write the process completed after the shared request was sent;
failures reach every joined caller; a cancelled leader leaves the others their value.

A read is held in flight by stopping its node (SIGSTOP): the joined callers are counted by the
client's ``coalesced`` counter, which the tests wait on (bounded) before letting the node go
on."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from django_elasticache_rs import CacheTimeoutError
from django_elasticache_rs._native import DONE, READ, Operation
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.backends import cmd_get, own_backend
from tests.support.processes import stopped

REPO_ROOT = Path(__file__).resolve().parent.parent
# The longest a condition is waited for before the test fails (never a measure of speed).
BOUND = 30


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    """A node of this module's own: it is stopped and continued."""
    with LocalNode() as local:
        yield local


def backend(node: LocalNode, **options: Any) -> ElastiCache:
    return own_backend(node.address, "coalesce", **{"timeout": 10, **options})


def coalesced(cache: ElastiCache) -> int:
    return sum(n["coalesced"] for n in cache.metrics()["nodes"].values())


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)  # polling interval


async def until_async(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)  # polling interval; lets the loop's tasks run


def run(awaitable: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(awaitable, timeout=BOUND)

    return asyncio.run(bounded())


def test_200_tasks_reading_one_key_send_one_get(node: LocalNode) -> None:
    cache = backend(node)
    cache.set("hot", "value")
    assert cache.get("warm-up") is None  # a pooled connection
    before, joined = cmd_get(node), coalesced(cache)

    async def scenario() -> list[Any]:
        with stopped(node):
            tasks = [asyncio.ensure_future(cache.aget("hot")) for _ in range(200)]
            await until_async(lambda: coalesced(cache) - joined == 199, "199 joined reads")
        return await asyncio.gather(*tasks)

    assert run(scenario()) == ["value"] * 200
    assert cmd_get(node) - before == 1


def test_32_threads_reading_one_key_send_one_get(node: LocalNode) -> None:
    cache = backend(node)
    cache.set("hot", "value")
    assert cache.get("warm-up") is None
    before, joined = cmd_get(node), coalesced(cache)
    values: list[Any] = []
    with stopped(node):
        threads = [
            threading.Thread(target=lambda: values.append(cache.get("hot"))) for _ in range(32)
        ]
        for thread in threads:
            thread.start()
        until(lambda: coalesced(cache) - joined == 31, "31 joined reads")
    for thread in threads:
        thread.join(BOUND)
    assert values == ["value"] * 32
    assert cmd_get(node) - before == 1


def test_a_batch_key_joins_a_read_in_flight(node: LocalNode) -> None:
    cache = backend(node)
    cache.set_many({"hot": "value", "cold": "other"})
    assert cache.get("warm-up") is None
    joined = coalesced(cache)

    async def scenario() -> list[Any]:
        with stopped(node):
            single = asyncio.ensure_future(cache.aget("hot"))
            await asyncio.sleep(0)  # its request is on its way
            batch = asyncio.ensure_future(cache.aget_many(["hot", "cold"]))
            await until_async(lambda: coalesced(cache) - joined == 1, "the batch's key to join")
        return await asyncio.gather(single, batch)

    assert run(scenario()) == ["value", {"hot": "value", "cold": "other"}]


def test_off_every_read_sends_its_own_get(node: LocalNode) -> None:
    cache = backend(node, coalesce_reads=False)
    cache.set("hot", "value")
    assert cache.get("warm-up") is None
    before = cmd_get(node)

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(cache.aget("hot") for _ in range(20)))

    assert run(scenario()) == ["value"] * 20
    assert cmd_get(node) - before == 20
    assert coalesced(cache) == 0


def drive(operation: Operation) -> Any:
    """Runs an operation already advanced once to its end, as an event driver would."""
    while operation.advance() != DONE:
        wait = operation.wait_for()
        if wait is not None:
            fd, interest = wait
            writable = [] if interest == READ else [fd]
            select.select([fd], writable, [], BOUND)
    return operation.outcome()


def test_a_thread_joins_a_read_an_event_driver_leads(node: LocalNode) -> None:
    """The leader is an operation this thread advances by hand: the joined thread waits until
    it lands (its value is what the leader read)."""
    cache = backend(node)
    cache.set("k", "old")
    assert cache.get("warm-up") is None
    joined = coalesced(cache)
    prefix, version = cache.key_prefix, cache.version
    leader = cache.client.start_get("k", None, prefix, version)
    with stopped(node):
        assert leader.advance() != DONE  # sent; its reply is not read until it is driven
    seen: list[Any] = []
    reader = threading.Thread(target=lambda: seen.append(cache.get("k")))
    reader.start()
    until(lambda: coalesced(cache) - joined == 1, "the thread to join")
    assert drive(leader) == "old"
    reader.join(BOUND)
    assert seen == ["old"]


def test_a_write_by_the_process_is_seen_by_the_reads_that_follow_it(node: LocalNode) -> None:
    """A read led by an event driver is in flight (sent before the write, its reply not read):
    a thread that writes the key and reads it back must not join it. Joining it would give the
    old value, or wait for a leader that cannot run until the thread is done."""
    cache = backend(node, timeout=2)
    for write, expected in [
        (lambda: cache.set("k", "new"), "new"),
        (lambda: cache.delete("k"), None),
        (lambda: cache.set_many({"k": "many"}), "many"),
        (lambda: cache.incr("k"), 2),
        (lambda: cache.clear(), None),
    ]:
        cache.set("k", 1 if expected == 2 else "old")
        assert cache.get("warm-up") is None
        leader = cache.client.start_get("k", None, cache.key_prefix, cache.version)
        with stopped(node):
            assert leader.advance() != DONE  # sent; its reply is not read until it is driven
        seen: list[Any] = []

        def write_then_read(write: Callable[[], Any] = write, seen: list[Any] = seen) -> None:
            write()
            seen.append(cache.get("k"))

        writer = threading.Thread(target=write_then_read)
        writer.start()
        writer.join(BOUND)
        assert seen == [expected]
        drive(leader)


def test_a_failure_reaches_every_joined_caller_and_ignore_exc_applies_to_each(
    node: LocalNode,
) -> None:
    for options, expected in [({}, "raised"), ({"ignore_exc": True}, "default")]:
        cache = backend(node, timeout=0.5, retry_attempts=1000, retry_timeout=0, **options)
        cache.set("hot", "value")
        joined = coalesced(cache)

        async def one(cache: ElastiCache = cache) -> str:
            try:
                got = await cache.aget("hot", "default")
            except CacheTimeoutError:
                return "raised"
            return str(got)

        async def scenario(joined: int = joined, cache: ElastiCache = cache) -> list[str]:
            tasks = [asyncio.ensure_future(one()) for _ in range(50)]
            await until_async(lambda: coalesced(cache) - joined == 49, "49 joined reads")
            return await asyncio.gather(*tasks)

        with stopped(node):
            outcomes = run(scenario())
        assert outcomes == [expected] * 50


def test_a_cancelled_leader_leaves_the_joined_callers_their_value(node: LocalNode) -> None:
    cache = backend(node)
    cache.set("hot", "value")
    assert cache.get("warm-up") is None
    joined = coalesced(cache)

    async def scenario() -> list[Any]:
        with stopped(node):
            leader = asyncio.ensure_future(cache.aget("hot"))
            await asyncio.sleep(0)  # its request is on its way
            tasks = [asyncio.ensure_future(cache.aget("hot")) for _ in range(10)]
            await until_async(lambda: coalesced(cache) - joined == 10, "10 joined reads")
            leader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leader
        return await asyncio.gather(*tasks)

    assert run(scenario()) == ["value"] * 10


def test_greenlets_reading_one_key_send_one_get(node: LocalNode) -> None:
    cache = backend(node)
    cache.set("hot", "value")
    before = cmd_get(node)
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tests" / "support" / "gevent_coalescing.py"),
            json.dumps(
                {
                    "address": node.address,
                    "pid": node.pid,
                    "prefix": cache.key_prefix,
                    "greenlets": 100,
                }
            ),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    if node.pid is not None:
        os.kill(node.pid, signal.SIGCONT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["values"] == ["value"] * 100
    assert report["coalesced"] == 99
    # The script's warm-up read, and the one read of its 100 greenlets.
    assert cmd_get(node) - before == 2
