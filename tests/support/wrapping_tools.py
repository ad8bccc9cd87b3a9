"""Run by ``tests/test_wrapping_tools.py`` in a fresh interpreter (each tool patches Django
process-wide): ``python wrapping_tools.py TOOL ADDRESS``. Configures Django with the backend
on a memcached node at ADDRESS, lets TOOL (``sentry``, ``ddtrace`` or ``debug_toolbar``) wrap
the cache as it does in an application (ddtrace: ``ddtrace.auto``, as ``ddtrace-run``), makes
the same calls, and prints one JSON line of what the tool recorded."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

tool, address = sys.argv[1], sys.argv[2]
if tool == "ddtrace":
    # First thing, as `ddtrace-run` does: it patches Django as Django is imported.
    import ddtrace.auto

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    DEBUG=True,
    SECRET_KEY="tests-only",
    INSTALLED_APPS=["django.contrib.staticfiles", "debug_toolbar"]
    if tool == "debug_toolbar"
    else [],
    STATIC_URL="/static/",
    CACHES={
        "default": {
            "BACKEND": "django_elasticache_rs.backend.ElastiCache",
            "LOCATION": address,
            "KEY_PREFIX": f"wrapped-{tool}",
            "OPTIONS": {"discovery": "off"},
        }
    },
)


def calls() -> None:
    from django.core.cache import caches

    cache = caches["default"]
    cache.set("present", "value")
    assert cache.get("present") == "value"
    assert cache.get("absent") is None
    assert cache.get_many(["present", "absent"]) == {"present": "value"}
    cache.set_many({"a": 1, "b": 2})


def sentry() -> dict[str, Any]:
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.transport import Transport

    spans: list[dict[str, Any]] = []

    class Nowhere(Transport):
        """Sends nothing anywhere: what the tool recorded is kept by the hooks below."""

        def capture_envelope(self, envelope: Any) -> None:
            pass

    options: dict[str, Any] = {
        "dsn": "https://public@sentry.invalid/1",
        "traces_sample_rate": 1.0,
        "integrations": [DjangoIntegration(cache_spans=True)],
        "transport": Nowhere,
    }
    # sentry-sdk 3 streams spans (each its own, with attributes, through before_send_span);
    # sentry-sdk 2 sends them in their transaction (with data, through before_send_transaction).
    streamed = int(sentry_sdk.VERSION.split(".")[0]) >= 3
    if streamed:

        def keep_span(span: dict[str, Any], hint: Any) -> dict[str, Any]:
            attributes = span.get("attributes") or {}
            spans.append({"op": attributes.get("sentry.op"), "hit": attributes.get("cache.hit")})
            return span

        options["before_send_span"] = keep_span
        root = functools.partial(
            sentry_sdk.start_span, name="cache calls", attributes={"sentry.op": "test"}
        )
    else:

        def keep(event: dict[str, Any], hint: Any) -> dict[str, Any]:
            for span in event.get("spans", []):
                spans.append(
                    {"op": span.get("op"), "hit": (span.get("data") or {}).get("cache.hit")}
                )
            return event

        options["before_send_transaction"] = keep
        root = functools.partial(sentry_sdk.start_transaction, name="cache calls", op="test")
    sentry_sdk.init(**options)
    django.setup()
    with root():
        calls()
    sentry_sdk.flush()
    return {"spans": spans}


def ddtrace() -> dict[str, Any]:
    from ddtrace.trace import TraceFilter, tracer

    spans: list[dict[str, Any]] = []

    class Keep(TraceFilter):
        """Records the finished spans; sends nothing to any agent."""

        def process_trace(self, trace: list[Any]) -> None:
            for span in trace:
                spans.append({"name": span.name, "resource": span.resource})
            return None

    tracer.configure(trace_processors=[Keep()])
    django.setup()
    with tracer.trace("cache calls"):
        calls()
    tracer.flush()
    return {"spans": spans}


def debug_toolbar() -> dict[str, Any]:
    django.setup()
    from debug_toolbar.panels.cache import CachePanel
    from debug_toolbar.toolbar import DebugToolbar
    from django.http import HttpResponse
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    toolbar = DebugToolbar(request, lambda r: HttpResponse())
    panel = CachePanel(toolbar, lambda r: HttpResponse())
    CachePanel.ready()
    panel.enable_instrumentation()
    calls()
    panel.disable_instrumentation()
    return {
        "hits": panel.hits,
        "misses": panel.misses,
        "calls": [call["name"] for call in panel.calls],
    }


print(json.dumps({"sentry": sentry, "ddtrace": ddtrace, "debug_toolbar": debug_toolbar}[tool]()))
