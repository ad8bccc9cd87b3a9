"""The gevent driver of native operations: every wait yields to gevent's hub.

Used by the backend's blocking methods when gevent has monkey-patched ``socket`` (or
``OPTIONS["gevent"]`` says so), so that a greenlet waiting on a slow or frozen node never
stalls the others. An operation waits as it does under asyncio: its socket and deadline are
watched by the hub's native ``Poller`` (an epoll set of ours the hub's loop watches through one
io watcher, or, where there is no epoll, a loop watcher per wait; one loop timer for all the
deadlines), and a ready socket, or the deadline, switches straight back to the greenlet. A
greenlet waiting for a pooled connection (every one of the pool in use) waits on the hub too,
woken when another greenlet's call ends. Only the steps with no non-blocking form (a connect,
the first discovery) run on a thread: of a small gevent thread pool of the cache's own, never
the hub's, which gevent's resolver (every ``socket.getaddrinfo``) and other libraries share.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ._native import DONE, EPOLL, WAIT, Client, Operation, Poller
from ._polling import pauses


def patched() -> bool:
    """Whether gevent has monkey-patched ``socket`` in this process (without importing gevent
    when it is not in use)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


_gevent: tuple[Any, Any] | None = None


def _hub() -> tuple[Any, Any]:
    """gevent's ``get_hub`` and greenlet's ``getcurrent``, imported at first use: the backend
    imports this module whether gevent is in use or not."""
    global _gevent
    if _gevent is None:
        from gevent import get_hub
        from greenlet import getcurrent

        _gevent = (get_hub, getcurrent)
    return _gevent


#: Threads of the cache's own pool per hub, for connects and first discoveries: as many as
#: gevent gives a hub's pool. More at once wait their turn, on the hub.
CONNECT_THREADS = 10

#: Where a hub keeps the driver's state (``_Green``): one hub per native thread running
#: greenlets, and its greenlets are all that ever touch it, so it needs no lock.
_STATE = "_django_elasticache_rs"

#: Whether the hub's poller is an epoll set (tests turn it off for the per-wait watchers' path).
_HAS_EPOLL = EPOLL

#: Counts the forks this process is the child of: a hub's poller made before the last one is
#: the parent's (its epoll set is shared with the parent), and is made anew.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class _HubLoop:
    """The part of an asyncio event loop's interface a ``Poller`` uses, on a gevent hub's
    loop: the poller waits the same way under both."""

    __slots__ = ("__weakref__", "_loop", "_readers", "_writers")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._readers: dict[int, Any] = {}
        self._writers: dict[int, Any] = {}

    def add_reader(self, fd: int, callback: Callable[[], Any]) -> None:
        self._watch(self._readers, fd, 1, callback)

    def remove_reader(self, fd: int) -> None:
        self._unwatch(self._readers, fd)

    def add_writer(self, fd: int, callback: Callable[[], Any]) -> None:
        self._watch(self._writers, fd, 2, callback)

    def remove_writer(self, fd: int) -> None:
        self._unwatch(self._writers, fd)

    def _watch(self, watchers: dict[int, Any], fd: int, events: int, callback: Any) -> None:
        self._unwatch(watchers, fd)
        watcher = watchers[fd] = self._loop.io(fd, events)
        watcher.start(callback)

    @staticmethod
    def _unwatch(watchers: dict[int, Any], fd: int) -> None:
        watcher = watchers.pop(fd, None)
        if watcher is not None:
            watcher.close()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        # Not keeping the loop alive: a greenlet waiting on a socket does (see _Green.wait).
        timer = self._loop.timer(delay, 0.0, ref=False)
        timer.start(callback, *args)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self._loop.run_callback(callback, *args)


