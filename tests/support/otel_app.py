"""Run by ``tests/test_otel.py`` in a fresh interpreter (OpenTelemetry's providers are set
once per process): ``python otel_app.py ADDRESS...``. Sets the SDK up with in-memory exporters
as an application sets up its own, configures the backend with ``tracing`` and ``metrics``
"opentelemetry", makes blocking and async calls (one failing, two with another version), and
prints one JSON line: the spans, and the metrics' data points; then, once a second alias with
a local tier keeps a key, the gauges' data points."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import django
from django.conf import settings
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

settings.configure(
    CACHES={
        "default": {
            "BACKEND": "django_elasticache_rs.backend.ElastiCache",
            "LOCATION": sys.argv[1:],
            "OPTIONS": {"discovery": "off", "tracing": "opentelemetry", "metrics": "opentelemetry"},
        },
        "local": {
            "BACKEND": "django_elasticache_rs.backend.ElastiCache",
            "LOCATION": sys.argv[1:],
            "KEY_PREFIX": "local",
            "OPTIONS": {
                "discovery": "off",
                "metrics": "opentelemetry",
                "local_cache": {"ttl": 600, "min_reads_per_second": 0},
            },
        },
    }
)
django.setup()

from django.core.cache import cache  # noqa: E402

cache.set("present", "value")
assert cache.get("present") == "value"
assert cache.get_many(["present", "absent", "other"]) == {"present": "value"}
try:
    cache.get("has space")
except Exception as error:  # the failing call: its span says so
    failed = type(error).__name__


async def async_calls() -> None:
    assert await cache.aget("present") == "value"
    await cache.aset("later", 1)


asyncio.run(async_calls())


def collected() -> dict[str, list[Any]]:
    """Each instrument's data points, collected now."""
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else []:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [
                    [dict(point.attributes or {}), point.value] for point in metric.data.data_points
                ]
    return found


points = collected()
# Calls with a version other than the default (positional, then by keyword), on a key whose
# node differs between the two versions: their spans must name the node the call used.
native = cache._native  # type: ignore[attr-defined]
prefix = cache._prefix  # type: ignore[attr-defined]
version = next(
    v
    for v in range(2, 200)
    if native.node_for("versioned", prefix, v) != native.node_for("versioned", prefix, 1)
)
cache.set("versioned", 1, None, version)
assert cache.get("versioned", version=version) == 1

from django.core.cache import caches  # noqa: E402

local = caches["local"]
local.set("hot", "v" * 1000)
assert local.get("hot") == "v" * 1000  # from its node, then kept
gauges = {
    name: found for name, found in collected().items() if name.startswith("elasticache.local")
}

print(
    json.dumps(
        {
            "failed": failed,
            "versioned_node": native.node_for("versioned", prefix, version),
            "spans": [
                {
                    "name": span.name,
                    "kind": span.kind.name,
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                }
                for span in spans.get_finished_spans()
            ],
            "points": points,
            "gauges": gauges,
        }
    )
)
