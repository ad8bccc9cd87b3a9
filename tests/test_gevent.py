"""Under gevent (issue 13): with ``socket`` monkey-patched, the blocking calls yield to gevent's
hub while they wait on the network, so a node that does not answer never stalls the other
greenlets; ``OPTIONS["gevent"]`` ("auto", the default, True or False) can turn that off.

Monkey-patching must happen at process start and must not reach pytest's own process: each
scenario runs ``tests/support/gevent_scenario.py`` in a fresh interpreter against two real
memcached nodes, one of them stopped (SIGSTOP) for the scenario and always continued after.
Assertions are on the order of events in that process, not on how long anything took."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.processes import stopped

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIO = REPO_ROOT / "tests" / "support" / "gevent_scenario.py"
DEADLINES = REPO_ROOT / "tests" / "support" / "gevent_deadlines.py"
GREENLETS = 20
READS = 40
# The frozen call's deadline: the healthy greenlets' 800 calls take a small part of it.
TIMEOUT = 2


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[LocalNode, LocalNode]]:
    """A healthy node and one to stop, of this module's own."""
    with LocalNode() as healthy, LocalNode() as frozen:
        yield healthy, frozen


def run_script(script: Path, spec: dict[str, Any], loop: str | None = None) -> dict[str, Any]:
    """Runs ``script`` (a gevent process of its own, given ``spec``, on gevent's ``loop``
    implementation or its default) and returns the report it prints last; every greenlet of
    it must have ended."""
    env = dict(os.environ)
    if loop is not None:
        env["GEVENT_LOOP"] = loop
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(spec)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["all_done"], report
    return report


def run_while_stopped(
    frozen: LocalNode, script: Path, spec: dict[str, Any], loop: str | None = None
) -> dict[str, Any]:
    """``run_script`` while ``frozen`` is stopped."""
    with stopped(frozen):
        return run_script(script, spec, loop)


def scenario(
    nodes: tuple[LocalNode, LocalNode],
    options: dict[str, Any],
    frozen_call: str = "get",
    *,
    epoll: bool = True,
) -> dict[str, Any]:
    healthy, frozen = nodes
    spec = {
        "healthy": healthy.address,
        "frozen": frozen.address,
        "options": {"timeout": TIMEOUT, **options},
        "frozen_call": frozen_call,
        "greenlets": GREENLETS,
        "reads": READS,
        "epoll": epoll,
    }
    report = run_while_stopped(frozen, SCENARIO, spec)
    assert report["failures"] == [], "every healthy call returned what it should"
    log = report["log"]
    assert log.count("healthy-done") == GREENLETS
    assert log[0] == "frozen-start"
    return report


def healthy_done_before_frozen_end(report: dict[str, Any]) -> int:
    log = report["log"]
    return int(log[: log.index("frozen-end")].count("healthy-done"))


def test_each_greenlets_call_times_out_at_its_own_deadline(
    nodes: tuple[LocalNode, LocalNode],
) -> None:
    """A hub's waits share one deadline timer, set at the earliest: a call with a short
    timeout started after one with a long timeout still ends first, as a timeout, while the
    other goes on waiting; killed, that one ends at once."""
    _, frozen = nodes
    report = run_while_stopped(frozen, DEADLINES, {"frozen": frozen.address})
    assert report["log"] == ["short-CacheTimeoutError", "long-waiting", "long-killed"]


HUB_LOOP = REPO_ROOT / "tests" / "support" / "gevent_hub_loop.py"


@pytest.mark.parametrize("loop", ["libev-cext", "libuv-cffi"])
def test_a_lone_wait_keeps_the_hub_running_and_nothing_is_left_after(
    nodes: tuple[LocalNode, LocalNode], loop: str
) -> None:
    """The hub's poller is watched by one io watcher that holds the hub's loop only while a
    greenlet waits: the main greenlet waiting alone on a stopped node reaches its deadline
    (rather than gevent's ``LoopExit``), and once the calls are over ``gevent.wait()`` returns
    (rather than waiting for its bound). On both of gevent's loops (libuv's multiplexes an
    fd's watchers)."""
    healthy, frozen = nodes
    spec = {"scenario": "alone", "frozen": frozen.address, "healthy": healthy.address}
    report = run_while_stopped(frozen, HUB_LOOP, spec, loop)
    assert report["log"] == ["frozen-CacheTimeoutError", "healthy-v", "wait-True"]


def test_a_forked_child_waits_on_a_poller_of_its_own(
    nodes: tuple[LocalNode, LocalNode],
) -> None:
    """After a fork, parent and child read at the same time, each through its own hub's
    poller: the parent's epoll set, which the child inherits, would hand either process the
    other's events."""
    healthy, _ = nodes
    report = run_script(HUB_LOOP, {"scenario": "fork", "healthy": healthy.address})
    assert report["child_own_poller"] is True
    assert report["log"] == ["parent-read-1000", "child-read-1000"]


