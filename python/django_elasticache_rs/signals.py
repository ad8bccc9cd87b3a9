"""Django signals for what happens to the cluster, as the client sees it.

Each is sent with ``sender`` the backend class (``ElastiCache``) and ``location`` (the
``LOCATION`` servers of the client that saw it), from a native worker thread of the cache:
never from inside a cache call, nor under any lock of the cache's, in the order the events
happened. Receivers should return quickly (the events after one wait for it); one that
raises is logged by Django's ``django.dispatch`` logger, and the others still run. A
``fork()`` never waits for a receiver: one running then is left running in the parent (the
child is forked without it), and the events after it follow once the fork is over.

* ``membership_changed``: the set of nodes changed (the first discovery included):
  ``added``, ``removed`` (lists of ``host:port``), ``version`` (the configuration version, or
  ``None`` without discovery).
* ``node_down``: a node was marked down after ``failures`` failures in a row; it is left
  alone for ``retry_in`` seconds: ``node``, ``failures``, ``retry_in``.
* ``node_up``: a node marked down answered again: ``node``.
* ``invalidations_overflowed``: more deletes and writes could not reach a node than
  ``max_invalidations`` remembers, so keys beyond it may hold values deleted meanwhile:
  ``node``, ``kept`` (how many are replayed), ``flush`` (whether the node is flushed before it
  serves reads again, ``invalidation_overflow``). Sent once per episode; act on it (look at why
  the node was away so long, raise the bound).
* ``warmup_started``: a membership change opened a warm-up window of ``window`` seconds
  (``warmup_window``): until it closes, a miss on a key whose owner changed reads the previous
  owner and copies the value to the new one.
* ``warmup_ended``: the warm-up window closed (seen by the first call after it did).
* ``discovery_failed``: asking the configuration endpoint failed (the last good membership
  stays in use): ``endpoint``, ``error`` (the message).
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

__all__ = [
    "discovery_failed",
    "invalidations_overflowed",
    "membership_changed",
    "node_down",
    "node_up",
    "warmup_ended",
    "warmup_started",
]

membership_changed = Signal()
node_down = Signal()
node_up = Signal()
discovery_failed = Signal()
invalidations_overflowed = Signal()
warmup_started = Signal()
warmup_ended = Signal()

_SIGNALS = {
    "membership_changed": membership_changed,
    "node_down": node_down,
    "node_up": node_up,
    "discovery_failed": discovery_failed,
    "invalidations_overflowed": invalidations_overflowed,
    "warmup_started": warmup_started,
    "warmup_ended": warmup_ended,
}


def deliver(sender: object, location: tuple[str, ...], event: dict[str, Any]) -> None:
    """Sends the signal of a native client's ``event`` (a dict naming it in ``event``) from
    ``sender`` (the backend class: the client registry binds it when it makes the client)."""
    fields = dict(event)
    signal = _SIGNALS.get(fields.pop("event", ""))
    if signal is None:
        return
    # send_robust: a receiver that raises is logged by Django (`django.dispatch`), and the
    # others still run.
    signal.send_robust(sender, location=list(location), **fields)
