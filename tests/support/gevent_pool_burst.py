"""Run by ``tests/test_gevent.py`` in a fresh process, monkey-patched first thing (as gunicorn's
gevent worker is): ``python gevent_pool_burst.py JSON``, where JSON gives ``node`` (a memcached
node the caller has stopped), ``options`` (the backend's OPTIONS) and ``greenlets``.

A burst of greenlets each makes a call to the stopped node, more of them than the pool has
connections: one holds the pool's connection waiting for a reply that never comes, the others
wait for it. While they all wait, the script asks gevent's resolver for a name, which runs on
the hub's thread pool (as every ``socket.getaddrinfo`` of a patched process does). Every event
is logged in the order it happened, with what was queued on the hub's thread pool; the script
prints one JSON line and leaves the assertions to the test.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 (after monkey-patching, on purpose)
import socket  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import django  # noqa: E402
import gevent  # noqa: E402
from django.conf import settings  # noqa: E402
from gevent.threadpool import ThreadPool  # noqa: E402


def main() -> int:
    spec = json.loads(sys.argv[1])
    settings.configure()
    django.setup()
    from django_elasticache_rs.backend import ElastiCache

    node = spec["node"]
    cache = ElastiCache(node, {"OPTIONS": {"discovery": "off", **spec["options"]}})

    hub = gevent.get_hub()
    # What anything queues on the hub's own thread pool, by name (ThreadPool has __slots__:
    # its class is wrapped, and only the hub's pool is recorded).
    on_hub_pool: list[str] = []
    spawn = ThreadPool.spawn

    def recording_spawn(pool: ThreadPool, func: Any, *args: Any, **kwargs: Any) -> Any:
        if pool is hub.threadpool:
            on_hub_pool.append(getattr(func, "__qualname__", repr(func)))
        return spawn(pool, func, *args, **kwargs)

    ThreadPool.spawn = recording_spawn  # type: ignore[method-assign]

    log: list[str] = []
    outcomes: list[str] = []

    def call(index: int) -> None:
        log.append("burst-start")
        try:
            cache.get(f"burst-{index}")
            outcomes.append("returned")
        except Exception as error:
            outcomes.append(type(error).__name__)
        log.append("burst-end")

    burst = [gevent.spawn(call, i) for i in range(spec["greenlets"])]
    # Every greenlet of the burst runs until its call waits (a call that yields gives the hub
    # back at once): bounded, in turns of the hub, not in time.
    for _ in range(1_000):
        if log.count("burst-start") == len(burst):
            break
        gevent.sleep(0)
    gevent.sleep(0)
    busy_during_burst = len(hub.threadpool)
    log.append("lookup-start")
    resolved = socket.getaddrinfo("localhost", 11211, socket.AF_INET, socket.SOCK_STREAM)
    log.append("lookup-done")
    gevent.joinall(burst, timeout=60, raise_error=False)
    print(
        json.dumps(
            {
                "log": log,
                "outcomes": outcomes,
                "resolved": bool(resolved),
                "hub_pool_busy_during_burst": busy_during_burst,
                "on_hub_pool": on_hub_pool,
                "pool_waits": cache.metrics()["nodes"][node]["pool_waits"],
                "all_done": all(greenlet.dead for greenlet in burst),
            },
            default=repr,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
