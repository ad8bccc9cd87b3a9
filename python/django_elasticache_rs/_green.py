"""The gevent driver of native operations: every wait yields to gevent's hub.

Used by the backend's blocking methods when gevent has monkey-patched ``socket`` (or
``OPTIONS["gevent"]`` says so), so that a greenlet waiting on a slow or frozen node never
stalls the others. Sockets are waited on with ``gevent.socket.wait_read`` (or
``wait_readwrite`` while a request is being written), and the deadlines of a hub's waiting
greenlets are under one timer of the hub's loop (``_Deadlines``). A greenlet waiting for a pooled
connection (every one of the pool in use) waits on the hub too, woken when another greenlet's
call ends. Only the steps with no non-blocking form (a connect, the first discovery) run on a
thread: of a small gevent thread pool of the cache's own, never the hub's, which gevent's
resolver (every ``socket.getaddrinfo``) and other libraries share.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from ._native import BLOCK, DONE, READ, Client, Operation
from ._polling import pauses


def patched() -> bool:
    """Whether gevent has monkey-patched ``socket`` in this process (without importing gevent
    when it is not in use)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


_gevent: tuple[Any, Any, Any, Any] | None = None


def _hub() -> tuple[Any, Any, Any, Any]:
    """gevent's ``get_hub``, ``wait_read`` and ``wait_readwrite``, and greenlet's
    ``getcurrent``, imported at first use: the backend imports this module whether gevent is in
    use or not."""
    global _gevent
    if _gevent is None:
        from gevent import get_hub
        from gevent.socket import wait_read, wait_readwrite
        from greenlet import getcurrent

        _gevent = (get_hub, wait_read, wait_readwrite, getcurrent)
    return _gevent


#: Threads of the cache's own pool per hub, for connects and first discoveries: as many as
#: gevent gives a hub's pool. More at once wait their turn, on the hub.
CONNECT_THREADS = 10

#: Where a hub keeps the driver's state (``_Green``): one hub per native thread running
#: greenlets, and its greenlets are all that ever touch it, so it needs no lock.
_STATE = "_django_elasticache_rs"


class _Expired(Exception):
    """Thrown into a greenlet waiting on a socket once its operation's deadline passed."""


class _Deadlines:
    """The deadlines of one hub's greenlets waiting on sockets, under one timer set at the
    earliest: past its deadline, a waiting greenlet gets ``_Expired`` thrown in (as gevent's
    ``Timeout`` does), and its next ``advance()`` ends the operation as a timeout. A
    ``Timeout`` per wait (an exception object and a timer made, started, stopped and closed)
    costs about 5 us a wait here; an entry here costs a dictionary's insert and delete, and the
    timer moves only for a deadline earlier than its own (rare: a hub's calls share a timeout).

    Only a greenlet waiting on a socket is in it: nothing is thrown into one waiting for a
    connect on a thread, which still holds its operation.
    """

    __slots__ = ("_loop", "_timer", "_waiting", "_when")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._waiting: dict[Any, float] = {}
        self._timer: Any = None
        self._when = math.inf

    def add(self, greenlet: Any, timeout: float) -> None:
        """Throws ``_Expired`` into ``greenlet`` in ``timeout`` seconds, unless removed before."""
        deadline = time.monotonic() + timeout
        self._waiting[greenlet] = deadline
        if deadline < self._when:
            self._arm(deadline)

    def remove(self, greenlet: Any) -> None:
        # The timer stays: at worst it fires once for nothing, and is set for what is left.
        self._waiting.pop(greenlet, None)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._when = deadline
        # Not keeping the loop alive: a greenlet waiting on a socket does (its watcher).
        self._timer = self._loop.timer(max(deadline - time.monotonic(), 0.0), ref=False)
        self._timer.start(self._fire)

    def _fire(self) -> None:
        self._timer.close()
        self._timer, self._when = None, math.inf
        now = time.monotonic()
        late = [greenlet for greenlet, deadline in self._waiting.items() if deadline <= now]
        for greenlet in late:
            del self._waiting[greenlet]
        if self._waiting:
            # The loop's clock is its iteration's start: a timer may fire a little early.
            self._arm(min(self._waiting.values()))
        for greenlet in late:
            greenlet.throw(_Expired)


