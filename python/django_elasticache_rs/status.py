"""What the cluster and the client look like, for ``manage.py elasticache`` and the admin status
page: per cache its endpoint, mode and configuration version, and per node its state, a
measured round trip and memcached's own ``stats``."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.exceptions import CacheError

BACKEND = "django_elasticache_rs.backend.ElastiCache"

#: The client's own counters in ``cache.metrics()``.
CLIENT_COUNTERS = ("discoveries", "discovery_failures", "membership_changes", "ignored_failures")


def backend_aliases() -> list[str]:
    """The aliases of ``settings.CACHES`` that use this backend."""
    return [alias for alias, config in settings.CACHES.items() if config.get("BACKEND") == BACKEND]


def printable(text: str) -> str:
    """``text`` with every character a terminal or a browser would act on rather than show
    (escape sequences, bell, backspace, bidirectional overrides, line separators: what
    ``str.isprintable`` refuses) written as its escape (``\\x1b``, ``\\u202e``). For text a
    server supplied (its version, hostnames, error messages): a node or a configuration
    endpoint must not be able to redraw an operator's terminal or rearrange the admin page."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _text(value: str | None) -> str | None:
    return None if value is None else printable(value)


def _number(stats: dict[str, str], name: str) -> int | None:
    try:
        return int(stats[name])
    except (KeyError, ValueError):
        return None


def _reason(probe: dict[str, Any]) -> str | None:
    """Why a node is down, in words: for a node left alone after failing (marked down, or
    paused for ``retry_timeout``), the last failure (a timeout, a refused or reset connection),
    not just that it is left alone."""
    down_for, last = probe["down_for"], probe.get("last_failure")
    if down_for is not None and last:
        return f"left alone for {down_for:.0f} s more; last failure: {last}"
    error: str | None = probe["error"]
    return error


def _node(probe: dict[str, Any]) -> dict[str, Any]:
    """One node's report: the probe, and the figures read out of its stats."""
    stats: dict[str, str] | None = probe["stats"]
    node: dict[str, Any] = {
        "address": printable(probe["node"]),
        "hostname": printable(probe["hostname"]),
        "state": "up" if stats is not None and probe["down_for"] is None else "down",
        "marked_down_for": probe["down_for"],
        "round_trip": probe["round_trip"],
        "error": _text(probe["error"]),
        "last_failure": _text(probe.get("last_failure")),
        "reason": _text(_reason(probe)),
    }
    if stats is None:
        return node
    hits, misses = _number(stats, "get_hits"), _number(stats, "get_misses")
    node.update(
        version=_text(stats.get("version")),
        uptime=_number(stats, "uptime"),
        curr_items=_number(stats, "curr_items"),
        bytes=_number(stats, "bytes"),
        limit_maxbytes=_number(stats, "limit_maxbytes"),
        evictions=_number(stats, "evictions"),
        hit_ratio=(
            hits / (hits + misses)
            if hits is not None and misses is not None and hits + misses
            else None
        ),
        curr_connections=_number(stats, "curr_connections"),
    )
    return node


def report(alias: str, cache: ElastiCache) -> dict[str, Any]:
    """What ``manage.py elasticache`` says of one cache, as a dict (``--json`` prints it, the
    admin page shows it). Its text is ``printable``: the terminal, the page and JSON give the
    same."""
    client = cache.client
    endpoint = client.discovery_endpoint
    entry: dict[str, Any] = {"alias": printable(alias), "endpoint": _text(endpoint)}
    entry["cluster_events"] = cluster_events(cache.metrics())
    try:
        probes = client.probe()
    except CacheError as error:
        # No node to ask: with discovery, the endpoint did not answer the first time.
        entry.update(
            mode="discovery" if endpoint else "static", error=printable(str(error)), nodes=[]
        )
        entry["config_version"] = client.config_version
        return entry
    version = client.config_version
    if endpoint is not None and version is not None:
        mode = "discovery"
    elif len(probes) > 1:
        mode = "static"
    else:
        mode = "single node"
    entry.update(mode=mode, config_version=version, error=None, nodes=[_node(p) for p in probes])
    return entry


#: This process's counters of cluster events, as ``cache.metrics()`` names them: keys served by
#: a gutter, invalidations replayed, dropped past ``max_invalidations`` and waiting now; misses
#: read from a previous owner during a warm-up window (found there, copied to the new owner),
#: misses read through from the ``migrate_from`` cluster (found, copied), keys deleted there on
#: a write, and keys a write could not delete there (never read through from there until a
#: write does).
CLUSTER_EVENTS = (
    "gutter_reads",
    "gutter_writes",
    "invalidations_replayed",
    "invalidations_dropped",
    "invalidations_waiting",
    "warmup_reads",
    "warmup_hits",
    "warmup_copies",
    "migration_reads",
    "migration_hits",
    "migration_copies",
    "detour_deletes",
    "detour_delete_failures",
)


def cluster_events(metrics: dict[str, Any]) -> dict[str, int]:
    """What this process's client did about cluster events (``CLUSTER_EVENTS``)."""
    return {name: metrics[name] for name in CLUSTER_EVENTS}


def size(n: int | None) -> str:
    """A byte count for people: 512 B, 1.5 KB, 64.0 MB."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def duration(seconds: int | None) -> str:
    """An uptime for people: 3m 5s, 2h 10m, 4d 3h."""
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {rest // 60}m" if hours else f"{rest // 60}m {rest % 60}s"


def latency_quantile(histogram: dict[str, Any], q: float) -> float | None:
    """The upper bound (seconds) of the histogram bucket holding quantile ``q`` of the
    exchanges, as Prometheus' ``histogram_quantile`` would bound it; None before any exchange.
    An infinite bound means the quantile is past the last finite bucket (1 s)."""
    count: int = histogram["count"]
    if not count:
        return None
    rank = q * count
    for bound, seen in histogram["buckets"]:
        if seen >= rank:
            return float(bound)
    return float("inf")


def client_counters(counters: dict[str, Any]) -> dict[str, Any]:
    """One node's counters from ``cache.metrics()``, summed up for a status table."""
    hits, misses = counters["hits"], counters["misses"]
    return {
        "requests": sum(counters["requests"].values()),
        "hits": hits,
        "misses": misses,
        "hit_ratio": hits / (hits + misses) if hits + misses else None,
        "errors": sum(counters["errors"].values()),
        "errors_by_kind": {kind: n for kind, n in counters["errors"].items() if n},
        "timeouts": counters["timeouts"],
        "marked_down": counters["marked_down"],
        "connections_opened": counters["connections_opened"],
        "pool_waits": counters["pool_waits"],
        "p50": latency_quantile(counters["latency_seconds"], 0.5),
        "p99": latency_quantile(counters["latency_seconds"], 0.99),
    }
