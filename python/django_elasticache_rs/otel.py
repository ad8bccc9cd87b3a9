"""OpenTelemetry: a CLIENT span per cache call (``OPTIONS["tracing"] = "opentelemetry"``) and the
client's counters as OpenTelemetry metrics (``OPTIONS["metrics"] = "opentelemetry"``), with
``pip install django-elasticache-rs[opentelemetry]`` and the application's own SDK setup.

Spans follow the database semantic conventions: ``db.system.name`` ``memcached``,
``db.operation.name`` (``get``, ``set``, ``get_many``, ...), ``server.address`` and
``server.port`` of the node for single-key calls, ``db.operation.batch.size`` for multi-key
ones; a failure sets the span's status and ``error.type`` and adds an ``exception`` event, with
the exception's type but never its message (which may name a key). No key or value is recorded.
Turned off, nothing is wrapped: the backend's methods are the plain ones.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import traceback
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Protocol

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from django_elasticache_rs._registry import CLIENT_COUNTERS, CLIENT_GAUGES, exporting_clients
from django_elasticache_rs.handle import Handle

_SCOPE = "django_elasticache_rs"


class Traced(Protocol):
    """What the spans need of a backend: the command methods it declares (method, operation
    name, how its keys are passed) and its handle, to name a key's node."""

    COMMANDS: ClassVar[tuple[tuple[str, str, str | None], ...]]

    @property
    def handle(self) -> Handle: ...


def _version_position(function: Callable[..., Any]) -> int | None:
    """Where a cache method takes ``version`` among its positional arguments, ``self`` left
    out (None: nowhere)."""
    names = list(inspect.signature(function).parameters)[1:]
    return names.index("version") if "version" in names else None


def _attributes(
    backend: Traced,
    operation: str,
    keys: str | None,
    version_at: int | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"db.system.name": "memcached", "db.operation.name": operation}
    if keys == "key" and args:
        # The call's own version places the key, as the call will.
        version = kwargs.get("version")
        if version is None and version_at is not None and len(args) > version_at:
            version = args[version_at]
        try:
            node = backend.handle.node_for(args[0], version)
        except Exception:  # an invalid key: the call itself raises it
            return attributes
        host, _, port = node.rpartition(":")
        attributes["server.address"] = host.strip("[]")
        attributes["server.port"] = int(port)
    elif keys == "keys" and args:
        try:
            attributes["db.operation.batch.size"] = len(args[0])
        except TypeError:  # an iterator: its size is not known before the call
            pass
    return attributes


#: This package's tracer, fetched once per process (a proxy until the application sets its
#: provider, which it then follows).
_TRACERS: list[trace.Tracer] = []


def _tracer() -> trace.Tracer:
    if not _TRACERS:
        from django_elasticache_rs import __version__

        _TRACERS.append(trace.get_tracer(_SCOPE, __version__))
    return _TRACERS[0]


