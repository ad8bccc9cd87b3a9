"""Run by ``tests/test_stampede.py`` as one of several processes calling ``get_or_set`` on one
cold key: ``python stampede_worker.py JSON``, JSON giving ``location``, ``options``, ``key``,
``prefix`` (the KEY_PREFIX), ``mode`` ("threads", "asyncio" or "gevent"), ``callers``
(threads, tasks or greenlets here), ``total`` (callers in all processes) and ``runs`` (a file
the callable appends a line to).

Every caller counts itself in (``arrivals``, a memcached counter) and then calls
``get_or_set``. The callable, once it runs, waits (bounded) until every caller of every
process has counted itself in, so that they all meet the key while it is being computed, then
returns a value unique to this run. On asyncio the callable cannot wait (Django calls it on the
loop, which it would block): the process counts its tasks in and waits for every process's
before it starts them, and the callable returns at once. The script prints one JSON line: what
each caller got.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

spec = json.loads(sys.argv[1])
if spec["mode"] == "gevent":
    from gevent import monkey

    monkey.patch_all()

import asyncio  # noqa: E402
import threading  # noqa: E402

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    CACHES={
        "default": {
            "BACKEND": "django_elasticache_rs.backend.ElastiCache",
            "LOCATION": spec["location"],
            "KEY_PREFIX": spec["prefix"],
            "OPTIONS": spec["options"],
        }
    }
)
django.setup()

from django.core.cache import caches  # noqa: E402

# The longest the callable waits for the others before going on (then the test fails on the
# values, it does not hang).
BOUND = 20.0


def everyone_arrived() -> None:
    cache = caches["default"]
    give_up = time.monotonic() + BOUND
    while (cache.get("arrivals") or 0) < spec["total"] and time.monotonic() < give_up:
        time.sleep(0.001)  # polling a condition, bounded above


def compute() -> str:
    value = f"computed-{uuid.uuid4().hex}"
    with Path(spec["runs"]).open("a") as runs:
        runs.write(value + "\n")
    if spec["mode"] != "asyncio":
        everyone_arrived()
    return value


def main() -> None:
    key, callers, mode = spec["key"], spec["callers"], spec["mode"]
    results: list[Any] = []
    if mode == "asyncio":
        caches["default"].incr("arrivals", callers, initial=callers)
        everyone_arrived()

        async def one() -> Any:
            return await caches["default"].aget_or_set(key, compute, 60)

        async def every() -> list[Any]:
            return list(await asyncio.gather(*(one() for _ in range(callers))))

        results = asyncio.run(every())
    else:

        def caller() -> None:
            cache = caches["default"]
            cache.incr("arrivals", initial=1)
            results.append(cache.get_or_set(key, compute, 60))

        threads = [threading.Thread(target=caller) for _ in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(json.dumps(results), flush=True)


main()
