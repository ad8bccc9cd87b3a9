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

__all__ = [
    "CLIENT_COUNTERS",
    "CLIENT_GAUGES",
    "exporting_clients",
    "forget_shared_clients",
    "shared_client",
]

#: The clients' own counters in ``metrics()`` (not per node) that the exporters export, with
#: what each counts: one table for Prometheus and OpenTelemetry.
CLIENT_COUNTERS: tuple[tuple[str, str], ...] = (
    ("discoveries", "Discoveries run."),
    ("discovery_failures", "Discoveries that failed."),
    ("membership_changes", "Times the set of nodes changed."),
    ("ignored_failures", "Failures turned into a miss by ignore_exc."),
    ("gutter_reads", "Keys read on a gutter while their owner could not serve them."),
    ("gutter_writes", "Keys written or deleted on a gutter while their owner was down."),
    ("invalidations_replayed", "Undelivered invalidations replayed to their node."),
    ("invalidations_dropped", "Undelivered invalidations not remembered (max_invalidations)."),
    ("warmup_reads", "Misses read from their previous owner during a warm-up window."),
    ("warmup_hits", "Of those, keys found on their previous owner."),
    ("warmup_copies", "Of those, keys copied to their new owner."),
    ("migration_reads", "Misses read through from the migrate_from cluster."),
    ("migration_hits", "Of those, keys found there."),
    ("migration_copies", "Of those, keys copied to this cluster."),
    ("detour_deletes", "Keys deleted on a previous owner or the migrate_from cluster on a write."),
    ("detour_delete_failures", "Keys a write could not delete there: not read through from there."),
)

#: The clients' own values in ``metrics()`` that go up and down (what is held now), exported as
#: gauges, with their unit (OpenTelemetry's notation) and what each is: one table for
#: Prometheus and OpenTelemetry.
CLIENT_GAUGES: tuple[tuple[str, str, str], ...] = (
    (
        "invalidations_waiting",
        "{invalidation}",
        "Undelivered invalidations waiting to be replayed to their node.",
    ),
    ("local_keys", "{key}", "Keys the local tier keeps (local_cache)."),
    ("local_bytes", "By", "Bytes of values the local tier keeps (local_cache)."),
)

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
