"""Tools that wrap Django's cache methods keep working with the backend, each the real package
run as an application runs it (in a fresh interpreter: they patch Django process-wide):
Sentry's cache spans, ddtrace's Django cache tracing and django-debug-toolbar's cache panel see
every call (Sentry and the toolbar with its hits and misses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django_elasticache_rs.local import LocalNode

SCRIPT = Path(__file__).parent / "support" / "wrapping_tools.py"


def run(tool: str, node: LocalNode, **env: str) -> Any:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), tool, node.address],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sentry_records_a_cache_span_per_call_with_hits_and_misses(memcached: LocalNode) -> None:
    spans = run("sentry", memcached)["spans"]
    cache_spans = [span for span in spans if (span["op"] or "").startswith("cache.")]
    assert [span["op"] for span in cache_spans] == [
        "cache.put",
        "cache.get",
        "cache.get",
        "cache.get",
        "cache.put",
    ]
    assert [span["hit"] for span in cache_spans[1:4]] == [True, False, True]


def test_ddtrace_traces_every_call_of_the_backend(memcached: LocalNode) -> None:
    # ddtrace traces Django caches only when asked (its "minimal" Django tracing is the
    # default); nothing is sent anywhere: no agent, telemetry or remote configuration.
    spans = run(
        "ddtrace",
        memcached,
        DD_DJANGO_INSTRUMENT_CACHES="true",
        DD_INSTRUMENTATION_TELEMETRY_ENABLED="false",
        DD_REMOTE_CONFIGURATION_ENABLED="false",
    )["spans"]
    resources = [span["resource"] for span in spans if span["name"] == "django.cache"]
    methods = [resource.split()[0].rsplit(".", 1)[-1] for resource in resources]
    assert methods == ["set", "get", "get", "get_many", "set_many"]
    assert all(resource.startswith("django_elasticache_rs.backend.") for resource in resources)


def test_debug_toolbar_counts_every_call_with_its_hits_and_misses(memcached: LocalNode) -> None:
    seen = run("debug_toolbar", memcached)
    assert seen["calls"] == ["set", "get", "get", "get_many", "set_many"]
    # get: one hit, one miss; get_many of two keys: one of each.
    assert (seen["hits"], seen["misses"]) == (2, 2)