class _Green:
    """The driver's state in one hub: its poller (made at first use, and anew in a forked
    child), the cache's thread pool (likewise), and the event greenlets waiting for a pooled
    connection wait on (made by the first of them, set and dropped when a call of this hub
    ends)."""

    __slots__ = (
        "_dispatching",
        "_forks",
        "_loop",
        "_pool",
        "_watcher",
        "freed",
        "poller",
        "waiting",
    )

    def __init__(self, hub: Any) -> None:
        self._pool: Any = None
        self.freed: Any = None
        #: The forks this process was the child of when the poller and the pool were made.
        self._forks = _forks
        self._loop: _HubLoop | None = None
        #: The io watcher of the poller's epoll set, and what holds the loop for it.
        self._dispatching: Any = None
        self._watcher: Any = None
        self.poller: Poller | None = None
        #: Greenlets of this hub waiting on the poller.
        self.waiting = 0

    def poller_of(self, hub: Any) -> Poller:
        """The hub's poller: an epoll set its loop watches through one io watcher, where there
        is epoll, otherwise the loop's io watchers per wait."""
        if self._forks != _forks:
            self._forget_the_parent()
        poller = self.poller
        if poller is None:
            # Kept here: the poller holds its loop weakly, as it does an asyncio loop.
            self._loop = _HubLoop(hub.loop)
            poller = self.poller = Poller(self._loop, _HAS_EPOLL)
            fd = poller.fileno()
            if fd is not None:
                watcher = hub.loop.io(fd, 1)
                watcher.start(poller.dispatch)
                # Holding the loop only while a greenlet waits (gevent.wait() returns once
                # nothing else is left). libuv's loop gives a multiplexer of the fd's one
                # watcher, whose own ref is the one that counts.
                self._watcher = getattr(watcher, "_watcher_ref", watcher)
                self._watcher.ref = False
                self._dispatching = watcher
        return poller

    def wait(self, hub: Any) -> None:
        """Switches to the hub until the poller (or anything else) switches back."""
        watcher = self._watcher
        if watcher is None:  # a loop watcher per wait, which keeps the loop alive itself
            hub.switch()
            return
        self.waiting += 1
        if self.waiting == 1:
            watcher.ref = True
        try:
            hub.switch()
        finally:
            self.waiting -= 1
            if not self.waiting:
                watcher.ref = False

    def _forget_the_parent(self) -> None:
        """In a forked child, what the parent made is not this process's: its poller's epoll
        set is shared with the parent (the events in it are the parent's too), and its pool's
        threads did not survive the fork."""
        if self._dispatching is not None:
            self._dispatching.close()
        self._dispatching = self._watcher = self.poller = self._loop = self._pool = None
        self.waiting = 0
        self._forks = _forks

    def pool(self, hub: Any) -> Any:
        if self._forks != _forks:
            self._forget_the_parent()
        pool = self._pool
        if pool is None:
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
    returns its result (or raises its error).

    Killed (or interrupted by a ``gevent.Timeout``) while it waits, it closes the operation: a
    connection whose reply is still on its way is closed, never reused.
    """
    get_hub, getcurrent = _hub()
    hub = get_hub()
    state = _green(hub)
    waits: Iterator[float] | None = None
    try:
        operation.on(state.poller_of(hub))
        step, resume = operation.step, getcurrent().switch
        while True:
            progress = step(resume)
            if progress == DONE:
                return operation.outcome()
            if progress == WAIT:
                # Past the deadline, the poller switches back too: the next step ends the
                # operation as a timeout.
                state.wait(hub)
            elif operation.waits_for_pool():
                # Every connection of the pool is in use: no thread is needed to wait for
                # one. Past the deadline, the next step ends the call as the pool exhausted.
                if waits is None:
                    waits = pauses()
                _wait_for_a_connection(hub, waits, operation.timeout())
            else:
                state.pool(hub).apply(operation.prepare_without_waiting)
    finally:
        operation.close()
        # Its connections are back in their pools (or closed, making room).
        if _hubs_waiting:
            _connection_freed(hub)


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
