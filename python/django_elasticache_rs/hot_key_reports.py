"""Hot-key reports (``OPTIONS["hot_keys_report"]``): each worker's hottest keys and largest
values, written into the cluster itself so that ``manage.py elasticache --hot-keys``, which runs
in a process of its own with no traffic, can show the fleet's.

At the end of a request (Django's ``close()``), at most once every ``hot_keys_report`` seconds,
a worker writes its report (``cache.hot_keys()`` and ``cache.largest_values()``, its host and
process id) as JSON under one of ``SLOTS`` keys, picked from its host and process id, living
three intervals: a worker that stops reporting drops out. Two workers whose ids pick the same
slot overwrite each other's report: what the command shows is a sample of the workers, and says
how many it heard from. The keys are the cache's own keys (its key function and prefix, version
0), in the cluster that already holds the keys they name: nothing leaves the cluster, and
nothing is exported to metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from django_elasticache_rs.exceptions import CacheError
from django_elasticache_rs.handle import Handle

#: The keys reports are written under: a worker's is ``SLOTS`` apart from most others'.
SLOTS = 1024
#: Keys (and values) each report holds.
TOP = 20
#: A report lives this many intervals.
LIFETIMES = 3
#: The version of the report keys (Django's versions start at 1: no user key has it).
VERSION = 0

_lock = threading.Lock()
#: When each native client (by id) next writes its process's report.
_due: dict[int, float] = {}


def report_key(slot: int) -> str:
    return f"django_elasticache_rs:hot_keys:{slot}"


def _slot(host: str, pid: int) -> int:
    return zlib.crc32(f"{host}:{pid}".encode()) % SLOTS


def at_request_end(
    handle: Handle,
    interval: float,
    hot: Callable[[int], list[dict[str, Any]]],
    largest: Callable[[int], list[dict[str, Any]]],
) -> None:
    """Writes this process's report if one is due (``hot`` and ``largest`` are the cache's
    ``hot_keys`` and ``largest_values``); nothing otherwise. A failure to write is the cache's
    to log (``ignore_exc`` as configured): the request is over, so it is swallowed here."""
    now = time.monotonic()
    client = id(handle.client)
    # Not due, as at the end of almost every request: no lock (the locked test below decides).
    if now < _due.get(client, 0.0):
        return
    with _lock:
        if now < _due.get(client, 0.0):
            return
        _due[client] = now + interval
    host, pid = socket.gethostname(), os.getpid()
    report = {
        "host": host,
        "pid": pid,
        "at": time.time(),
        "interval": interval,
        "hot": hot(TOP),
        "largest": largest(TOP),
    }
    expiry = max(1, round(interval * LIFETIMES))
    key = handle.key(report_key(_slot(host, pid)), VERSION)
    # Best effort: a report that cannot be written is simply not there (the failure is
    # counted and logged as any other).
    with contextlib.suppress(CacheError):
        handle.calls.set(key, json.dumps(report).encode(), expiry, *handle.scope(VERSION))


def read(handle: Handle) -> list[dict[str, Any]]:
    """The reports the cluster holds, newest first."""
    keys = [handle.key(report_key(slot), VERSION) for slot in range(SLOTS)]
    found = handle.calls.get_many(keys, *handle.scope(VERSION))
    reports = []
    for value in found.values():
        try:
            report = json.loads(value)
        except (TypeError, ValueError):
            continue
        if isinstance(report, dict) and isinstance(report.get("hot"), list):
            reports.append(report)
    reports.sort(key=lambda report: report.get("at", 0), reverse=True)
    return reports


def merge(reports: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """The fleet's view: each key's reads per second summed over the workers that reported it
    (with how many did), its largest size seen; the ``n`` first of each."""
    hot: dict[tuple[str, Any], dict[str, Any]] = {}
    largest: dict[tuple[str, Any], dict[str, Any]] = {}
    for report in reports:
        for entry in report.get("hot", []):
            slot = hot.setdefault(
                (entry["key"], entry["version"]),
                {**entry, "reads_per_second": 0.0, "workers": 0},
            )
            slot["reads_per_second"] += entry["reads_per_second"]
            slot["workers"] += 1
        for entry in report.get("largest", []):
            key = (entry["key"], entry["version"])
            if key not in largest or entry["bytes"] > largest[key]["bytes"]:
                largest[key] = dict(entry)
    return {
        "workers": len(reports),
        "hosts": len({report.get("host") for report in reports}),
        "hot_keys": sorted(hot.values(), key=lambda e: -e["reads_per_second"])[:n],
        "largest_values": sorted(largest.values(), key=lambda e: -e["bytes"])[:n],
    }