class _Green:
    """The driver's state in one hub: the cache's thread pool (made at first use, and anew in
    a forked child), the event greenlets waiting for a pooled connection wait on (made by the
    first of them, set and dropped when a call of this hub ends), and the deadlines of the
    greenlets waiting on sockets."""

    __slots__ = ("_pool", "deadlines", "freed")

    def __init__(self, hub: Any) -> None:
        self._pool: Any = None
        self.freed: Any = None
        self.deadlines = _Deadlines(hub.loop)

    def pool(self, hub: Any) -> Any:
        pool = self._pool
        if pool is None or pool.pid != os.getpid():
            # A child must not use the parent's pool: its threads did not survive the fork.
            from gevent import config
            from gevent.threadpool import ThreadPool

            # Idle threads exit after gevent's own delay, as the hub's pool's do (gevent passes
            # this float itself; its stubs say int).
            idle: Any = config.threadpool_idle_task_timeout
            try:
                pool = ThreadPool(CONNECT_THREADS, hub, idle_task_timeout=idle)
            except TypeError:  # gevent before 20.12: threads stay
                pool = ThreadPool(CONNECT_THREADS, hub)
            self._pool = pool
        return pool


def _green(hub: Any) -> _Green:
    state: _Green | None = getattr(hub, _STATE, None)
    if state is None:
        state = _Green(hub)
        setattr(hub, _STATE, state)
    return state


#: The ids of the hubs that have greenlets waiting for a pooled connection: what a call that
#: ends looks at before anything else, so that calls cost nothing more while none waits.
_hubs_waiting: set[int] = set()


def _wait_for_a_connection(hub: Any, waits: Iterator[float], timeout: float | None) -> None:
    """Waits in the current greenlet until another call of this hub ends (it may have given
    a connection back), or for the next of ``waits`` (a connection given back by another
    thread, or by a batch still running, wakes nobody), or until ``timeout``."""
    state = _green(hub)
    freed = state.freed
    if freed is None:
        from gevent.event import Event

        freed = state.freed = Event()
        _hubs_waiting.add(id(hub))
    pause = next(waits)
    freed.wait(pause if timeout is None else min(pause, timeout))


def _connection_freed(hub: Any) -> None:
    """A call of this hub ended: greenlets waiting for a pooled connection try again."""
    state: _Green | None = getattr(hub, _STATE, None)
    if state is not None and state.freed is not None:
        freed, state.freed = state.freed, None
        _hubs_waiting.discard(id(hub))
        freed.set()


def run(operation: Operation) -> Any:
    """Runs ``operation`` in the current greenlet, yielding to the hub while it waits, and
    returns its result (or raises its error)."""
    get_hub, wait_read, wait_readwrite, getcurrent = _hub()
    waits: Iterator[float] | None = None
    try:
        while True:
            progress = operation.advance()
            if progress == DONE:
                return operation.outcome()
            if progress == BLOCK:
                hub = get_hub()
                if operation.waits_for_pool():
                    # Every connection of the pool is in use: no thread is needed to wait for
                    # one. Past the deadline, advance() ends the call as the pool exhausted.
                    if waits is None:
                        waits = pauses()
                    _wait_for_a_connection(hub, waits, operation.timeout())
                else:
                    _green(hub).pool(hub).apply(operation.prepare_without_waiting)
                continue
            next_wait = operation.wait_for()
            if next_wait is None:
                continue
            fd, interest = next_wait
            # A node may answer before it takes all of a request: wait for either then.
            wait = wait_read if interest == READ else wait_readwrite
            timeout = operation.timeout()
            if timeout is None:
                wait(fd)
                continue
            deadlines = _green(get_hub()).deadlines
            current = getcurrent()
            deadlines.add(current, timeout)
            try:
                wait(fd)
            except _Expired:
                pass  # the next advance() ends the operation as a timeout
            finally:
                deadlines.remove(current)
    finally:
        operation.close()
        # Its connections are back in their pools (or closed, making room).
        if _hubs_waiting:
            _connection_freed(get_hub())


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
