"""A worker process for ``tests/test_hot_key_reports.py``: reads a Zipf workload through the
backend (every read sampled), then ends a request as Django does (``close()``), which writes
its hot-key report. Arguments: the cluster's addresses (``;``-separated), the cache's
``KEY_PREFIX``, the workload's seed. Prints its reads per key as JSON."""

from __future__ import annotations

import json
import sys
from collections import Counter

import django
from django.conf import settings


def main() -> None:
    addresses, prefix, seed = sys.argv[1].split(";"), sys.argv[2], int(sys.argv[3])
    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django_elasticache_rs.backend.ElastiCache",
                "LOCATION": addresses,
                "KEY_PREFIX": prefix,
                "OPTIONS": {"discovery": "off", "hot_keys_sample": 1, "hot_keys_report": 60},
            }
        }
    )
    django.setup()
    from django.core.cache import cache

    from tests.test_hot_keys import zipf_reads

    reads = zipf_reads(4_000, seed)
    for key in reads:
        cache.get(key)
    cache.close()
    print(json.dumps(Counter(reads)))


if __name__ == "__main__":
    main()
