"""Run by ``tests/test_otel.py`` in a fresh interpreter (OpenTelemetry's providers are set once
per process): ``python otel_failure_app.py ADDRESS``. Sets the SDK up with an in-memory span
exporter, configures the backend with ``tracing`` "opentelemetry", makes calls that fail with a
message naming their key (``incr`` and ``aincr`` of a missing key, a ``get`` of an invalid
key), and prints one JSON line: the exceptions raised (type and message) and every finished
span as exported, status, attributes and events included."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import django
from django.conf import settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)

settings.configure(
    CACHES={
        "default": {
            "BACKEND": "django_elasticache_rs.backend.ElastiCache",
            "LOCATION": sys.argv[1],
            "OPTIONS": {"discovery": "off", "tracing": "opentelemetry"},
        }
    }
)
django.setup()

from django.core.cache import cache  # noqa: E402

raised: list[list[str]] = []


def failing(call: Any) -> None:
    try:
        call()
    except Exception as error:
        raised.append([type(error).__name__, str(error)])
    else:
        raise AssertionError("the call did not fail")


cache.delete("secret-key-name")
failing(lambda: cache.incr("secret-key-name"))
failing(lambda: asyncio.run(cache.aincr("secret-key-name")))
failing(lambda: cache.get("secret key name"))

print(
    json.dumps(
        {
            "raised": raised,
            "spans": [
                {
                    "name": span.name,
                    "status": span.status.status_code.name,
                    "description": span.status.description,
                    "attributes": dict(span.attributes or {}),
                    "events": [
                        {"name": event.name, "attributes": dict(event.attributes or {})}
                        for event in span.events
                    ],
                }
                for span in spans.get_finished_spans()
            ],
        }
    )
)
