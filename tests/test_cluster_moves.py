"""Warm scale-out and migration between clusters, through the Django backend, against the local
ElastiCache-compatible cluster (real memcached nodes behind a configuration endpoint): a miss
on a moved key reads its previous owner (or the ``migrate_from`` cluster) and copies the value
to its new owner; a delete or set reaches both, so no deleted value comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pymemcache.client.hash import HashClient

from django_elasticache_rs import signals
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster
from django_elasticache_rs.management.commands.elasticache import text
from django_elasticache_rs.pytest_plugin import ClusterFactory
from django_elasticache_rs.status import report

TIMEOUT = 0.5
INTERVAL = 0.2


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling interval, not synchronisation


def backend(location: str | list[str], **options: Any) -> ElastiCache:
    """A backend with its own native client (distinct options: not shared with other tests)."""
    options = {
        "timeout": TIMEOUT,
        "connect_timeout": TIMEOUT,
        "discovery_interval": INTERVAL,
        **options,
    }
    return ElastiCache(location, {"OPTIONS": options})


def holders(cluster: LocalCluster, key: str) -> list[str]:
    """The nodes of ``cluster`` holding ``key`` (Django's default key function's form)."""
    return [node.address for node in cluster.nodes if node.has_key(f":1:{key}")]


class Computed:
    """A get_or_set default that counts its calls (the database)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return "computed"


def test_a_scale_out_through_discovery_warms_the_new_node_and_resurrects_nothing(
    elasticache_cluster: LocalCluster,
) -> None:
    cluster = elasticache_cluster
    started: list[dict[str, Any]] = []

    def heard(sender: object, **fields: Any) -> None:
        started.append(fields)

    signals.warmup_started.connect(heard)
    try:
        cache = backend(cluster.configuration_endpoint, warmup_window=300)
        keys = [f"user:{i}" for i in range(400)]
        cache.set_many({key: key for key in keys}, timeout=600)
        new = cluster.add_node()
        wait_until("scale-out", lambda: new.address in cache.servers)
        wait_until("the warmup_started signal", lambda: bool(started))
    finally:
        signals.warmup_started.disconnect(heard)
    assert started[0]["window"] == 300.0
    placement = HashClient(cluster.addresses).hasher
    moved = [key for key in keys if placement.get_node(f":1:{key}") == new.address]
    assert len(moved) >= 8, "too few keys moved: the test proves little"
    assert not any(new.has_key(f":1:{key}") for key in moved), "nothing moved them yet"
    deleted, rewritten, got, computed_key, *batch = moved

    # A delete in the window reaches the previous owner too: the value never comes back.
    cache.delete(deleted)
    assert holders(cluster, deleted) == []
    assert cache.get(deleted) is None
    assert cache.get_many([deleted]) == {}
    # A set goes to the new owner and deletes the previous owner's copy.
    cache.set(rewritten, "new", timeout=600)
    assert holders(cluster, rewritten) == [new.address]
    assert cache.get(rewritten) == "new"

    # A miss on a moved key reads the previous owner and copies the value over.
    assert cache.get(got) == got
    assert new.has_key(f":1:{got}")
    found = cache.get_many([*batch, "never-written"])
    assert found == {key: key for key in batch}
    assert all(new.has_key(f":1:{key}") for key in batch)
    database = Computed()
    assert cache.get_or_set(computed_key, database, timeout=600) == computed_key
    assert database.calls == 0, "a moved value is not recomputed"

    metrics = cache.metrics()
    copied = 2 + len(batch)
    assert (metrics["warmup_hits"], metrics["warmup_copies"]) == (copied, copied)
    assert metrics["detour_deletes"] >= 2


def test_with_warm_up_off_a_scale_out_loses_the_moved_keys(
    elasticache_cluster: LocalCluster,
) -> None:
    cluster = elasticache_cluster
    cache = backend(cluster.configuration_endpoint, warmup_window=0)
    keys = [f"user:{i}" for i in range(200)]
    cache.set_many({key: key for key in keys})
    new = cluster.add_node()
    wait_until("scale-out", lambda: new.address in cache.servers)
    placement = HashClient(cluster.addresses).hasher
    moved = [key for key in keys if placement.get_node(f":1:{key}") == new.address]
    assert moved
    assert cache.get_many(moved) == {}
    assert cache.metrics()["warmup_reads"] == 0


@pytest.fixture
def clusters(elasticache_cluster_factory: ClusterFactory) -> tuple[LocalCluster, LocalCluster]:
    """An old cluster of 3 nodes and a new one of 2, each behind its configuration endpoint."""
    return elasticache_cluster_factory(nodes=3), elasticache_cluster_factory(nodes=2)


def test_migration_reads_through_the_old_cluster_and_copies(
    clusters: tuple[LocalCluster, LocalCluster],
) -> None:
    old, new = clusters
    before = backend(old.static_caches_setting()["default"]["LOCATION"], hashing="ketama")
    before.set_many({f"old:{i}": i for i in range(20)}, timeout=600)
    cache = backend(
        new.configuration_endpoint,
        migrate_from={"LOCATION": old.configuration_endpoint, "hashing": "ketama"},
        metrics="prometheus",
    )
    cache.set("fresh", "fresh")
    assert cache.get("old:0") == 0
    assert holders(new, "old:0"), "copied to the new cluster"
    found = cache.get_many(["old:1", "fresh", "old:2", "missing"])
    assert found == {"old:1": 1, "fresh": "fresh", "old:2": 2}
    assert holders(new, "old:1") and holders(new, "old:2")
    database = Computed()
    assert cache.get_or_set("old:3", database) == 3
    assert database.calls == 0
    # The event-driven path takes the same detour.
    assert asyncio.run(cache.aget("old:4")) == 4
    metrics = cache.metrics()
    assert (metrics["migration_hits"], metrics["migration_copies"]) == (5, 5)
    assert metrics["migration_reads"] == 6, "five hits and the key missing everywhere"
    # Visible where operators look: manage.py elasticache (and the admin page, which shows
    # the same report), and Prometheus.
    entry = report("default", cache)
    assert entry["cluster_events"]["migration_copies"] == 5
    assert "migration: 6 read through (5 found, 5 copied)" in text(entry)
    scraped = {
        sample.name: sample.value
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for sample in family.samples
    }
    assert scraped["elasticache_migration_copies_total"] >= 5


def test_migration_writes_and_deletes_leave_no_stale_copy_in_the_old_cluster(
    clusters: tuple[LocalCluster, LocalCluster],
) -> None:
    old, new = clusters
    servers = old.static_caches_setting()["default"]["LOCATION"]
    before = backend(servers)
    before.set_many({key: "old" for key in ("deleted", "rewritten", "many-1", "many-2")})
    cache = backend(new.configuration_endpoint, migrate_from=servers)
    cache.delete("deleted")
    cache.set("rewritten", "new")
    cache.delete_many(["many-1"])
    cache.set_many({"many-2": "new"})
    for key in ("deleted", "rewritten", "many-1", "many-2"):
        assert holders(old, key) == [], f"{key} is left in the old cluster"
    assert cache.get_many(["deleted", "rewritten", "many-1", "many-2"]) == {
        "rewritten": "new",
        "many-2": "new",
    }
    assert before.get("deleted") is None


def test_migrate_from_is_checked_as_the_cache_is_built() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="migrate_from"):
        backend("127.0.0.1:11211", migrate_from={"LOCATION": "a:1", "hashing": "md5"})
    with pytest.raises(ImproperlyConfigured, match="migrate_from"):
        backend("127.0.0.1:11211", migrate_from="not an address:x")
