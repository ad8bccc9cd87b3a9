"""Demo: three local memcached nodes, a Django cache on the ElastiCache backend, and where
each key lives.

Run it with ``scripts/demo.sh`` (which installs what it needs first).
"""

from __future__ import annotations

from collections import Counter

import django
from django.conf import settings

from django_elasticache_rs.local import LocalCluster


def main() -> None:
    with LocalCluster(nodes=3) as cluster:
        print("Started memcached nodes:", ", ".join(cluster.addresses))
        settings.configure(CACHES=cluster.caches_setting())
        django.setup()
        from django.core.cache import cache, caches

        users = {f"user:{i}": {"id": i, "name": f"user {i}"} for i in range(30)}
        assert cache.set_many(users, timeout=300) == []
        cache.set("greeting", "héllo from Rust")
        cache.set("visits", 0)
        cache.incr("visits", 41)

        print("\nRead back:")
        print("  greeting ->", cache.get("greeting"))
        print("  visits   ->", cache.incr("visits"))
        found = cache.get_many(list(users))
        print(f"  get_many of {len(users)} keys -> {len(found)} hits, one round trip")

        native = caches["default"].client  # the shared native client behind the backend
        print("\nWhere the keys live (pymemcache-compatible rendezvous hashing):")
        placement = Counter(native.node_for(key, "", 1) for key in [*users, "greeting", "visits"])
        for node, stats in native.stats():
            items = dict(stats)["curr_items"]
            print(f"  {node}: {placement[node]:2d} keys placed, {items} items stored")
        for key in ["user:0", "user:1", "user:2", "greeting"]:
            print(f"  {key!r:12} -> {native.node_for(key, '', 1)}")


if __name__ == "__main__":
    main()
