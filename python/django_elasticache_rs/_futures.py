"""The asyncio driver of native operations (``crates/python``'s ``operation`` module), and the
completion of futures from native worker threads.

An operation's sockets are watched by the running loop (through an epoll set of ours the loop
watches, or its ``add_reader``/``add_writer``) with a timer for its deadline, so no thread is
involved once a connection is pooled. A call waiting for a pooled connection (every one of the
pool in use) waits on the loop too, woken when another call of the loop ends. Only the step
the operating system gives no non-blocking form of (a connect, the first discovery) runs on a
native worker thread (``Operation.prepare_later``): a worker never waits for a connection to
be given back, which would hold it (and a ``fork()``, which waits for the workers) as long as
the call's timeout, without bound when it has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import weakref
from typing import Any

from ._native import BLOCK, DONE, READ, Operation
from ._polling import pauses


def resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Sets ``future``'s outcome, unless it was cancelled while the operation ran. Called on the
    future's loop through ``call_soon_threadsafe``."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake_current(waiting: list[asyncio.Future[None]]) -> None:
    """The deadline's timer: wakes whichever wait is current, and leaves ``waiting`` empty to
    say it fired."""
    if waiting:
        _wake(waiting.pop())


class _Freed:
    """The calls of one loop waiting for a pooled connection: a future they wait on, made by
    the first of them and woken (then dropped) when a call of the loop ends, since it may have
    given a connection back."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None


_freed: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Freed] = weakref.WeakKeyDictionary()


async def _wait_for_a_connection(
    loop: asyncio.AbstractEventLoop, pause: float, timeout: float | None
) -> None:
    """Waits until another call of ``loop`` ends, or ``pause`` seconds (a connection given back
    by another thread, or by a batch still running, wakes nobody), or until ``timeout``."""
    freed = _freed.get(loop)
    if freed is None:
        freed = _freed[loop] = _Freed()
    if freed.future is None or freed.future.done():
        freed.future = loop.create_future()
    seconds = pause if timeout is None else max(min(pause, timeout), 0.001)
    # Shielded: a waiter's timeout or cancellation must not cancel the others' future.
    # asyncio.TimeoutError: the builtin only from Python 3.11.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(freed.future), seconds)


def _connection_freed(loop: asyncio.AbstractEventLoop) -> None:
    """A call of ``loop`` ended: calls waiting for a pooled connection try again."""
    freed = _freed.get(loop)
    if freed is not None and freed.future is not None:
        future, freed.future = freed.future, None
        _wake(future)


class _Epoll:
    """The sockets this loop's operations wait on, in an epoll set of our own that the loop
    watches through one reader for good: a wait costs one ``epoll_ctl`` (re-arming a one-shot
    registration) where the loop's ``add_reader`` and ``remove_reader`` cost two system calls
    and their bookkeeping (7 us a pair here, a third of a batch's time on the loop).

    A socket stays registered (disarmed) after its wait. Closing it removes it from the set,
    so a registration found missing is made again; a disarmed one never fires.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._registered: set[int] = set()
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    def _dispatch(self) -> None:
        for fd, _ in self._epoll.poll(0):
            future = self._waiting.pop(fd, None)
            if future is not None:
                _wake(future)

    def wait(self, fd: int, interest: int, future: asyncio.Future[None]) -> None:
        """Wakes ``future`` once ``fd`` is readable (or writable, for ``WRITE``)."""
        self._waiting[fd] = future
        events = select.EPOLLIN | select.EPOLLONESHOT
        if interest != READ:
            events |= select.EPOLLOUT
        if fd in self._registered:
            try:
                self._epoll.modify(fd, events)
                return
            except FileNotFoundError:
                pass  # closed since, and its number given to a new socket
        try:
            self._epoll.register(fd, events)
        except FileExistsError:
            self._epoll.modify(fd, events)
        self._registered.add(fd)

    def done(self, fd: int) -> None:
        """The wait on ``fd`` is over (woken, or cancelled)."""
        self._waiting.pop(fd, None)


class _Readers:
    """Where there is no epoll: the loop's own ``add_reader``/``add_writer``, per wait."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writing: set[int] = set()

    def wait(self, fd: int, interest: int, future: asyncio.Future[None]) -> None:
        self._loop.add_reader(fd, _wake, future)
        if interest != READ:
            self._loop.add_writer(fd, _wake, future)
            self._writing.add(fd)

    def done(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        if fd in self._writing:
            self._writing.discard(fd)
            self._loop.remove_writer(fd)


_HAS_EPOLL = hasattr(select, "epoll")

_waiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Epoll | _Readers] = (
    weakref.WeakKeyDictionary()
)


def _waiter(loop: asyncio.AbstractEventLoop) -> _Epoll | _Readers:
    """This loop's way of waiting on sockets, made at its first wait."""
    waiter = _waiters.get(loop)
    if waiter is None:
        waiter = _Epoll(loop) if _HAS_EPOLL else _Readers(loop)
        _waiters[loop] = waiter
    return waiter


async def run(operation: Operation) -> Any:
    """Runs ``operation`` on the running loop and returns its result (or raises its error).

    Cancelled, it closes the operation: a connection whose reply is still on its way is
    closed, never reused, since that reply would answer someone else's request.
    """
    loop = asyncio.get_running_loop()
    advance, create_future = operation.advance, loop.create_future
    # One timer for the whole operation, made at its first wait, waking the current one.
    waiting: list[asyncio.Future[None]] = []
    timer: asyncio.TimerHandle | None = None
    waiter: _Epoll | _Readers | None = None
    waits = None
    try:
        while True:
            progress = advance()
            if progress == DONE:
                return operation.result()
            if progress == BLOCK:
                if operation.waits_for_pool():
                    # Every connection of the pool is in use: wait on the loop for one. Past
                    # the deadline, advance() ends the call as the pool exhausted.
                    if waits is None:
                        waits = pauses()
                    await _wait_for_a_connection(loop, next(waits), operation.timeout())
                else:
                    woken: asyncio.Future[None] = create_future()
                    operation.prepare_later(woken, False)
                    await woken
                continue
            woken = create_future()
            wait = operation.wait_for()
            if wait is None:
                continue
            fd, interest = wait
            if timer is None:
                timeout = operation.timeout()
                if timeout is not None:
                    # Past the deadline, the next advance() ends the operation as a timeout.
                    # At least a millisecond: a loop's timers are no finer.
                    timer = loop.call_later(max(timeout, 0.001), _wake_current, waiting)
            waiting[:] = [woken]
            if waiter is None:
                waiter = _waiter(loop)
            waiter.wait(fd, interest, woken)
            try:
                await woken
            finally:
                waiter.done(fd)
            if not waiting:
                # The timer fired. Loops round their timers (uvloop to the millisecond), so it
                # may fire just before the deadline: if the operation is not over then, the
                # next wait gets a timer for what is left.
                timer = None
    finally:
        if timer is not None:
            timer.cancel()
        operation.close()
        # Its connections are back in their pools (or closed, making room).
        if _freed:
            _connection_freed(loop)
