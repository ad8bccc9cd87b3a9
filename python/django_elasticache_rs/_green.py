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
from collections.abc import Callable
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
    backend calls instead of the client itself under gevent.

    Derived from the client's operations: ``green.get(...)`` is ``run(client.start_get(...))``,
    for every ``start_*`` the client has, so a new command needs nothing here. Each is made at
    its first use and kept on this object: later calls find it as a plain attribute.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            start = getattr(self._client, f"start_{name}")
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            ) from None

        def call(*args: Any, **kwargs: Any) -> Any:
            return run(start(*args, **kwargs))

        call.__name__ = call.__qualname__ = name
        setattr(self, name, call)
        return call
