"""Run by ``tests/test_async_ops.py`` in a fresh process:
``python async_without_workers.py '["host:port", ...]' asyncio|uvloop``.

Warms the pool of a backend over the given nodes with blocking calls, then runs every ``a*``
method many times on the named event loop, one call after another (so the warm connections
suffice), checking each result. After every call it looks for native worker threads (started
by ``crates/python/src/completion.rs``, which names them ``elasticache-async``; Linux keeps the
first 15 bytes of a thread's name). Prints one JSON line: the workers after the warm-up, the
first method after which a worker existed (``null``: none ever did), the workers at the end,
and how many results were checked."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import django
from django.conf import settings

WORKER_NAME = "elasticache-async"[:15]
ROUNDS = 25


def native_workers() -> int:
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                if comm.read().strip() == WORKER_NAME:
                    count += 1
        except FileNotFoundError:
            continue  # a thread that just ended
    return count


def main() -> int:
    addresses, loop_kind = json.loads(sys.argv[1]), sys.argv[2]
    settings.configure()
    django.setup()
    from django_elasticache_rs.backend import ElastiCache

    cache = ElastiCache(
        addresses, {"KEY_PREFIX": "no-workers", "OPTIONS": {"discovery": "off", "timeout": 5}}
    )
    keys = [f"key-{i}" for i in range(30)]
    values = {key: f"value-{key}" for key in keys}
    # Every node gets a pooled connection, by every kind of blocking call.
    cache.set_many(values)
    assert cache.get_many(keys) == values
    cache.set("counter", 0)
    cache.incr("counter")
    cache.delete("absent")
    assert cache.get(keys[0]) == values[keys[0]]
    workers_after_warm_up = native_workers()
    checked = 0
    first_with_worker: str | None = None

    def check(method: str, got: Any, expected: Any) -> None:
        nonlocal checked, first_with_worker
        assert got == expected, f"{method} returned {got!r}, not {expected!r}"
        checked += 1
        if first_with_worker is None and native_workers() > workers_after_warm_up:
            first_with_worker = method

    async def scenario() -> None:
        counter = 1
        for round_ in range(ROUNDS):
            key = keys[round_ % len(keys)]
            check("aget", await cache.aget(key), values[key])
            check("aget (miss)", await cache.aget("absent", "default"), "default")
            check("ahas_key", await cache.ahas_key(key), True)
            check("aset", await cache.aset(key, values[key]), None)
            check("aadd", await cache.aadd(key, "other"), False)
            check("atouch", await cache.atouch(key, 600), True)
            check("aget_many", await cache.aget_many(keys), values)
            check("aset_many", await cache.aset_many(values), [])
            counter += 2
            check("aincr", await cache.aincr("counter", 2), counter)
            counter -= 1
            check("adecr", await cache.adecr("counter"), counter)
            check("adelete", await cache.adelete("absent"), False)
            check("adelete_many", await cache.adelete_many(["absent", "absent-2"]), None)
            if round_ == ROUNDS - 1:
                check("aclear", await cache.aclear(), None)
                check("aget_many (cleared)", await cache.aget_many(keys), {})

    if loop_kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(scenario())
    report = {
        "workers_after_warm_up": workers_after_warm_up,
        "first_method_with_a_worker": first_with_worker,
        "workers_at_end": native_workers(),
        "results_checked": checked,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
