"""Completion of asyncio futures by the native worker threads (see ``crates/python``'s
``completion`` module): called on the future's event loop through ``call_soon_threadsafe``."""

from __future__ import annotations

import asyncio
from typing import Any


def resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Sets ``future``'s outcome, unless it was cancelled while the operation ran."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
