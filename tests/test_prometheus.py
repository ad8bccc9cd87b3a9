"""``OPTIONS["metrics"] = "prometheus"``: the counters under ``elasticache_`` names, read at
scrape time in one process, and summed over worker processes in prometheus_client's
multiprocess mode (as gunicorn workers run), against real memcached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster, LocalNode

WORKER = Path(__file__).parent / "support" / "prometheus_worker.py"


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_one_process_exports_the_counters_when_scraped(memcached_cluster: LocalCluster) -> None:
    cache = ElastiCache(
        memcached_cluster.addresses, {"OPTIONS": {"discovery": "off", "metrics": "prometheus"}}
    )
    keys = [f"scraped-{i}" for i in range(10)]
    cache.set_many({key: key for key in keys[:4]})
    assert len(cache.get_many(keys)) == 4
    assert cache.get(keys[0]) == keys[0]
    found = samples(REGISTRY)
    nodes = memcached_cluster.addresses
    hits = sum(
        found.get(("elasticache_lookups_total", (("node", n), ("outcome", "hit"))), 0)
        for n in nodes
    )
    misses = sum(
        found.get(("elasticache_lookups_total", (("node", n), ("outcome", "miss"))), 0)
        for n in nodes
    )
    assert (hits, misses) == (5, 6)
    node = cache._native.node_for(keys[0], cache._prefix, cache.version)
    assert found[("elasticache_requests_total", (("command", "get"), ("node", node)))] == 1
    requests = sum(
        value
        for (name, labels), value in found.items()
        if name == "elasticache_requests_total" and dict(labels)["node"] == node
    )
    assert found[("elasticache_request_duration_seconds_count", (("node", node),))] == requests
    assert (
        found[("elasticache_request_duration_seconds_bucket", (("le", "+Inf"), ("node", node)))]
        == requests
    )
    # No key anywhere, in any label.
    assert not any("scraped" in value for _, labels in found for _, value in labels)


def test_worker_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    with LocalNode() as node:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
        for gets in (3, 5):
            done = subprocess.run(
                [sys.executable, str(WORKER), node.address, str(gets)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        found = samples(registry)
    get = (("command", "get"), ("node", node.address))
    assert found[("elasticache_requests_total", get)] == 3 + 1 + 5 + 1
    hit = (("node", node.address), ("outcome", "hit"))
    miss = (("node", node.address), ("outcome", "miss"))
    assert (
        found[("elasticache_lookups_total", hit)],
        found[("elasticache_lookups_total", miss)],
    ) == (8, 2)
    count = found[("elasticache_request_duration_seconds_count", (("node", node.address),))]
    requests = sum(
        value for (name, labels), value in found.items() if name == "elasticache_requests_total"
    )
    assert count == requests
