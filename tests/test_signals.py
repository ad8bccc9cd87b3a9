"""Django signals for what happens to the cluster (``django_elasticache_rs.signals``), against
a local cluster and real memcached nodes: membership changes, a node marked down and answering
again, a failed discovery; each sent once, in order, from outside the cache call."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.dispatch import Signal

from django_elasticache_rs import CacheTimeoutError, signals
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster, LocalNode
from tests.support.processes import freeze

BOUND = 10.0


class Received:
    """What the package's signals delivered, with the thread each came on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.threads: set[int] = set()
        self._changed = threading.Condition()

    def receiver(self, name: str) -> Callable[..., None]:
        def receive(sender: Any, **kwargs: Any) -> None:
            assert sender is ElastiCache
            kwargs.pop("signal", None)
            with self._changed:
                self.events.append((name, kwargs))
                self.threads.add(threading.get_ident())
                self._changed.notify_all()

        return receive

    def wait_for(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        """The first ``count`` events ``name``, waiting for them (bounded)."""
        with self._changed:
            self._changed.wait_for(
                lambda: len([e for e in self.events if e[0] == name]) >= count, timeout=BOUND
            )
            found = [kwargs for event, kwargs in self.events if event == name]
        assert len(found) >= count, f"{name}: {self.events}"
        return found[:count]


@pytest.fixture
def received() -> Iterator[Received]:
    got = Received()
    connected: list[tuple[Signal, Callable[..., None]]] = []
    for name in ("membership_changed", "node_down", "node_up", "discovery_failed"):
        sig = getattr(signals, name)
        handler = got.receiver(name)
        sig.connect(handler, weak=False)
        connected.append((sig, handler))
    try:
        yield got
    finally:
        for sig, handler in connected:
            sig.disconnect(handler)


def test_membership_changes_are_signalled_with_what_changed(received: Received) -> None:
    with LocalCluster(nodes=2) as cluster:
        cache = ElastiCache(
            cluster.configuration_endpoint, {"OPTIONS": {"discovery_interval": None}}
        )
        cache.set("k", "v")
        [first] = received.wait_for("membership_changed")
        assert sorted(first["added"]) == sorted(cluster.addresses)
        assert (first["removed"], first["version"]) == ([], cluster.version)
        assert first["location"] == [cluster.configuration_endpoint]
        new = cluster.add_node()
        cache.client.refresh()
        second = received.wait_for("membership_changed", 2)[1]
        assert (second["added"], second["removed"]) == ([new.address], [])
        assert second["version"] == cluster.version
    assert threading.get_ident() not in received.threads, "sent from the cache's own thread"


def test_a_node_marked_down_then_answering_again_is_signalled_once_each(
    received: Received,
) -> None:
    with LocalNode() as node:
        options = {"timeout": 0.3, "retry_attempts": 1, "dead_timeout": 0.5}
        cache = ElastiCache(node.address, {"OPTIONS": {"discovery": "off", **options}})
        cache.set("k", "v")
        freeze(node.pid)
        try:
            with pytest.raises(CacheTimeoutError):
                cache.get("k")
        finally:
            os.kill(node.pid, signal.SIGCONT)
        [down] = received.wait_for("node_down")
        assert (down["node"], down["failures"], down["retry_in"]) == (node.address, 1, 0.5)
        # Once dead_timeout has passed, the next call reaches the node again.
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            try:
                if cache.get("k") == "v":
                    break
            except Exception:  # still marked down: fails fast until dead_timeout passes
                time.sleep(0.05)  # polling interval, not synchronisation
        [up] = received.wait_for("node_up")
        assert up["node"] == node.address
        assert [name for name, _ in received.events] == ["node_down", "node_up"]


def test_a_failed_discovery_is_signalled(received: Received) -> None:
    with LocalCluster(nodes=1) as cluster:
        cache = ElastiCache(
            cluster.configuration_endpoint,
            {"OPTIONS": {"discovery_interval": None, "timeout": 0.5}},
        )
        cache.set("k", "v")
        cluster.stop_endpoint()
        with pytest.raises(Exception):  # noqa: B017 (the error itself is tested elsewhere)
            cache.client.refresh()
        [failed] = received.wait_for("discovery_failed")
        assert failed["endpoint"] == cluster.configuration_endpoint
        assert failed["error"]
        # The cache goes on with the last good membership.
        assert cache.get("k") == "v"


def test_a_receiver_that_raises_is_logged_and_the_others_still_run(
    received: Received, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.membership_changed.connect(broken, weak=False)
    try:
        with LocalCluster(nodes=1) as cluster:
            cache = ElastiCache(
                cluster.configuration_endpoint, {"OPTIONS": {"discovery_interval": None}}
            )
            cache.set("k", "v")  # the first discovery: a membership change
            received.wait_for("membership_changed")
            deadline = time.monotonic() + BOUND
            while time.monotonic() < deadline and "receiver bug" not in caplog.text:
                time.sleep(0.01)  # polling interval: the log comes from the worker thread
            assert "Error calling" in caplog.text  # Django's own record of send_robust
            assert "receiver bug" in caplog.text
            assert cache.get("k") == "v"
    finally:
        signals.membership_changed.disconnect(broken)
