"""TLS next to plaintext, for our backend only: `get` and `get_many` of 100 keys on a 3-node
cluster served over TLS (memcached `-Z`, the configuration endpoint too), interleaved with the
same workloads on the plaintext cluster, so the cost of encryption reads directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.measure import Runner, Series, choose_iterations, estimate_per_op, loop_runner
from bench.pinning import Pinning
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster

KEYS = [f"tls:{i}" for i in range(100)]
VALUE = "x" * 100


@dataclass
class TlsRow:
    """One workload measured over plaintext and over TLS."""

    workload: str
    plain: Series
    tls: Series


def _runners(cache: ElastiCache) -> dict[str, Runner]:
    cache.set_many(dict.fromkeys(KEYS, VALUE))
    if cache.get(KEYS[0]) != VALUE or len(cache.get_many(KEYS)) != len(KEYS):
        raise RuntimeError("the TLS benchmark's backend does not hit")

    def get(n: int) -> None:
        for _ in range(n):
            cache.get(KEYS[0])

    def get_many(n: int) -> None:
        for _ in range(n):
            cache.get_many(KEYS)

    return {"get, hit (100 B str)": loop_runner(get), "get_many, 100 keys": loop_runner(get_many)}


def measure(plain: LocalCluster, repetitions: int, target: float, pinning: Pinning) -> list[TlsRow]:
    """Measures both workloads on ``plain`` and on a TLS cluster it starts (its servers pinned
    like the others), pinned, interleaved, ``repetitions`` times."""
    with LocalCluster(nodes=3, tls=True) as secure:
        pinning.apply(True)
        pinning.add_servers([node.pid for node in secure.nodes if node.pid is not None])
        caches = {
            "plain": ElastiCache(plain.configuration_endpoint, {"KEY_PREFIX": "tls-plain"}),
            "tls": ElastiCache(secure.configuration_endpoint, secure.caches_setting()["default"]),
        }
        runners = {side: _runners(cache) for side, cache in caches.items()}
        rows = []
        for workload in runners["plain"]:
            per_op = [estimate_per_op(runners[side][workload], target / 4) for side in runners]
            n = choose_iterations(per_op, target, target * 2)
            series = {side: Series() for side in runners}
            for rep in range(repetitions):
                order = list(runners) if rep % 2 == 0 else list(reversed(runners))
                for side in order:
                    series[side].samples.append(runners[side][workload](n))
                    series[side].iterations = n
            rows.append(TlsRow(workload, series["plain"], series["tls"]))
        return rows


def table(rows: list[TlsRow]) -> list[str]:
    """The TLS section's markdown table."""
    lines = [
        "| workload | plain µs | plain CPU µs | TLS µs | TLS CPU µs | TLS ÷ plain |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        ratio = row.tls.wall_us / row.plain.wall_us
        lines.append(
            f"| {row.workload} | {row.plain.wall_us:.1f} | {row.plain.cpu_us:.1f} "
            f"| {row.tls.wall_us:.1f} | {row.tls.cpu_us:.1f} | {ratio:.2f}x |"
        )
    return lines
