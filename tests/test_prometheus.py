"""``OPTIONS["metrics"] = "prometheus"``: the counters under ``elasticache_`` names, read at
scrape time in one process, and summed over worker processes in prometheus_client's
multiprocess mode (as gunicorn workers run), against real memcached: one series per label set
whatever the aliases on a node, and none for a node that left the cluster."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.exceptions import CacheTimeoutError
from django_elasticache_rs.local import LocalCluster, LocalNode
from tests.support.processes import stopped

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


def test_what_the_clients_hold_now_is_exported_as_gauges() -> None:
    """``local_keys``, ``local_bytes`` and ``invalidations_waiting``: the local tier's keys
    and bytes, and the deletes waiting for a node that did not take them, summed over the
    process's exporting clients."""
    with LocalNode() as node:
        cache = ElastiCache(
            node.address,
            {
                "KEY_PREFIX": "gauges",
                "OPTIONS": {
                    "discovery": "off",
                    "metrics": "prometheus",
                    "timeout": 0.5,
                    "local_cache": {"ttl": 600, "min_reads_per_second": 0},
                },
            },
        )
        value = "v" * 1000
        cache.set("hot", value)
        assert cache.get("hot") == value  # from the node, then kept
        assert cache.get("hot") == value
        assert cache.metrics()["local_keys"] == 1
        found = samples(REGISTRY)
        assert found[("elasticache_local_keys", ())] >= 1
        assert found[("elasticache_local_bytes", ())] >= len(value)
        with stopped(node):
            with pytest.raises(CacheTimeoutError):
                cache.delete("gone")
            assert cache.metrics()["invalidations_waiting"] == 1
            found = samples(REGISTRY)
        assert found[("elasticache_invalidations_waiting", ())] >= 1


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
    # The gauges too, summed over the live workers (none holds anything here).
    assert found[("elasticache_local_keys", ())] == 0
    assert found[("elasticache_invalidations_waiting", ())] == 0


def series(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample's name and labels, as exported: twice if exported twice."""
    text = generate_latest(registry).decode()
    return [
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def of_node(found: dict[Any, float], node: str) -> dict[Any, float]:
    return {key: value for key, value in found.items() if ("node", node) in key[1]}


def test_two_aliases_on_the_same_nodes_make_one_series_and_a_node_that_left_goes() -> None:
    with LocalCluster(nodes=3) as cluster:
        # Two aliases with OPTIONS of their own (two native clients) on the same nodes; no
        # background discovery: each learns of the scale-in when told to ask.
        first, second = (
            ElastiCache(
                cluster.configuration_endpoint,
                {
                    "OPTIONS": {
                        "metrics": "prometheus",
                        "discovery_interval": None,
                        "timeout": timeout,
                    }
                },
            )
            for timeout in (1.0, 2.0)
        )
        keys = [f"alias-{i}" for i in range(30)]
        first.set_many({key: key for key in keys[:20]})
        assert len(first.get_many(keys)) == len(second.get_many(keys)) == 20
        assert second.get(keys[0]) == keys[0]
        exported = series(REGISTRY)
        assert len(exported) == len(set(exported)), "a series exported twice"
        found = samples(REGISTRY)
        for node in cluster.addresses:
            counted = [cache.metrics()["nodes"][node] for cache in (first, second)]
            for outcome, field in (("hit", "hits"), ("miss", "misses")):
                labels = (("node", node), ("outcome", outcome))
                expected = sum(c[field] for c in counted)
                assert found[("elasticache_lookups_total", labels)] == expected
            requests = sum(sum(c["requests"].values()) for c in counted)
            assert found[("elasticache_request_duration_seconds_count", (("node", node),))] == (
                requests
            )
        removed = cluster.remove_node()
        before = of_node(found, removed)
        assert before[("elasticache_lookups_total", (("node", removed), ("outcome", "hit")))]

        # Gone from one client, still in the other: the series keep what both counted (less
        # would read as a counter reset, and count it all again).
        first.client.refresh()
        assert removed not in first.metrics()["nodes"] and removed in second.metrics()["nodes"]
        assert of_node(samples(REGISTRY), removed) == before

        # Gone from both: no series names it any more; the others are still there.
        second.client.refresh()
        assert removed not in second.metrics()["nodes"]
        found = samples(REGISTRY)
        assert of_node(found, removed) == {}
        for node in cluster.addresses:
            assert found[("elasticache_lookups_total", (("node", node), ("outcome", "hit")))]


class Worker:
    """``prometheus_worker.py --serve``: a worker process that stays up between commands."""

    def __init__(self, endpoint: str, directory: Path) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), "--serve", endpoint],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        assert ready, f"the worker did not answer {command!r}"
        line = self.process.stdout.readline()
        assert line, f"the worker exited (status {self.process.wait()})"
        return json.loads(line)

    def exit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0


def test_multiprocess_a_node_that_left_goes_from_every_worker_also_exited_ones(
    tmp_path: Path,
) -> None:
    with LocalCluster(nodes=3) as cluster:
        # A worker that counts, then exits (gunicorn recycled it): its counts stay in the
        # directory, as prometheus_client keeps them.
        exited = Worker(cluster.configuration_endpoint, tmp_path)
        counted = [exited.ask("traffic")]
        exited.exit()
        running = Worker(cluster.configuration_endpoint, tmp_path)
        try:
            counted.append(running.ask("traffic"))
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(tmp_path))
            assert len(series(registry)) == len(set(series(registry)))
            found = samples(registry)
            for node in cluster.addresses:
                for index, outcome in enumerate(("hit", "miss")):
                    labels = (("node", node), ("outcome", outcome))
                    expected = sum(c[node][index] for c in counted)
                    assert found.get(("elasticache_lookups_total", labels), 0) == expected
                # The histogram with every bucket, as prometheus_client's own writes it.
                bounds = {
                    dict(labels)["le"]
                    for name, labels in found
                    if name == "elasticache_request_duration_seconds_bucket"
                    and ("node", node) in labels
                }
                assert len(bounds) == 15 and "+Inf" in bounds

            removed = cluster.remove_node()
            assert of_node(found, removed)
            nodes = running.ask("refresh")
            assert all(removed not in each for each in nodes.values())
            after = samples(registry)
        finally:
            running.exit()
    assert of_node(after, removed) == {}
    for node in cluster.addresses:
        assert of_node(after, node) == of_node(found, node)
