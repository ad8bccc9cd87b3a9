"""Which keys are hot (issue 23): a sampled, bounded top-k per node of the keys read most and of
the largest values read, as ``cache.hot_keys(n)`` and ``cache.largest_values(n)`` give them:
the user's keys as passed to ``get``, with their node. Shown on a Zipf workload against real
memcached, with every read sampled (``hot_keys_sample: 1``) so the outcome is exact."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster
from tests.support.backends import own_backend

KEYS = 300
READS = 12_000
BATCH = 50


def backend(cluster: LocalCluster, **options: Any) -> ElastiCache:
    return own_backend(cluster.addresses, "hot", **{"timeout": 10, **options})


def zipf_reads(count: int, seed: int) -> list[str]:
    """``count`` reads of ``KEYS`` keys, key ``i`` drawn with weight ``1 / (i + 1) ** 1.1``."""
    draw = random.Random(seed)
    keys = [f"item:{i}" for i in range(KEYS)]
    weights = [1 / (i + 1) ** 1.1 for i in range(KEYS)]
    return draw.choices(keys, weights, k=count)


def test_the_hot_key_list_finds_the_top_keys_of_a_zipf_workload(
    memcached_cluster: LocalCluster,
) -> None:
    cache = backend(memcached_cluster, hot_keys_sample=1)
    cache.set_many({f"item:{i}": "x" * (10 + i) for i in range(KEYS)})
    reads = zipf_reads(READS, seed=23)
    # Single gets and batches alike.
    for key in reads[:2_000]:
        cache.get(key)
    for start in range(2_000, READS, BATCH):
        cache.get_many(reads[start : start + BATCH])
    expected = [key for key, _ in Counter(reads).most_common(5)]
    hot = cache.hot_keys(5)
    assert [entry["key"] for entry in hot] == expected
    for entry in hot:
        assert entry["version"] == 1
        assert entry["node"] == cache.client.node_for(entry["key"], cache.key_prefix, 1)
        assert entry["reads_per_second"] > 0
    rates = [entry["reads_per_second"] for entry in hot]
    assert rates == sorted(rates, reverse=True)


def test_the_largest_values_read_are_named(memcached_cluster: LocalCluster) -> None:
    cache = backend(memcached_cluster, hot_keys_sample=1)
    sizes = {"small": 10, "large": 50_000, "medium": 5_000}
    cache.set_many({key: b"x" * size for key, size in sizes.items()})
    cache.get_many(list(sizes))
    cache.get("large")
    largest = cache.largest_values(2)
    assert [entry["key"] for entry in largest] == ["large", "medium"]
    assert largest[0]["bytes"] >= 50_000


def test_with_sampling_off_nothing_is_kept(memcached_cluster: LocalCluster) -> None:
    cache = backend(memcached_cluster, hot_keys_sample=0)
    cache.set("k", "v")
    for _ in range(100):
        cache.get("k")
    assert cache.hot_keys(5) == []
    assert cache.largest_values(5) == []


def test_keys_never_reach_the_exported_metrics(memcached_cluster: LocalCluster) -> None:
    cache = backend(memcached_cluster, hot_keys_sample=1)
    cache.set("secret-user-42", "v")
    cache.get("secret-user-42")
    assert cache.hot_keys(1)[0]["key"] == "secret-user-42"
    assert "secret-user-42" not in repr(cache.metrics())


def test_the_admin_page_lists_this_workers_hottest_keys_printably(
    memcached_cluster: LocalCluster,
) -> None:
    from django_elasticache_rs.views import _entry

    cache = backend(memcached_cluster, hot_keys_sample=1)
    cache.set_many({"front-page": 1, "flag\u202e": 2})
    for _ in range(3):
        cache.get("front-page")
    cache.get("flag\u202e")
    hot = _entry("default", cache)["hot_keys"]
    assert [entry["key"] for entry in hot] == ["front-page", "flag\\u202e"]
    assert hot[0]["node"] == cache.client.node_for("front-page", cache.key_prefix, 1)
