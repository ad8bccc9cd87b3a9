"""The asyncio driver of native operations (``crates/python``'s ``operation`` module), and the
completion of futures from native worker threads.

An operation drives itself while a task awaits it: its sockets and deadline are watched by the
loop's native ``Poller`` (an epoll set of ours the loop watches through one reader, or the
loop's ``add_reader``/``add_writer``; one loop timer for all deadlines), and a ready socket
resumes the task in the same turn of the loop, so no thread is involved once a connection is
pooled. A call waiting for a pooled connection (every one of the pool in use) waits on the loop
too, woken when another call of the loop ends. Only the step the operating system gives no
non-blocking form of (a connect, the first discovery) runs on a native worker thread
(``Operation.prepare_later``): a worker never waits for a connection to be given back, which
would hold it (and a ``fork()``, which waits for the workers) as long as the call's timeout,
without bound when it has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

from ._native import EPOLL, Operation, Poller
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


class _Freed:
    """The calls of one loop waiting for a pooled connection: a future they wait on, made by
    the first of them and woken (then dropped) when a call of the loop ends, since it may have
    given a connection back."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None


_freed: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Freed] = weakref.WeakKeyDictionary()
# Whether ``_freed`` ever had an entry (set with its first): until then, a call that ends has
# nobody to wake (a plain global, cheaper to read than the dictionary's length).
_pool_waits = False


async def _wait_for_a_connection(
    loop: asyncio.AbstractEventLoop, pause: float, timeout: float | None
) -> None:
    """Waits until another call of ``loop`` ends, or ``pause`` seconds (a connection given back
    by another thread, or by a batch still running, wakes nobody), or until ``timeout``."""
    global _pool_waits
    freed = _freed.get(loop)
    if freed is None:
        freed = _freed[loop] = _Freed()
        _pool_waits = True
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


#: Whether the loop's poller is an epoll set (tests turn it off for the loop readers' path).
_HAS_EPOLL = EPOLL

_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Poller] = weakref.WeakKeyDictionary()
# The poller of the loop used last: found without a lookup by the calls that follow.
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], Poller] | None = None


def _poller(loop: asyncio.AbstractEventLoop) -> Poller:
    """This loop's, made at its first call: an epoll set the loop watches through one reader,
    where there is epoll, otherwise the loop's own readers per wait."""
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = Poller(loop, _HAS_EPOLL)
        fd = poller.fileno()
        if fd is not None:
            loop.add_reader(fd, poller.dispatch)
    _last = (weakref.ref(loop), poller)
    return poller


async def run(operation: Operation) -> Any:
    """Runs ``operation`` on the running loop and returns its result (or raises its error).

    The operation drives itself while awaited (``Operation.on``): its sockets and deadline are
    watched by the loop's poller. The await gives the operation back when it needs a
    connection it must wait for or make; that is done here, then it is awaited again.

    Cancelled, it closes the operation: a connection whose reply is still on its way is
    closed, never reused, since that reply would answer someone else's request.
    """
    loop = asyncio.get_running_loop()
    waits = None
    try:
        operation.on(_poller(loop))
        while True:
            result = await operation
            if result is not operation:
                return result
            if operation.waits_for_pool():
                # Every connection of the pool is in use: wait on the loop for one. Past the
                # deadline, advance() ends the call as the pool exhausted.
                if waits is None:
                    waits = pauses()
                await _wait_for_a_connection(loop, next(waits), operation.timeout())
            else:
                # A connect or the first discovery: on a worker thread.
                woken: asyncio.Future[None] = loop.create_future()
                operation.prepare_later(woken, False)
                await woken
    finally:
        operation.close()
        # Its connections are back in their pools (or closed, making room).
        if _pool_waits:
            _connection_freed(loop)
