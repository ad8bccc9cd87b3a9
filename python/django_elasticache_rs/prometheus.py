"""Prometheus metrics: the client's counters and gauges (``cache.metrics()``) under
``elasticache_`` names, with ``OPTIONS["metrics"] = "prometheus"`` (``pip install
django-elasticache-rs[prometheus]``).

Labels are ``node`` (``host:port``), ``command``, ``outcome`` (``hit``/``miss``) and ``kind`` (of
error); never a key. Every client of the process on a node (two aliases with their own
``OPTIONS`` are two clients) adds up into one series per label set: Prometheus drops a series
exported twice. A node that leaves the cluster takes its series with it. Two ways, chosen by
``prometheus_client`` itself:

* One process (``PROMETHEUS_MULTIPROC_DIR`` unset): a collector reads the counters when
  Prometheus scrapes, so nothing runs per call or per request.
* Several processes (gunicorn workers with ``PROMETHEUS_MULTIPROC_DIR`` set, as
  ``prometheus_client``'s multiprocess mode wants): each process writes its totals to files of
  its own in the shared directory, which ``prometheus_client``'s collector sums. That happens at
  a request's end (the backend's ``close()``, which Django calls), at most once a second per
  process, so a scrape lags by at most that. A node's series are in files of their own (per
  process and node), so that the first process to see the node leave can empty every
  process's share of it, the exited workers' included: ``prometheus_client`` keeps those for
  its counters to stay monotonic, and no other way would drop the node's series.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, cast

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from django_elasticache_rs._registry import CLIENT_COUNTERS, CLIENT_GAUGES, exporting_clients

_Read = Callable[[dict[str, Any]], Iterable[tuple[str, int]]]


class _File(Protocol):
    """What is used of ``prometheus_client``'s ``MmapedDict`` (a process's file of values in
    the multiprocess directory), which has no annotations."""

    def read_all_values(self) -> Iterator[tuple[str, float, float]]: ...
    def write_value(self, key: str, value: float, timestamp: float) -> None: ...
    def close(self) -> None: ...


_open_file = cast(Callable[[str], _File], MmapedDict)
_go_float = cast(Callable[[float], str], floatToGoString)

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
        "coalesced",
        "Reads that joined an identical read in flight instead of sending their own.",
        None,
        lambda n: (("", n["coalesced"]),),
    ),
    (
        "local_hits",
        "Reads served from the local tier instead of the node (local_cache).",
        None,
        lambda n: (("", n["local_hits"]),),
    ),
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
_DURATION = "elasticache_request_duration_seconds"
_DURATION_HELP = "Time of an exchange with a node, from its lease to its end."

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
#: The buckets' ``le`` labels, as ``prometheus_client`` writes them.
_LE = tuple(_go_float(bound) for bound in _BOUNDS_SECONDS)
_BUCKET, _SUM = "duration_bucket", "duration_sum"

#: One series of a node: (what, label value): ("requests", "get"), ("marked_down", ""),
#: (_BUCKET, "0.001") with the cumulative count, (_SUM, "").
_Series = tuple[str, str]
#: A node's series, by node (``host:port``).
_Nodes = dict[str, dict[_Series, float]]


def _clients() -> list[Any]:
    return exporting_clients("prometheus")


def _series(reading: dict[str, Any]) -> _Nodes:
    """A client's ``metrics()`` as its series, by node."""
    nodes: _Nodes = {}
    for node, counted in reading["nodes"].items():
        series: dict[_Series, float] = {}
        for name, _, _, read in _NODE_COUNTERS:
            for value, count in read(counted):
                series[name, value] = count
        latency = counted["latency_seconds"]
        for le, (_, cumulative) in zip(_LE, latency["buckets"], strict=True):
            series[_BUCKET, le] = cumulative
        series[_SUM, ""] = latency["sum"]
        nodes[node] = series
    return nodes


