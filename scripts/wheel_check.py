"""Import-and-use check of an installed django-elasticache-rs (scripts/wheel.sh, scripts/matrix.sh).

Run by the interpreter of a venv the wheel was installed into, from outside the checkout: it
fails unless the package comes from that venv's site-packages, then starts a local cluster
(real memcached nodes behind a configuration endpoint, from the package's own ``local`` module)
and uses it through Django's cache API: Auto Discovery, set/get, get_many, incr, delete, an
``aget`` on the event loop, and the native client directly. Prints one line per step and exits
non-zero on the first failure.
"""

from __future__ import annotations

import asyncio
import sys
import sysconfig
from pathlib import Path


def main() -> int:
    import django
    from django.conf import settings

    import django_elasticache_rs
    from django_elasticache_rs import Client
    from django_elasticache_rs.local import LocalCluster

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    location = Path(django_elasticache_rs.__file__).resolve()
    if not location.is_relative_to(site):
        print(f"FAIL: django_elasticache_rs imported from {location}, not from {site}")
        return 1
    native = Path(django_elasticache_rs._native.__file__).name
    print(
        f"import: django_elasticache_rs {django_elasticache_rs.__version__} ({native}) on "
        f"Python {sys.version.split()[0]}, Django {django.get_version()}, from {location.parent}"
    )

    with LocalCluster(nodes=2) as cluster:
        settings.configure(CACHES=cluster.caches_setting(discovery_interval=0), USE_TZ=True)
        django.setup()
        from django.core.cache import cache

        cache.set("wheel-check", {"works": True}, 30)
        assert cache.get("wheel-check") == {"works": True}, "set/get"
        cache.set_many({f"k{i}": i for i in range(20)})
        assert cache.get_many([f"k{i}" for i in range(20)]) == {f"k{i}": i for i in range(20)}
        assert cache.incr("k3", 10) == 13, "incr"
        assert cache.delete("k4") is True and cache.get("k4") is None, "delete"
        assert sorted(cache.servers) == sorted(cluster.addresses), "discovery"  # type: ignore[attr-defined]
        assert asyncio.run(cache.aget("wheel-check")) == {"works": True}, "aget"
        print(
            f"use: set/get, get_many, incr, delete, aget through Auto Discovery of "
            f"{len(cluster.addresses)} nodes at {cluster.configuration_endpoint}: OK"
        )
        client = Client(cluster.addresses)
        client.set("native", b"value", 0)
        assert client.get("native") == b"value", "native client"
        print("native client: set/get OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
