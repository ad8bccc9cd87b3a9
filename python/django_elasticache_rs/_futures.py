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


async def run(operation: Operation) -> Any:
    """Runs ``operation`` on the running loop and returns its result (or raises its error).

    Cancelled, it closes the operation: a connection whose reply is still on its way is
    closed, never reused, since that reply would answer someone else's request.
    """
    loop = asyncio.get_running_loop()
    try:
        while True:
            progress = operation.advance()
            if progress == DONE:
                return operation.result()
            woken: asyncio.Future[None] = loop.create_future()
            if progress == BLOCK:
                operation.prepare_later(woken)
                await woken
                continue
            waits = operation.waits()
            for fd, interest in waits:
                if interest == READ:
                    loop.add_reader(fd, _wake, woken)
                else:
                    loop.add_writer(fd, _wake, woken)
            timeout = operation.timeout()
            # Past the deadline, the next advance() ends the operation as a timeout.
            timer = None if timeout is None else loop.call_later(timeout, _wake, woken)
            try:
                await woken
            finally:
                for fd, interest in waits:
                    if interest == READ:
                        loop.remove_reader(fd)
                    else:
                        loop.remove_writer(fd)
                if timer is not None:
                    timer.cancel()
    finally:
        operation.close()
