"""The admin status page: every cache using the backend, its nodes with memcached's own
``stats`` and this process's client counters, for those the admin site lets in (see ``urls``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.status import (
    CLIENT_COUNTERS,
    backend_aliases,
    client_counters,
    duration,
    printable,
    report,
    size,
)

#: Hot keys shown per cache.
HOT_KEYS_SHOWN = 10

#: Bounds of ``?refresh=N`` (seconds): a page that reloads itself to follow a scale event, but
#: not so often that an open browser tab becomes load on the cluster.
MIN_REFRESH, MAX_REFRESH = 2, 3_600


def _refresh(request: HttpRequest) -> int | None:
    try:
        seconds = int(request.GET.get("refresh", ""))
    except ValueError:
        return None
    return min(max(seconds, MIN_REFRESH), MAX_REFRESH)


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1%}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return "> 1 s" if seconds == float("inf") else f"{seconds * 1000:.2f} ms"


def _entry(alias: str, cache: ElastiCache) -> dict[str, Any]:
    """``manage.py elasticache``'s report of one cache, with the client's counters per node
    and figures formatted for the page."""
    entry = report(alias, cache)
    metrics = cache.metrics()
    counters = metrics["nodes"]
    for node in entry["nodes"]:
        node["client"] = (
            client_counters(counters[node["address"]]) if node["address"] in counters else None
        )
        client = node["client"]
        if client is not None:
            # A down node's reads fail fast and count as neither hit nor miss: its ratio is
            # that of before it went down, which is not how it is doing now.
            client["hit_ratio_text"] = (
                "node down" if node["state"] == "down" else _percent(client["hit_ratio"])
            )
            client["p50_text"], client["p99_text"] = _ms(client["p50"]), _ms(client["p99"])
        node["round_trip_text"] = _ms(node["round_trip"])
        node["hit_ratio_text"] = _percent(node.get("hit_ratio"))
        node["uptime_text"] = duration(node.get("uptime"))
        node["memory_text"] = f"{size(node.get('bytes'))} / {size(node.get('limit_maxbytes'))}"
        used, limit = node.get("bytes"), node.get("limit_maxbytes")
        node["memory_used"] = used / limit if used is not None and limit else None
    # This process's view: the hot keys of the worker serving the page (keys can carry personal
    # data: the page is the admin site's, never exported to metrics).
    entry["hot_keys"] = [
        {
            "key": printable(str(hot["key"])),
            "node": printable(hot["node"]),
            "rate_text": f"{hot['reads_per_second']:.1f}",
        }
        for hot in cache.hot_keys(HOT_KEYS_SHOWN)
    ]
    # The cluster events as the report read them.
    entry["client"] = {
        **{name: metrics[name] for name in CLIENT_COUNTERS},
        **entry["cluster_events"],
    }
    # The local tier, when the cache has one (``local_cache``).
    entry["local_tier"] = (
        {
            "keys": metrics["local_keys"],
            "size_text": size(metrics["local_bytes"]),
            "served": sum(node["local_hits"] for node in counters.values()),
        }
        if cache.handle.client.local_cache
        else None
    )
    return entry


def status(request: HttpRequest) -> HttpResponse:
    """The page, for those the admin site lets in (anyone else is sent to its login): the
    default admin site's own ``admin_view`` decides, so a site whose ``has_permission`` wants
    more than ``is_staff`` (a two-factor admin's) keeps the page as it keeps its own. The site
    is looked up here, at each request, not at import: ``admin.site`` is the configured default
    site (``AdminConfig.default_site``), known once apps are ready, and the module must import
    without the admin installed (stubtest imports every module)."""
    return admin.site.admin_view(_status)(request)


def _status(request: HttpRequest) -> HttpResponse:
    """The page itself. Each load asks every node for its ``stats`` (one exchange per node, as
    ``manage.py elasticache`` does)."""
    refresh = _refresh(request)
    context = {
        **admin.site.each_context(request),
        "title": "ElastiCache status",
        "caches": [_entry(alias, caches[alias]) for alias in backend_aliases()],  # type: ignore[arg-type]
        "refresh": refresh,
        # The page needs its width for the table; the app list is one click away.
        "is_nav_sidebar_enabled": False,
    }
    return TemplateResponse(request, "admin/django_elasticache_rs/status.html", context)