class _Tally:
    """Per node and series, the sum over the process's clients, never decreasing while the
    node is exported: Prometheus reads a counter that goes down as a reset, and would count
    the whole remaining value again.

    The sum of two clients goes down when one of them stops counting a node that the other
    still has (it dropped the node from its membership before the other; or the node left and
    came back between two readings, restarting the client's counters): what that client had
    counted is kept, retired, as long as the node is exported. A node no client has any more is
    dropped with its retired counts; ``update`` says which of those left the cluster (a client
    still there stopped counting it), as opposed to clients that went away
    (``forget_shared_clients``), which take their counts with them."""

    def __init__(self) -> None:
        # The last reading, by client (its id: the native client takes no weak reference).
        self._last: dict[int, _Nodes] = {}
        self._retired: _Nodes = {}

    def update(self, readings: dict[int, _Nodes]) -> tuple[_Nodes, set[str]]:
        """The totals of the nodes some client has, and the nodes that left since last time."""
        present = {node for nodes in readings.values() for node in nodes}
        departed: set[str] = set()
        for client, before in self._last.items():
            now = readings.get(client)
            if now is None:
                continue  # the client went away
            for node, last in before.items():
                current = now.get(node)
                if current is not None and all(current.get(s, 0) >= v for s, v in last.items()):
                    continue  # still counting
                if node not in present:
                    departed.add(node)
                    continue
                retired = self._retired.setdefault(node, {})
                for s, v in last.items():
                    retired[s] = retired.get(s, 0) + v
        self._retired = {node: r for node, r in self._retired.items() if node in present}
        self._last = readings
        totals: _Nodes = {node: dict(self._retired.get(node, {})) for node in present}
        for nodes in readings.values():
            for node, series in nodes.items():
                total = totals[node]
                for s, v in series.items():
                    total[s] = total.get(s, 0) + v
        return totals, departed


def _labels(label: str | None) -> list[str]:
    return ["node"] + ([label] if label else [])


