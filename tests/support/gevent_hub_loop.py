"""Run by ``tests/test_gevent.py`` in a fresh process, monkey-patched first thing:
``python gevent_hub_loop.py JSON``. The hub's poller watches its epoll set through one io
watcher that keeps the hub's loop alive only while a greenlet waits, and a forked child makes a
poller of its own. JSON gives ``scenario``:

* ``alone`` (with ``frozen``, a node the caller stopped, and ``healthy``): the main greenlet,
  with nothing else on the hub, reads from the frozen node (its wait alone must keep the loop
  running until its deadline), then from the healthy one; then ``gevent.wait()`` must return
  (nothing is left to wait for) rather than time out.
* ``fork`` (with ``healthy``): the parent reads (its hub's poller made), forks, and parent and
  child each run greenlets reading at the same time.

Prints one JSON line: what happened, and ``all_done``.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 (after monkey-patching, on purpose)
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import django  # noqa: E402
import gevent  # noqa: E402
from django.conf import settings  # noqa: E402

#: Bounds, never reached when all is well.
WAIT_BOUND = 30
GREENLETS = 10
READS = 100


def cache(address: str, timeout: float) -> Any:
    from django_elasticache_rs.backend import ElastiCache

    return ElastiCache(address, {"OPTIONS": {"discovery": "off", "timeout": timeout}})


def alone(spec: dict[str, Any]) -> dict[str, Any]:
    log: list[str] = []
    try:
        cache(spec["frozen"], 0.3).get("k")
        log.append("frozen-returned")
    except Exception as error:
        log.append(f"frozen-{type(error).__name__}")
    healthy = cache(spec["healthy"], 5)
    healthy.set("k", "v")
    log.append(f"healthy-{healthy.get('k')}")
    # True once the loop has nothing left; False if something still held it after the bound.
    log.append(f"wait-{gevent.wait(timeout=WAIT_BOUND)}")
    return {"log": log, "all_done": True}


def reads(healthy: Any, name: str) -> list[str]:
    """``GREENLETS`` greenlets each reading ``READS`` times what ``name`` wrote."""
    healthy.set(name, name)

    def read() -> int:
        return sum(healthy.get(name) == name for _ in range(READS))

    greenlets = [gevent.spawn(read) for _ in range(GREENLETS)]
    gevent.joinall(greenlets, timeout=WAIT_BOUND)
    failed = [repr(g.exception) for g in greenlets if g.exception is not None]
    read_back = sum(g.value or 0 for g in greenlets)
    return [f"{name}-read-{read_back}", *failed]


def fork(spec: dict[str, Any]) -> dict[str, Any]:
    from django_elasticache_rs import _green

    healthy = cache(spec["healthy"], 5)
    healthy.get("warm")  # the parent's hub now has its poller
    parent_poller = _green._green(gevent.get_hub()).poller
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        own = _green._green(gevent.get_hub())
        outcome = reads(healthy, "child")
        own_poller = own.poller is not None and own.poller is not parent_poller
        os.write(write, json.dumps({"log": outcome, "own_poller": own_poller}).encode())
        os._exit(0)
    os.close(write)
    log = reads(healthy, "parent")
    with os.fdopen(read) as from_child:
        reported = json.loads(from_child.read() or "{}")
    _, status = os.waitpid(child, 0)
    return {
        "log": log + reported.get("log", ["child-silent"]),
        "child_own_poller": reported.get("own_poller"),
        "all_done": status == 0,
    }


def main() -> int:
    spec = json.loads(sys.argv[1])
    settings.configure()
    django.setup()
    report = {"alone": alone, "fork": fork}[spec["scenario"]](spec)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
