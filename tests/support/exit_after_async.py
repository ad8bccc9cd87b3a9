"""Run by ``tests/test_async_ops.py`` in a fresh process:
``python exit_after_async.py host:port``.

Uses a cold pool from asyncio (each connect runs on a native worker), then leaves calls in
flight when ``asyncio.run`` returns, so that workers finish their jobs, and hand results over,
while the interpreter exits. Prints ``done`` before exiting; the exit status must be 0."""

from __future__ import annotations

import asyncio
import sys

from django_elasticache_rs import Client
from django_elasticache_rs._futures import run

# Calls left in flight: held here so that only asyncio.run's exit cancels them.
PENDING: list[asyncio.Future[object]] = []


async def main(address: str) -> None:
    client = Client([address])
    await asyncio.gather(*(run(client.start_get(f"k{i}")) for i in range(8)))
    # Cancelled by asyncio.run's exit; their blocking steps go on on the workers.
    late = Client([address])
    PENDING.extend(asyncio.ensure_future(run(late.start_get(f"late{i}"))) for i in range(8))
    await asyncio.sleep(0)  # let them start: this is the point of the script, not a wait


asyncio.run(main(sys.argv[1]))
print("done", flush=True)