class _Collector(Collector):
    """One process: the counters read when Prometheus scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tally = _Tally()

    def collect(self) -> Iterator[Any]:
        readings = {id(client): client.metrics() for client in _clients()}
        with self._lock:  # two scrapes at once
            totals, _ = self._tally.update({c: _series(r) for c, r in readings.items()})
        for name, help_text, label, _ in _NODE_COUNTERS:
            family = CounterMetricFamily(f"elasticache_{name}", help_text, labels=_labels(label))
            for node, total in totals.items():
                for (what, value), count in total.items():
                    if what == name:
                        family.add_metric([node] + ([value] if label else []), count)
            yield family
        for name, help_text in CLIENT_COUNTERS:
            family = CounterMetricFamily(f"elasticache_{name}", help_text)
            family.add_metric([], sum(reading[name] for reading in readings.values()))
            yield family
        for name, _, help_text in CLIENT_GAUGES:
            gauge = GaugeMetricFamily(f"elasticache_{name}", help_text)
            gauge.add_metric([], sum(reading[name] for reading in readings.values()))
            yield gauge
        version = GaugeMetricFamily(
            "elasticache_config_version", "The cluster configuration version in use."
        )
        versions = [
            r["config_version"] for r in readings.values() if r["config_version"] is not None
        ]
        if versions:
            version.add_metric([], max(versions))
        yield version
        duration = HistogramMetricFamily(_DURATION, _DURATION_HELP, labels=["node"])
        for node, total in totals.items():
            buckets = [(le, total[_BUCKET, le]) for le in _LE]
            duration.add_metric([node], buckets, total[_SUM, ""])
        yield duration


#: The names of a node's files in the multiprocess directory: ``counter_`` or ``histogram_``
#: (``prometheus_client`` reads the type from the name), then ``elasticache-PID-NODE.db`` with
#: the node in hexadecimal (any ``host:port`` makes a file name, and none ends another's).
_PREFIX = "elasticache-"
_KINDS = ("counter", "histogram")
#: What an emptied file holds: ``prometheus_client``'s header of a file with no entry (8 bytes
#: used). Emptied rather than removed: its collector fails the scrape when a counter file goes
#: between its listing of the directory and its reading of the file.
_EMPTY = struct.pack("i", 8) + b"\0" * 4


def _file_name(kind: str, pid: int, node: str) -> str:
    return f"{kind}_{_PREFIX}{pid}-{node.encode().hex()}.db"


class _NodeFiles:
    """This process's two files for one node's series (see ``_file_name``), written with the
    process's totals.

    ``offset`` is what the totals held when another process emptied the files (the node left
    in its eyes): only what is counted after is written again. ``base`` is what the files held
    when opened: a previous process of the same id (or this one, before its clients on the node
    went away) counted it, and it stays counted."""

    def __init__(self, directory: str, node: str, offset: dict[_Series, float]) -> None:
        self.node = node
        self.offset = offset
        self.paths = {
            kind: os.path.join(directory, _file_name(kind, os.getpid(), node)) for kind in _KINDS
        }
        self.files = {kind: _open_file(path) for kind, path in self.paths.items()}
        self.inodes = {kind: _inode(path) for kind, path in self.paths.items()}
        self.base = {
            key: value for file in self.files.values() for key, value, _ in file.read_all_values()
        }
        self._keys: dict[_Series, str] = {}

    def emptied(self) -> bool:
        """Whether another process emptied the files since they were opened (see ``_empty``)."""
        return any(_inode(self.paths[kind]) != self.inodes[kind] for kind in _KINDS)

    def _key(self, series: _Series) -> str:
        key = self._keys.get(series)
        if key is None:
            what, value = series
            if what == _BUCKET:
                labels = (["node", "le"], [self.node, value])
                key = mmap_key(_DURATION, f"{_DURATION}_bucket", *labels, _DURATION_HELP)
            elif what == _SUM:
                key = mmap_key(_DURATION, f"{_DURATION}_sum", ["node"], [self.node], _DURATION_HELP)
            else:
                [(help_text, label)] = [(h, la) for n, h, la, _ in _NODE_COUNTERS if n == what]
                key = mmap_key(
                    f"elasticache_{what}",
                    f"elasticache_{what}_total",
                    _labels(label),
                    [self.node] + ([value] if label else []),
                    help_text,
                )
            self._keys[series] = key
        return key

    def write(self, total: dict[_Series, float]) -> None:
        counted = {s: v - self.offset.get(s, 0) for s, v in total.items()}
        # A series appears once it counts something, as prometheus_client's own do (and a node
        # another process emptied does not come back as zeros); a histogram with all its buckets.
        histogram = counted[_BUCKET, "+Inf"] > 0
        # prometheus_client's histogram files hold each bucket's own count, not cumulative.
        previous = 0.0
        for le in _LE:
            cumulative = counted[_BUCKET, le]
            counted[_BUCKET, le], previous = cumulative - previous, cumulative
        for series, value in counted.items():
            key = self._key(series)
            value = self.base.get(key, 0.0) + max(value, 0.0)
            if series[0] in (_BUCKET, _SUM):
                if histogram or value:
                    self.files["histogram"].write_value(key, value, 0.0)
            elif value:
                self.files["counter"].write_value(key, value, 0.0)

    def close(self) -> None:
        for file in self.files.values():
            file.close()


def _inode(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _empty(directory: str, node: str) -> None:
    """Empties every process's files of ``node``: its series are gone from the next scrape.
    Each is replaced (never written in place, where its process may be writing), so a process
    still writing to its old file writes to nothing (and sees it, ``_NodeFiles.emptied``)."""
    suffix = f"-{node.encode().hex()}.db"
    for name in os.listdir(directory):
        if name.endswith(suffix) and any(name.startswith(f"{k}_{_PREFIX}") for k in _KINDS):
            path = os.path.join(directory, name)
            temporary = f"{path}.{os.getpid()}.tmp"  # not a .db: the collector skips it
            with open(temporary, "wb") as file:
                file.write(_EMPTY)
            os.replace(temporary, path)


class _Pusher:
    """Several processes: each client's counters, summed per node into this process's files
    (see ``_NodeFiles``), at most once a second."""

    INTERVAL = 1.0

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._last_push = 0.0
        self._tally = _Tally()
        self._files: dict[str, _NodeFiles] = {}
        # The per-client totals already added to the Counters below.
        self._client_totals: dict[str, float] = {}
        self._client_counters = {
            name: Counter(f"elasticache_{name}", help_text) for name, help_text in CLIENT_COUNTERS
        }
        self._version = Gauge(
            "elasticache_config_version",
            "The cluster configuration version in use.",
            multiprocess_mode="max",
        )
        # What each process holds now, summed over the live ones (an exited worker's share
        # goes once gunicorn's child_exit hook calls prometheus_client's mark_process_dead).
        self._gauges = {
            name: Gauge(f"elasticache_{name}", help_text, multiprocess_mode="livesum")
            for name, _, help_text in CLIENT_GAUGES
        }

    def push(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_push < self.INTERVAL:
            return
        if not self._lock.acquire(blocking=False):
            return  # another thread of this process is pushing
        try:
            if os.getpid() != self._pid:
                # A forked child: its clients' counters start again from zero, in files of its
                # own; the parent's stay the parent's.
                for files in self._files.values():
                    files.close()
                self._pid, self._tally, self._files = os.getpid(), _Tally(), {}
                self._client_totals = {}
            self._last_push = now
            self._push(_clients())
        finally:
            self._lock.release()

    def _push(self, clients: list[Any]) -> None:
        readings = {id(client): client.metrics() for client in clients}
        totals, departed = self._tally.update({c: _series(r) for c, r in readings.items()})
        for node in departed:
            _empty(self._directory, node)
        for node in list(self._files):
            if node not in totals:
                # Left the cluster (emptied above), or its clients went away: what the files
                # hold stays counted, as an exited worker's does.
                self._files.pop(node).close()
        for node, total in totals.items():
            files = self._files.get(node)
            if files is not None and files.emptied():
                # Another process saw the node leave and emptied every process's files; this
                # one still has it (its discovery is behind, or the node came back): it counts
                # again from what it counts from now on.
                files.close()
                files = self._files[node] = _NodeFiles(self._directory, node, offset=total)
            elif files is None:
                files = self._files[node] = _NodeFiles(self._directory, node, offset={})
            files.write(total)
        for name, _ in CLIENT_COUNTERS:
            total = sum(reading[name] for reading in readings.values())
            gained = total - self._client_totals.get(name, 0)
            self._client_totals[name] = total
            if gained > 0:  # less: a client went away (forget_shared_clients)
                self._client_counters[name].inc(gained)
        for name, gauge in self._gauges.items():
            gauge.set(sum(reading[name] for reading in readings.values()))
        versions = [
            r["config_version"] for r in readings.values() if r["config_version"] is not None
        ]
        if versions:
            self._version.set(max(versions))


_installed: _Pusher | bool | None = False
_install_lock = threading.Lock()


def _multiprocess_directory() -> str | None:
    return (
        os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        or os.environ.get("prometheus_multiproc_dir")
        or None
    )


def multiprocess() -> bool:
    """Whether ``prometheus_client`` runs in multiprocess mode (as it decides it)."""
    return _multiprocess_directory() is not None


def install() -> None:
    """Sets the export up, once per process: the collector, or the multiprocess pusher."""
    global _installed
    with _install_lock:
        if _installed is not False:
            return
        directory = _multiprocess_directory()
        if directory is not None:
            _installed = _Pusher(directory)
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
