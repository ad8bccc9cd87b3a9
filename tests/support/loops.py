"""The event loops the async tests run on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test of a module that imports this fixture runs on asyncio's own loop and on
    uvloop (what uvicorn runs when installed): the event-loop paths rely on ``add_reader``,
    ``add_writer``, ``call_later`` and futures of either."""
    if request.param == "asyncio":
        yield request.param
        return
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield request.param
    finally:
        asyncio.set_event_loop_policy(previous)
