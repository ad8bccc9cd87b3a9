"""Run by ``tests/test_gevent.py`` in a fresh process, monkey-patched first thing:
``python gevent_deadlines.py JSON``, where JSON gives ``frozen`` (a memcached node the caller
stopped). Two greenlets read from it: first one whose cache has a long timeout, then one whose
cache has a short one (a hub's waits share one deadline timer, set at the earliest). Prints
one JSON line: the order in which the calls ended, what became of the long one once killed,
and whether both greenlets ended.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 (after monkey-patching, on purpose)
import sys  # noqa: E402
from typing import Any  # noqa: E402

import django  # noqa: E402
import gevent  # noqa: E402
from django.conf import settings  # noqa: E402


def main() -> int:
    spec = json.loads(sys.argv[1])
    settings.configure()
    django.setup()
    from django_elasticache_rs.backend import ElastiCache

    def cache(timeout: float) -> Any:
        return ElastiCache(spec["frozen"], {"OPTIONS": {"discovery": "off", "timeout": timeout}})

    patient, hasty = cache(60), cache(0.3)
    log: list[str] = []

    def read(name: str, cache: Any) -> None:
        try:
            cache.get("k")
            log.append(f"{name}-returned")
        except Exception as error:
            log.append(f"{name}-{type(error).__name__}")

    long_call = gevent.spawn(read, "long", patient)
    gevent.sleep(0)  # its first step: its request sent, its deadline watched
    short_call = gevent.spawn(read, "short", hasty)
    short_call.join(timeout=30)
    log.append("long-ended" if long_call.dead else "long-waiting")
    long_call.kill(timeout=30)
    log.append("long-killed" if long_call.dead else "long-alive")
    print(json.dumps({"log": log, "all_done": long_call.dead and short_call.dead}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
