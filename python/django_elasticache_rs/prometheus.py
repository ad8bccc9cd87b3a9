"""Prometheus metrics: the client's counters (``cache.metrics()``) under ``elasticache_`` names,
with ``OPTIONS["metrics"] = "prometheus"`` (``pip install django-elasticache-rs[prometheus]``).

Labels are ``node`` (``host:port``), ``command``, ``outcome`` (``hit``/``miss``) and ``kind`` (of
error); never a key. Two ways, chosen by ``prometheus_client`` itself:

* One process (``PROMETHEUS_MULTIPROC_DIR`` unset): a collector reads the counters when
  Prometheus scrapes, so nothing runs per call or per request.
* Several processes (gunicorn workers with ``PROMETHEUS_MULTIPROC_DIR`` set, as
  ``prometheus_client``'s multiprocess mode wants): each process adds what its counters gained
  since last time to ``prometheus_client`` metrics, which write to the shared directory. That
  happens at a request's end (the backend's ``close()``, which Django calls), at most once a
  second per process, so a scrape lags by at most that.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

_Read = Callable[[dict[str, Any]], Iterable[tuple[str, int]]]

#: The node counters exported, as (metric name without ``elasticache_`` and ``_total``, help,
#: the label beside ``node``, and how to read (label value, count) pairs from a node's dict).
_NODE_COUNTERS: tuple[tuple[str, str, str | None, _Read], ...] = (
    ("requests", "Exchanges with a node, by command.", "command", lambda n: n["requests"].items()),
    (
        "lookups",
        "Keys read, by outcome (hit or miss).",
        "outcome",
        lambda n: (("hit", n["hits"]), ("miss", n["misses"])),
    ),
    ("errors", "Failures, by kind.", "kind", lambda n: n["errors"].items()),
    ("marked_down", "Times a node was marked down.", None, lambda n: (("", n["marked_down"]),)),
    (
        "connections_opened",
        "Connections opened to a node.",
        None,
        lambda n: (("", n["connections_opened"]),),
    ),
    (
        "pool_waits",
        "Calls that waited for a pooled connection.",
        None,
        lambda n: (("", n["pool_waits"]),),
    ),
)
_CLIENT_COUNTERS = (
    ("discoveries", "Discoveries run."),
    ("discovery_failures", "Discoveries that failed."),
    ("membership_changes", "Times the set of nodes changed."),
    ("ignored_failures", "Failures turned into a miss by ignore_exc."),
)
_DURATION = "elasticache_request_duration_seconds"
_DURATION_HELP = "Time of an exchange with a node, from its lease to its end."


def _clients() -> list[Any]:
    from django_elasticache_rs.backend import exporting_clients

    return exporting_clients("prometheus")


class _Collector(Collector):
    """One process: the counters read when Prometheus scrapes."""

    def collect(self) -> Iterator[Any]:
        readings = [client.metrics() for client in _clients()]
        for name, help_text, label, read in _NODE_COUNTERS:
            labels = ["node"] + ([label] if label else [])
            family = CounterMetricFamily(f"elasticache_{name}", help_text, labels=labels)
            for reading in readings:
                for node, counted in reading["nodes"].items():
                    for value, count in read(counted):
                        family.add_metric([node] + ([value] if label else []), count)
            yield family
        for name, help_text in _CLIENT_COUNTERS:
            family = CounterMetricFamily(f"elasticache_{name}", help_text)
            family.add_metric([], sum(reading[name] for reading in readings))
            yield family
        version = GaugeMetricFamily(
            "elasticache_config_version", "The cluster configuration version in use."
        )
        versions = [r["config_version"] for r in readings if r["config_version"] is not None]
        if versions:
            version.add_metric([], max(versions))
        yield version
        duration = HistogramMetricFamily(_DURATION, _DURATION_HELP, labels=["node"])
        for reading in readings:
            for node, counted in reading["nodes"].items():
                latency = counted["latency_seconds"]
                buckets = [
                    ("+Inf" if bound == float("inf") else repr(bound), count)
                    for bound, count in latency["buckets"]
                ]
                duration.add_metric([node], buckets, latency["sum"])
        yield duration


class _Pusher:
    """Several processes: what each client's counters gained, added to ``prometheus_client``
    metrics (which write to ``PROMETHEUS_MULTIPROC_DIR``), at most once a second."""

    INTERVAL = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._last_push = 0.0
        # Per client (by id) and per series: the count already added.
        self._seen: dict[tuple[int, str, tuple[str, ...]], float] = {}
        self._counters = {
            name: Counter(f"elasticache_{name}", help_text, ["node"] + ([label] if label else []))
            for name, help_text, label, _ in _NODE_COUNTERS
        }
        self._client_counters = {
            name: Counter(f"elasticache_{name}", help_text) for name, help_text in _CLIENT_COUNTERS
        }
        self._version = Gauge(
            "elasticache_config_version",
            "The cluster configuration version in use.",
            multiprocess_mode="max",
        )
        self._duration = Histogram(_DURATION, _DURATION_HELP, ["node"], buckets=_BOUNDS_SECONDS)

    def _gain(self, client: Any, metric: str, labels: tuple[str, ...], count: float) -> float:
        key = (id(client), metric, labels)
        gained = count - self._seen.get(key, 0.0)
        self._seen[key] = count
        return gained if gained > 0 else 0.0

    def push(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_push < self.INTERVAL:
            return
        if not self._lock.acquire(blocking=False):
            return  # another thread of this process is pushing
        try:
            if os.getpid() != self._pid:
                # A forked child: the counters it inherited start again from zero.
                self._pid, self._seen = os.getpid(), {}
            self._last_push = now
            for client in _clients():
                self._push_client(client)
        finally:
            self._lock.release()

    def _push_client(self, client: Any) -> None:
        reading = client.metrics()
        for name, _, label, read in _NODE_COUNTERS:
            for node, counted in reading["nodes"].items():
                for value, count in read(counted):
                    labels = (node, value) if label else (node,)
                    gained = self._gain(client, name, labels, count)
                    if gained:
                        self._counters[name].labels(*labels).inc(gained)
        for name, _ in _CLIENT_COUNTERS:
            gained = self._gain(client, name, (), reading[name])
            if gained:
                self._client_counters[name].inc(gained)
        if reading["config_version"] is not None:
            self._version.set(reading["config_version"])
        for node, counted in reading["nodes"].items():
            latency = counted["latency_seconds"]
            child = self._duration.labels(node)
            previous = 0
            for index, (_, cumulative) in enumerate(latency["buckets"]):
                # prometheus_client has no public way to add counts to a bucket: its child
                # keeps one value per bucket (not cumulative) and the sum.
                in_bucket = cumulative - previous
                previous = cumulative
                gained = self._gain(client, _DURATION, (node, str(index)), in_bucket)
                if gained:
                    child._buckets[index].inc(gained)
            gained = self._gain(client, _DURATION, (node, "sum"), latency["sum"])
            if gained:
                child._sum.inc(gained)


# The native histogram's bucket bounds, in seconds (elasticache_client::LATENCY_BOUNDS_US).
_BOUNDS_SECONDS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    float("inf"),
)

_installed: _Pusher | bool | None = False
_install_lock = threading.Lock()


def multiprocess() -> bool:
    """Whether ``prometheus_client`` runs in multiprocess mode (as it decides it)."""
    return bool(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    )


def install() -> None:
    """Sets the export up, once per process: the collector, or the multiprocess pusher."""
    global _installed
    with _install_lock:
        if _installed is not False:
            return
        if multiprocess():
            _installed = _Pusher()
        else:
            REGISTRY.register(_Collector())
            _installed = None


def at_request_end() -> None:
    """Brings the multiprocess metrics up to date (at most once a second); nothing otherwise."""
    if isinstance(_installed, _Pusher):
        _installed.push()


def push_now() -> None:
    """Brings the multiprocess metrics up to date now (before a worker exits, say)."""
    if isinstance(_installed, _Pusher):
        _installed.push(force=True)
