"""The process's native clients, one per configuration, shared by every backend object.

Django makes a backend object per thread and per async task (per greenlet under gevent); they
all use the one native client of their configuration, made here on first use. The exporters
(``prometheus``, ``otel``) read the counters of the clients that export to them from here.
"""

from __future__ import annotations

import functools
import threading

from django_elasticache_rs import signals
from django_elasticache_rs._native import Client
from django_elasticache_rs.options import Settings

__all__ = ["exporting_clients", "forget_shared_clients", "shared_client"]

_clients: dict[tuple[tuple[str, ...], Settings], Client] = {}
_clients_lock = threading.Lock()


def shared_client(servers: list[str], settings: Settings, *, sender: object) -> Client:
    """The process's native client for this configuration, created on first use; its events
    become Django signals (``signals``) sent by ``sender``, from a native worker.

    The client is safe across ``fork()``: a child process builds its own connections.
    """
    key = (tuple(servers), settings)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                on_event = functools.partial(signals.deliver, sender, tuple(servers))
                client = Client(servers, on_event=on_event, **settings.native_kwargs())
                _clients[key] = client
    return client


def exporting_clients(metrics: str) -> list[Client]:
    """The process's shared native clients whose counters ``OPTIONS["metrics"]`` exports to
    ``metrics`` ("prometheus" or "opentelemetry"): what the exporters read."""
    return [client for (_, s), client in list(_clients.items()) if s.metrics == metrics]


def forget_shared_clients() -> None:
    """Drops this process's shared native clients (for tests that build many configurations):
    each one's connections close and its discovery thread stops once no backend uses it."""
    with _clients_lock:
        _clients.clear()
