"""Run by ``tests/test_prometheus.py`` as a worker process in prometheus_client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR`` set by the caller). Two ways:

* ``python prometheus_worker.py ADDRESS GETS``: makes GETS gets of a present key and one of an
  absent key as requests do, ends the request as Django does (the backend's ``close()``), and
  exits.
* ``python prometheus_worker.py --serve ENDPOINT``: two aliases with ``OPTIONS`` of their own
  (two native clients) on the cluster behind ENDPOINT, without background discovery, driven by
  one command per line on stdin, each answered by one JSON line on stdout: ``traffic`` (keys
  set and read through both aliases, then the request's end and a push; answers the hits and
  misses per node, both aliases summed), ``refresh`` (both aliases ask the endpoint now, then a
  push; answers each alias's nodes), ``exit``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import django
from django.conf import settings

BACKEND = "django_elasticache_rs.backend.ElastiCache"

if sys.argv[1] == "--serve":
    options = {"metrics": "prometheus", "discovery_interval": None}
    settings.configure(
        CACHES={
            alias: {
                "BACKEND": BACKEND,
                "LOCATION": sys.argv[2],
                "OPTIONS": {**options, "timeout": timeout},
            }
            for alias, timeout in (("default", 1.0), ("other", 2.0))
        }
    )
else:
    settings.configure(
        CACHES={
            "default": {
                "BACKEND": BACKEND,
                "LOCATION": sys.argv[1],
                "OPTIONS": {"discovery": "off", "metrics": "prometheus"},
            }
        }
    )
django.setup()

from django.core.cache import caches  # noqa: E402

from django_elasticache_rs.prometheus import push_now  # noqa: E402


def lookups() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for alias in ("default", "other"):
        for node, counted in caches[alias].metrics()["nodes"].items():  # type: ignore[attr-defined]
            hits_misses = found.setdefault(node, [0, 0])
            hits_misses[0] += counted["hits"]
            hits_misses[1] += counted["misses"]
    return found


def serve() -> None:
    keys = [f"worker-{i}" for i in range(30)]
    for line in sys.stdin:
        command = line.strip()
        answer: Any
        if command == "traffic":
            caches["default"].set_many({key: key for key in keys[:20]})
            for alias in ("default", "other"):
                assert len(caches[alias].get_many(keys)) == 20
                caches[alias].close()  # a request's end
            push_now()
            answer = lookups()
        elif command == "refresh":
            for alias in ("default", "other"):
                caches[alias].client.refresh()  # type: ignore[attr-defined]
            push_now()
            answer = {
                alias: sorted(caches[alias].metrics()["nodes"])  # type: ignore[attr-defined]
                for alias in ("default", "other")
            }
        else:
            return
        print(json.dumps(answer), flush=True)


if sys.argv[1] == "--serve":
    serve()
else:
    gets = int(sys.argv[2])
    cache = caches["default"]
    cache.set("present", "value")
    for _ in range(gets):
        assert cache.get("present") == "value"
    assert cache.get("absent") is None
    cache.close()  # a request's end: pushes, at most once a second
    push_now()  # and before the worker exits, whatever the time
