"""Run by ``tests/test_prometheus.py`` as a worker process in prometheus_client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR`` set by the caller): ``python prometheus_worker.py ADDRESS
GETS``. Makes GETS gets of a present key and one of an absent key as requests do, ends the
request as Django does (the backend's ``close()``), and exits."""

from __future__ import annotations

import sys

import django
from django.conf import settings

address, gets = sys.argv[1], int(sys.argv[2])
settings.configure(
    CACHES={
        "default": {
            "BACKEND": "django_elasticache_rs.backend.ElastiCache",
            "LOCATION": address,
            "OPTIONS": {"discovery": "off", "metrics": "prometheus"},
        }
    }
)
django.setup()

from django.core.cache import caches  # noqa: E402

from django_elasticache_rs.prometheus import push_now  # noqa: E402

cache = caches["default"]
cache.set("present", "value")
for _ in range(gets):
    assert cache.get("present") == "value"
assert cache.get("absent") is None
cache.close()  # a request's end: pushes, at most once a second
push_now()  # and before the worker exits, whatever the time