@contextlib.contextmanager
def _span(operation: str, attributes: dict[str, Any]) -> Iterator[None]:
    """A CLIENT span around one call; a failure sets its status and ``error.type`` and adds an
    ``exception`` event, none with the exception's message: a cache error's message may name
    the key (``Key 'x' not found``, an invalid key's), and spans must not carry keys. So the
    SDK records neither the exception nor the status itself (it would put ``str(error)`` in
    both)."""
    with _tracer().start_as_current_span(
        operation,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except Exception as error:
            name = type(error).__qualname__
            span.set_attribute("error.type", name)
            span.set_status(Status(StatusCode.ERROR, name))
            span.add_event("exception", _exception_attributes(error))
            raise


def _exception_attributes(error: BaseException) -> dict[str, str]:
    """The semantic conventions' ``exception`` event attributes, without ``exception.message``:
    the type, as the SDK names it, and the stack trace's frames (code, not values) with the
    type alone on its last line where Python writes the message."""
    cls = type(error)
    module = cls.__module__
    full_name = (
        f"{module}.{cls.__qualname__}" if module and module != "builtins" else cls.__qualname__
    )
    frames = "".join(traceback.format_tb(error.__traceback__))
    return {
        "exception.type": full_name,
        "exception.stacktrace": f"Traceback (most recent call last):\n{frames}{full_name}\n",
    }


#: The span-wrapped methods, by class and method name: built once and bound to each backend
#: object (under gevent Django builds one per request).
_WRAPPED: dict[tuple[type, str], Callable[..., Any]] = {}


def _traced(cls: type, method_name: str, operation: str, keys: str | None) -> Callable[..., Any]:
    """``cls``'s method wrapped in a span (see ``_WRAPPED``)."""
    wrapped = _WRAPPED.get((cls, method_name))
    if wrapped is None:
        wrapped = _WRAPPED[cls, method_name] = _wrap(cls, method_name, operation, keys)
    return wrapped


def _wrap(cls: type, method_name: str, operation: str, keys: str | None) -> Callable[..., Any]:
    function = getattr(cls, method_name)
    version_at = _version_position(function)
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def traced_async(backend: Traced, *args: Any, **kwargs: Any) -> Any:
            with _span(operation, _attributes(backend, operation, keys, version_at, args, kwargs)):
                return await function(backend, *args, **kwargs)

        return traced_async

    @functools.wraps(function)
    def traced(backend: Traced, *args: Any, **kwargs: Any) -> Any:
        with _span(operation, _attributes(backend, operation, keys, version_at, args, kwargs)):
            return function(backend, *args, **kwargs)

    return traced


def instrument(backend: Traced) -> None:
    """Wraps ``backend``'s cache methods (and their ``a*`` twins) in CLIENT spans: those its
    class declares in ``COMMANDS`` (method, operation name, how its keys are passed)."""
    cls: type = type(backend)
    for name, operation, keys in backend.COMMANDS:
        for method_name in (name, f"a{name}"):
            if hasattr(cls, method_name):
                traced = _traced(cls, method_name, operation, keys)
                setattr(backend, method_name, types.MethodType(traced, backend))


def _clients() -> list[Any]:
    return exporting_clients("opentelemetry")


def _node_observations(
    read: Callable[[str, dict[str, Any]], Iterable[tuple[int | float, dict[str, str]]]],
) -> Callable[[CallbackOptions], Iterator[Observation]]:
    def observe(options: CallbackOptions) -> Iterator[Observation]:
        totals: dict[tuple[tuple[str, str], ...], float] = {}
        for client in _clients():
            for node, counted in client.metrics()["nodes"].items():
                for value, attributes in read(node, counted):
                    key = tuple(sorted(attributes.items()))
                    totals[key] = totals.get(key, 0) + value
        for key, value in totals.items():
            yield Observation(value, dict(key))

    return observe


def _client_observations(name: str) -> Callable[[CallbackOptions], Iterator[Observation]]:
    def observe(options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(sum(client.metrics()[name] for client in _clients()))

    return observe


_registered = False


def register_metrics() -> None:
    """The counters and gauges as observable OpenTelemetry instruments, read when the SDK
    collects (once per process)."""
    global _registered
    if _registered:
        return
    _registered = True
    from django_elasticache_rs import __version__

    meter = metrics.get_meter(_SCOPE, __version__)
    node = "server.address"
    meter.create_observable_counter(
        "elasticache.requests",
        callbacks=[
            _node_observations(
                lambda n, c: (
                    (count, {node: n, "db.operation.name": command})
                    for command, count in c["requests"].items()
                )
            )
        ],
        unit="{request}",
        description="Exchanges with a node, by command.",
    )
    meter.create_observable_counter(
        "elasticache.lookups",
        callbacks=[
            _node_observations(
                lambda n, c: (
                    (c["hits"], {node: n, "outcome": "hit"}),
                    (c["misses"], {node: n, "outcome": "miss"}),
                )
            )
        ],
        unit="{key}",
        description="Keys read, by outcome.",
    )
    meter.create_observable_counter(
        "elasticache.errors",
        callbacks=[
            _node_observations(
                lambda n, c: (
                    (count, {node: n, "error.type": kind}) for kind, count in c["errors"].items()
                )
            )
        ],
        unit="{error}",
        description="Failures, by kind.",
    )
    for name, unit, description in (
        ("marked_down", "{event}", "Times a node was marked down."),
        (
            "coalesced",
            "{read}",
            "Reads that joined an identical read in flight instead of sending their own.",
        ),
        (
            "local_hits",
            "{read}",
            "Reads served from the local tier instead of the node (local_cache).",
        ),
        ("connections_opened", "{connection}", "Connections opened to a node."),
        ("pool_waits", "{wait}", "Calls that waited for a pooled connection."),
    ):
        meter.create_observable_counter(
            f"elasticache.{name}",
            callbacks=[
                _node_observations(lambda n, c, name=name: ((c[name], {node: n}),))  # type: ignore[misc]
            ],
            unit=unit,
            description=description,
        )
    meter.create_observable_counter(
        "elasticache.request.duration",
        callbacks=[_node_observations(lambda n, c: ((c["latency_seconds"]["sum"], {node: n}),))],
        unit="s",
        description="Total time of exchanges with a node (the histogram is in cache.metrics()).",
    )
    for name, description in CLIENT_COUNTERS:
        meter.create_observable_counter(
            f"elasticache.{name}", callbacks=[_client_observations(name)], description=description
        )
    for name, unit, description in CLIENT_GAUGES:
        meter.create_observable_gauge(
            f"elasticache.{name}",
            callbacks=[_client_observations(name)],
            unit=unit,
            description=description,
        )
