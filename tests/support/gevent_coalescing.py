"""Run by ``tests/test_coalescing.py`` in a fresh process, gevent's monkey-patching done first:
``python gevent_coalescing.py JSON``, where JSON gives ``address`` and ``pid`` (a memcached
node), ``prefix`` (the backend's KEY_PREFIX, under which the test stored ``hot``) and
``greenlets``. With the node stopped, every greenlet reads ``hot``; once all but one have
joined the first one's read (the client's ``coalesced`` counter), the node goes on. Prints one
JSON line: the values read and the joined reads counted."""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 (after monkey-patching, on purpose)
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import django  # noqa: E402
import gevent  # noqa: E402
from django.conf import settings  # noqa: E402

# Run as a script: the repository's root makes `tests.support` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.processes import freeze  # noqa: E402

BOUND = 30


def main() -> int:
    spec = json.loads(sys.argv[1])
    settings.configure()
    django.setup()
    from django_elasticache_rs.backend import ElastiCache

    cache = ElastiCache(
        spec["address"],
        {"KEY_PREFIX": spec["prefix"], "OPTIONS": {"discovery": "off", "timeout": 10}},
    )

    def coalesced() -> int:
        return sum(n["coalesced"] for n in cache.metrics()["nodes"].values())

    assert cache.get("warm-up") is None  # a pooled connection
    count = spec["greenlets"]
    freeze(spec["pid"])
    try:
        greenlets = [gevent.spawn(cache.get, "hot") for _ in range(count)]
        deadline = time.monotonic() + BOUND
        while coalesced() < count - 1:
            assert time.monotonic() < deadline, "the greenlets never joined"
            gevent.sleep(0.001)  # polling interval; lets the greenlets run
    finally:
        os.kill(spec["pid"], signal.SIGCONT)
    gevent.joinall(greenlets, timeout=BOUND, raise_error=True)
    print(json.dumps({"values": [g.value for g in greenlets], "coalesced": coalesced()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
