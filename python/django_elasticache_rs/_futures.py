"""The Python side of the native asyncio paths (``crates/python``'s ``pending`` and
``completion`` modules): a ``get`` driven by the running event loop, and the completion of
futures from native worker threads."""

from __future__ import annotations

import asyncio
from typing import Any

from ._native import PendingGet


def resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Sets ``future``'s outcome, unless it was cancelled while the operation ran. Called on the
    future's loop through ``call_soon_threadsafe``."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


async def finish_get(pending: PendingGet) -> Any:
    """Awaits the reply of a get started by ``Client.get_start``.

    The request is already on the wire: the running loop reads the reply when the socket is
    readable, so no thread is involved. A get that could not start without blocking (it needs
    a new connection, or the first discovery) runs on a native worker instead.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    fd = pending.fileno()
    if fd < 0:
        pending.run_on_worker(future)
        return await future
    loop.add_reader(fd, pending.on_readable, future)
    timer = None
    try:
        timeout = pending.timeout
        if timeout is not None:
            timer = loop.call_later(timeout, pending.on_timeout, future)
        return await future
    finally:
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()
        # Only now may the connection serve anyone else: the loop no longer watches it.
        pending.close()
