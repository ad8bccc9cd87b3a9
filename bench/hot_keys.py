"""``python -m bench.hot_keys``: a Zipf workload on a fleet of worker processes, with and without
the local tier (``OPTIONS["local_cache"]``): the requests that reach the hottest node, and what a
``get`` takes.

A local 3-node cluster holds ``--keys`` keys (200-byte values). ``--workers`` processes (each a
Django backend of its own, as gunicorn's workers are) each make ``--reads`` ``get`` calls, key
``i`` drawn with weight ``1 / (i + 1) ** --skew`` (the shape of real read traffic: a few keys
draw most of it). The rows alternate (off, on, off, on, ...) ``--repetitions`` times; each
figure is the median over the repetitions. Requests per node are memcached's own ``cmd_get``
counts; latency is each ``get`` as the worker timed it (``time.perf_counter_ns``), so with the
local tier it mixes reads served from memory with the rest.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from typing import Any

import django
from django.conf import settings

VALUE = "v" * 200


def _setup() -> None:
    if not settings.configured:
        settings.configure(USE_TZ=True)
        django.setup()


def _cache(addresses: list[str], prefix: str, local_cache: dict[str, Any] | None) -> Any:
    from django_elasticache_rs.backend import ElastiCache

    return ElastiCache(
        addresses,
        {
            "KEY_PREFIX": prefix,
            "OPTIONS": {"discovery": "off", "timeout": 10, "local_cache": local_cache},
        },
    )


def _weights(keys: int, skew: float) -> list[float]:
    return [1 / (i + 1) ** skew for i in range(keys)]


def _worker(args: tuple[list[str], str, dict[str, Any] | None, int, int, float, int]) -> dict:
    addresses, prefix, local_cache, keys, reads, skew, seed = args
    _setup()
    cache = _cache(addresses, prefix, local_cache)
    draw = random.Random(seed)
    names = draw.choices([f"item:{i}" for i in range(keys)], _weights(keys, skew), k=reads)
    get = cache.get
    clock = time.perf_counter_ns
    took = []
    for name in names:
        start = clock()
        value = get(name)
        took.append(clock() - start)
        if value != VALUE:
            raise RuntimeError(f"{name} read {value!r}")
    took.sort()
    metrics = cache.metrics()
    return {
        "latencies_ns": took,
        "local_hits": sum(node["local_hits"] for node in metrics["nodes"].values()),
    }


def run_once(
    cluster: Any, prefix: str, local_cache: dict[str, Any] | None, options: argparse.Namespace
) -> dict[str, Any]:
    """One row: every worker's reads, the nodes' ``cmd_get`` before and after."""
    before = {node.address: int(node.stats()["cmd_get"]) for node in cluster.nodes}
    jobs = [
        (
            cluster.addresses,
            prefix,
            local_cache,
            options.keys,
            options.reads,
            options.skew,
            options.seed + worker,
        )
        for worker in range(options.workers)
    ]
    # Fresh processes: each row's workers start with empty tiers and pools, as after a deploy.
    context = multiprocessing.get_context("spawn")
    with context.Pool(options.workers) as pool:
        results = pool.map(_worker, jobs)
    after = {node.address: int(node.stats()["cmd_get"]) for node in cluster.nodes}
    per_node = {address: after[address] - before[address] for address in before}
    latencies = sorted(ns for result in results for ns in result["latencies_ns"])
    total = options.workers * options.reads

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1000

    return {
        "reads": total,
        "requests_per_node": per_node,
        "hottest_node_requests": max(per_node.values()),
        "all_requests": sum(per_node.values()),
        "served_locally": sum(result["local_hits"] for result in results),
        "mean_us": statistics.fmean(latencies) / 1000,
        "p50_us": percentile(0.50),
        "p99_us": percentile(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=20_000, help="gets per worker")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--skew", type=float, default=1.1, help="the Zipf exponent")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument(
        "--local-cache",
        default='{"ttl": 1, "min_reads_per_second": 10}',
        help="the tier's settings, as JSON",
    )
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    _setup()
    from django_elasticache_rs.local import LocalCluster

    tier = json.loads(options.local_cache)
    rows: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with LocalCluster(nodes=3) as cluster:
        prefix = f"zipf-{uuid.uuid4().hex[:8]}"
        _cache(cluster.addresses, prefix, None).set_many(
            {f"item:{i}": VALUE for i in range(options.keys)}
        )
        for _ in range(options.repetitions):
            rows["off"].append(run_once(cluster, prefix, None, options))
            rows["on"].append(run_once(cluster, prefix, tier, options))

    def median(mode: str, field: str) -> float:
        return statistics.median(row[field] for row in rows[mode])

    fields = (
        "hottest_node_requests",
        "all_requests",
        "served_locally",
        "mean_us",
        "p50_us",
        "p99_us",
    )
    summary = {mode: {field: median(mode, field) for field in fields} for mode in rows}
    if options.json:
        json.dump({"options": vars(options), "rows": rows, "median": summary}, sys.stdout)
        print()
        return
    reads = options.workers * options.reads
    print(
        f"Zipf (s={options.skew}) over {options.keys:,} keys, {options.workers} worker processes "
        f"x {options.reads:,} gets = {reads:,} reads, 3 nodes; median of {options.repetitions} "
        f"interleaved runs; {os.cpu_count()} CPUs\n"
    )
    print(
        "| local tier | requests to the hottest node | requests to all nodes | served from "
        "memory | mean µs | p50 µs | p99 µs |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, title in (("off", "off (default)"), ("on", f"on, `{options.local_cache}`")):
        row = summary[mode]
        print(
            f"| {title} | {row['hottest_node_requests']:,.0f} | {row['all_requests']:,.0f} | "
            f"{row['served_locally']:,.0f} | {row['mean_us']:.1f} | {row['p50_us']:.1f} | "
            f"{row['p99_us']:.1f} |"
        )


if __name__ == "__main__":
    main()
