"""The asyncio driver of native operations (``crates/python``'s ``operation`` module), and the
completion of futures from native worker threads.

An operation's sockets are watched by the running loop (``add_reader``/``add_writer``) with a
timer for its deadline, so no thread is involved once a connection is pooled. Only the step
the operating system gives no non-blocking form of (a connect, the first discovery) runs on a
native worker thread (``Operation.prepare_later``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._native import BLOCK, DONE, READ, Operation


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
    try:
        while True:
            progress = advance()
            if progress == DONE:
                return operation.result()
            woken: asyncio.Future[None] = create_future()
            if progress == BLOCK:
                operation.prepare_later(woken)
                await woken
                continue
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
            loop.add_reader(fd, _wake, woken)
            if interest != READ:
                loop.add_writer(fd, _wake, woken)
            try:
                await woken
            finally:
                loop.remove_reader(fd)
                if interest != READ:
                    loop.remove_writer(fd)
            if not waiting:
                # The timer fired. Loops round their timers (uvloop to the millisecond), so it
                # may fire just before the deadline: if the operation is not over then, the
                # next wait gets a timer for what is left.
                timer = None
    finally:
        if timer is not None:
            timer.cancel()
        operation.close()