@pytest.mark.parametrize(
    "options",
    [{}, {"gevent": "auto"}, {"gevent": True}],
    ids=["default", "auto", "on"],
)
def test_a_frozen_node_never_stalls_the_other_greenlets(
    nodes: tuple[LocalNode, LocalNode], options: dict[str, Any]
) -> None:
    report = scenario(nodes, options)
    assert healthy_done_before_frozen_end(report) == GREENLETS, (
        "every healthy greenlet finished while the frozen call was still waiting"
    )
    assert report["frozen_outcome"] == ["raised", "CacheTimeoutError"]


def test_without_epoll_each_wait_is_a_loop_watcher_and_nothing_stalls(
    nodes: tuple[LocalNode, LocalNode],
) -> None:
    """Where there is no epoll, the hub's poller has the loop watch each socket itself (an io
    watcher per wait): the same scenario, the same outcome."""
    report = scenario(nodes, {}, epoll=False)
    assert healthy_done_before_frozen_end(report) == GREENLETS
    assert report["frozen_outcome"] == ["raised", "CacheTimeoutError"]


def test_under_ignore_exc_the_frozen_call_ends_as_a_miss(
    nodes: tuple[LocalNode, LocalNode],
) -> None:
    report = scenario(nodes, {"ignore_exc": True})
    assert healthy_done_before_frozen_end(report) == GREENLETS
    assert report["frozen_outcome"] == ["returned", "default"]


def test_a_batch_over_both_nodes_waits_without_stalling_the_others(
    nodes: tuple[LocalNode, LocalNode],
) -> None:
    """``get_many`` of keys of both nodes: its healthy part is read, its frozen part times
    out (a miss under ``ignore_exc``), and the other greenlets ran meanwhile."""
    report = scenario(nodes, {"ignore_exc": True}, frozen_call="get_many")
    assert healthy_done_before_frozen_end(report) == GREENLETS
    outcome, found = report["frozen_outcome"]
    assert outcome == "returned"
    assert found and all(key.startswith("healthy-") for key in found), found


def test_with_gevent_off_a_call_blocks_the_whole_process(
    nodes: tuple[LocalNode, LocalNode],
) -> None:
    """``OPTIONS["gevent"] = False`` keeps the blocking behaviour: no other greenlet runs
    until the frozen call is over."""
    report = scenario(nodes, {"gevent": False})
    assert healthy_done_before_frozen_end(report) == 0
    log = report["log"]
    assert "healthy-start" not in log[: log.index("frozen-end")]
    assert report["frozen_outcome"] == ["raised", "CacheTimeoutError"]


# -- waiting for a pooled connection -----------------------------------------------------------

POOL_BURST = REPO_ROOT / "tests" / "support" / "gevent_pool_burst.py"
BURST = 32


def test_a_burst_beyond_max_pool_size_leaves_the_hubs_thread_pool_free(
    nodes: tuple[LocalNode, LocalNode],
) -> None:
    """32 greenlets call a stopped node with ``max_pool_size=1``: one holds the connection, 31
    wait for it without a thread (the hub's thread pool, which gevent's resolver uses, is
    never given any of the cache's work), so a name lookup made meanwhile completes before any
    call of the burst ends. Each waiting call is counted once as a pool wait."""
    _, frozen = nodes
    spec = {
        "node": frozen.address,
        "options": {"max_pool_size": 1, "timeout": TIMEOUT},
        "greenlets": BURST,
    }
    report = run_while_stopped(frozen, POOL_BURST, spec)
    log = report["log"]
    assert log.count("burst-start") == BURST
    assert log.index("lookup-start") > max(i for i, e in enumerate(log) if e == "burst-start")
    assert "burst-end" not in log[: log.index("lookup-done")], f"the lookup waited: {log}"
    assert report["resolved"]
    assert report["hub_pool_busy_during_burst"] == 0, report
    # Only the lookup ran on the hub's pool: connecting ran on the cache's own.
    assert report["on_hub_pool"] == ["getaddrinfo"], report
    assert report["pool_waits"] == BURST - 1, report
    # The holder times out; each waiter at its own deadline, just after: as a pool exhausted,
    # or, given the room the holder's closed connection leaves, as a connect or a request to
    # the stopped node that cannot finish in time.
    assert report["outcomes"][0] == "CacheTimeoutError", report
    assert set(report["outcomes"]) <= {"CacheTimeoutError", "CacheConnectionError"}, report


# -- the option ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["auto", True, False])
def test_the_option_accepts_auto_true_and_false(value: object) -> None:
    """Accepted where Django builds the cache; this process is not monkey-patched, so every
    value leaves the calls blocking, as they should be here."""
    cache = ElastiCache("127.0.0.1:11211", {"OPTIONS": {"discovery": "off", "gevent": value}})
    assert cache._native is not None


@pytest.mark.parametrize("value", ["on", "yes", 1, 0])
def test_the_option_refuses_anything_else_naming_itself(value: object) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['gevent'\]"):
        ElastiCache("127.0.0.1:11211", {"OPTIONS": {"discovery": "off", "gevent": value}})
