"""Demo: a local ElastiCache-compatible cluster (three memcached nodes behind a configuration
endpoint), a Django cache that finds the nodes through Auto Discovery, and the cluster scaling
out and in while the cache is in use, without a restart.

Run it with ``scripts/demo.sh`` (which installs what it needs first).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import django
from django.conf import settings

from django_elasticache_rs.local import LocalCluster

INTERVAL = 1.0  # discovery_interval, seconds
KEYS = [f"user:{i}" for i in range(120)]


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition`` holds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def show_distribution(title: str) -> None:
    from django.core.cache import caches

    native = caches["default"].client
    placement = Counter(native.node_for(key, "", 1) for key in KEYS)
    print(f"\n{title} (configuration version {native.config_version}):")
    for node, stats in native.stats():
        items = dict(stats)["curr_items"]
        share = placement[node] / len(KEYS)
        owns = f"owns {placement[node]:3d} of {len(KEYS)} keys ({share:4.0%})"
        print(f"  {node}: {owns}, {items} items stored")


def main() -> None:
    with LocalCluster(nodes=3) as cluster:
        print("Local cluster: configuration endpoint", cluster.configuration_endpoint)
        print("  nodes:", ", ".join(cluster.addresses))
        settings.configure(CACHES=cluster.caches_setting(discovery_interval=INTERVAL))
        django.setup()
        from django.core.cache import cache

        print("\nCACHES LOCATION is the endpoint; the first access discovers the nodes.")
        users = {key: {"id": i, "name": f"user {i}"} for i, key in enumerate(KEYS)}
        assert cache.set_many(users, timeout=300) == []
        cache.set("greeting", "héllo from Rust")
        print("  greeting ->", cache.get("greeting"))
        found = cache.get_many(KEYS)
        print(f"  get_many of {len(KEYS)} keys -> {len(found)} hits, one round trip")
        show_distribution("Keys per node")

        new = cluster.add_node()
        print(f"\nScale-out: {new.address} joins the cluster (discovery_interval {INTERVAL} s)...")
        took = wait_for("scale-out", lambda: new.address in cache.servers, 5 * INTERVAL)
        print(f"  picked up after {took:.1f} s, without a restart")
        missing = [key for key in KEYS if cache.get(key) is None]
        print(f"  {len(missing)} keys now belong to the new node and are misses until rewritten")
        cache.set_many({key: users[key] for key in missing}, timeout=300)
        show_distribution("After scale-out and rewriting the misses")

        removed = cluster.remove_node()
        print(f"\nScale-in: {removed} leaves the cluster...")
        took = wait_for("scale-in", lambda: removed not in cache.servers, 5 * INTERVAL)
        print(f"  picked up after {took:.1f} s")
        found = cache.get_many(KEYS)
        print(f"  {len(found)} of {len(KEYS)} keys hit: the removed node's keys went back to the")
        print("  nodes that owned them before the scale-out, which still hold their values")
        show_distribution("After scale-in")


if __name__ == "__main__":
    main()
