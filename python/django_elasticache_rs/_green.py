"""The gevent driver of native operations: every wait yields to gevent's hub.

Used by the backend's blocking methods when gevent has monkey-patched ``socket`` (or
``OPTIONS["gevent"]`` says so), so that a greenlet waiting on a slow or frozen node never
stalls the others. Sockets are waited on with ``gevent.socket.wait_read`` (or
``wait_readwrite`` while a request is being written); the step with no non-blocking form (a
connect, the first discovery, waiting for a pooled connection) runs on gevent's thread pool,
which also yields to the hub.
"""

from __future__ import annotations

import sys
from typing import Any

from ._native import BLOCK, DONE, READ, Client, Operation


def patched() -> bool:
    """Whether gevent has monkey-patched ``socket`` in this process (without importing gevent
    when it is not in use)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


_gevent: tuple[Any, Any, Any] | None = None


def _hub() -> tuple[Any, Any, Any]:
    """gevent's ``get_hub``, ``wait_read`` and ``wait_readwrite``, imported at first use: the
    backend imports this module whether gevent is in use or not."""
    global _gevent
    if _gevent is None:
        from gevent import get_hub
        from gevent.socket import wait_read, wait_readwrite

        _gevent = (get_hub, wait_read, wait_readwrite)
    return _gevent


def run(operation: Operation) -> Any:
    """Runs ``operation`` in the current greenlet, yielding to the hub while it waits, and
    returns its result (or raises its error)."""
    get_hub, wait_read, wait_readwrite = _hub()
    try:
        while True:
            progress = operation.advance()
            if progress == DONE:
                return operation.result()
            if progress == BLOCK:
                get_hub().threadpool.apply(operation.prepare)
                continue
            next_wait = operation.wait_for()
            if next_wait is None:
                continue
            fd, interest = next_wait
            # A node may answer before it takes all of a request: wait for either then.
            wait = wait_read if interest == READ else wait_readwrite
            try:
                wait(fd, operation.timeout())
            except TimeoutError:
                pass  # the next advance() ends the operation as a timeout
    finally:
        operation.close()


def sleep(seconds: float) -> None:
    """Waits ``seconds`` in the current greenlet, yielding to the hub (whether or not ``time``
    is monkey-patched)."""
    from gevent import sleep as green_sleep

    green_sleep(seconds)


class GreenClient:
    """The blocking methods of a native ``Client``, each run by the gevent driver: what the
    backend calls instead of the client itself under gevent."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, key: Any, default: Any, prefix: str | None, version: Any) -> Any:
        return run(self._client.start_get(key, default, prefix, version))

    def get_or_lease(
        self,
        key: Any,
        lease: int,
        early_recompute: int | None,
        default: Any,
        prefix: str | None,
        version: Any,
        *,
        token: bytes | None = None,
        undecodable: Any = None,
        take: bool = False,
    ) -> tuple[Any, bool]:
        operation = self._client.start_get_or_lease(
            key,
            lease,
            early_recompute,
            default,
            prefix,
            version,
            token=token,
            undecodable=undecodable,
            take=take,
        )
        leased: tuple[Any, bool] = run(operation)
        return leased

    def contains(self, key: Any, prefix: str | None, version: Any) -> bool:
        found: bool = run(self._client.start_contains(key, prefix, version))
        return found

    def get_many(self, keys: Any, prefix: str | None, version: Any = None) -> dict[Any, Any]:
        found: dict[Any, Any] = run(self._client.start_get_many(keys, prefix, version))
        return found

    def set(self, key: Any, value: Any, exptime: int, prefix: str | None, version: Any) -> bool:
        stored: bool = run(self._client.start_set(key, value, exptime, prefix, version))
        return stored

    def add(self, key: Any, value: Any, exptime: int, prefix: str | None, version: Any) -> bool:
        stored: bool = run(self._client.start_add(key, value, exptime, prefix, version))
        return stored

    def set_many(
        self, mapping: Any, exptime: int, prefix: str | None = None, version: Any = None
    ) -> list[Any]:
        failed: list[Any] = run(self._client.start_set_many(mapping, exptime, prefix, version))
        return failed

    def delete(self, key: Any, prefix: str | None, version: Any) -> bool:
        deleted: bool = run(self._client.start_delete(key, prefix, version))
        return deleted

    def delete_many(self, keys: Any, prefix: str | None = None, version: Any = None) -> int:
        deleted: int = run(self._client.start_delete_many(keys, prefix, version))
        return deleted

    def incr(self, key: Any, delta: int, prefix: str | None, version: Any) -> int | None:
        value: int | None = run(self._client.start_incr(key, delta, prefix, version))
        return value

    def touch(self, key: Any, exptime: int, prefix: str | None, version: Any) -> bool:
        touched: bool = run(self._client.start_touch(key, exptime, prefix, version))
        return touched

    def flush_all(self) -> None:
        run(self._client.start_flush_all())
