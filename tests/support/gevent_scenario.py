"""Run by ``tests/test_gevent.py`` in a fresh process, with gevent's monkey-patching done first
thing (as gunicorn's gevent worker does): ``python gevent_scenario.py JSON``, where JSON gives
``healthy`` and ``frozen`` (two memcached nodes, the second stopped by the caller), ``options``
(the backend's OPTIONS), ``frozen_call`` ("get" or "get_many"), ``greenlets``/``reads``, and
optionally ``epoll`` (false: the hub's poller uses a loop watcher per wait, as where there is
no epoll).

One greenlet makes a call that needs the frozen node; once it is waiting, the other greenlets
each make ``reads`` calls (get, get_many, set, incr) on the healthy node. Every event is logged
in the order it happened; the script prints one JSON line with the log and the frozen call's
outcome, and leaves the assertions to the test.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 (after monkey-patching, on purpose)
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import django  # noqa: E402
import gevent  # noqa: E402
from django.conf import settings  # noqa: E402

# Run as a script: the repository's root makes `tests.support` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.placement import keys_on  # noqa: E402


def main() -> int:
    spec = json.loads(sys.argv[1])
    settings.configure()
    django.setup()
    from django_elasticache_rs import _green
    from django_elasticache_rs.backend import ElastiCache

    _green._HAS_EPOLL = spec.get("epoll", True)
    healthy, frozen = spec["healthy"], spec["frozen"]
    cache = ElastiCache(
        [healthy, frozen],
        {"KEY_PREFIX": "gevent", "OPTIONS": {"discovery": "off", **spec["options"]}},
    )
    healthy_keys = keys_on(cache, healthy, 10, "healthy")
    frozen_key = keys_on(cache, frozen, 1, "frozen")[0]
    values = {key: f"value-of-{key}" for key in healthy_keys}
    cache.set_many(values)  # the healthy node only
    counter = keys_on(cache, healthy, 1, "counter")[0]
    cache.set(counter, 0)

    log: list[str] = []
    frozen_outcome: list[Any] = []
    failures: list[str] = []

    def frozen_reader() -> None:
        log.append("frozen-start")
        try:
            if spec["frozen_call"] == "get":
                result: Any = cache.get(frozen_key, "default")
            else:
                result = cache.get_many([frozen_key, *healthy_keys[:3]])
            frozen_outcome.extend(["returned", result])
        except Exception as error:
            frozen_outcome.extend(["raised", type(error).__name__])
        log.append("frozen-end")

    def healthy_reader(index: int) -> None:
        log.append("healthy-start")
        try:
            for i in range(spec["reads"]):
                key = healthy_keys[(index + i) % len(healthy_keys)]
                step = i % 4
                if step == 0:
                    assert cache.get(key) == values[key]
                elif step == 1:
                    assert cache.get_many(healthy_keys) == values
                elif step == 2:
                    cache.set(key, values[key])
                else:
                    assert isinstance(cache.incr(counter), int)
        except Exception as error:
            failures.append(f"{type(error).__name__}: {error}")
        log.append("healthy-done")

    waiting = gevent.spawn(frozen_reader)
    # The frozen call runs until it waits on the network: a call that yields gives the hub
    # back here, one that blocks returns only once it is over.
    gevent.sleep(0)
    readers = [gevent.spawn(healthy_reader, i) for i in range(spec["greenlets"])]
    gevent.joinall([waiting, *readers], timeout=60, raise_error=False)
    print(
        json.dumps(
            {
                "log": log,
                "frozen_outcome": frozen_outcome,
                "failures": failures,
                "all_done": waiting.dead and all(r.dead for r in readers),
            },
            default=repr,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
