"""The memory check: one ``get_many`` of 1,000 keys of 100 KB each (100 MB of values), and the
peak RSS it costs, relative to the payload.

The values are stored by the benchmark process, one at a time; each backend then reads them in
a subprocess of its own (``python -m bench.memory --child BACKEND ...``), so that neither the
stored values nor the other measurements count in its peak. The child resets its peak RSS
(``/proc/self/clear_refs``) after warming up, reads ``VmRSS`` before and ``VmHWM`` after the
call. A client that keeps one value copy alive besides the result peaks near 2x the payload;
one that reads straight into the result's objects, near 1x. (RSS cannot count copies that are
freed as soon as they are made.)
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import REPO_ROOT
from bench.backends import BACKENDS, PYLIBMC, Backend
from django_elasticache_rs.local import LocalCluster

KEYS = 1_000
VALUE_SIZE = 100 * 1024
PAYLOAD = KEYS * VALUE_SIZE
NODE_MEMORY_MB = 256
"""Per node: the values are stored twice (pylibmc places keys differently), ~70 MB a node."""
PREFIX = "mem"
PYLIBMC_PREFIX = "meml"


@dataclass(frozen=True)
class MemoryResult:
    """What one backend's child process measured (sizes in bytes)."""

    backend: str
    rss_before: int
    peak: int
    rss_after: int
    payload: int
    found: int
    peak_reset: bool
    seconds: float

    @property
    def peak_growth(self) -> int:
        """Peak RSS during the call above the RSS before it."""
        return self.peak - self.rss_before

    @property
    def ratio(self) -> float:
        """Peak growth / payload."""
        return self.peak_growth / self.payload if self.payload else float("nan")


@dataclass(frozen=True)
class MemoryFailure:
    """A backend whose child process failed."""

    backend: str
    error: str


def _key(i: int) -> str:
    return f"big:{i}"


def _populate(cluster: LocalCluster) -> None:
    """Stores the values twice: where the pymemcache-compatible backends look for them (by our
    native client, which places keys as pymemcache does), and where pylibmc does."""
    import pylibmc  # type: ignore[import-untyped]

    from django_elasticache_rs._native import Client

    value = b"m" * VALUE_SIZE
    ours = Client(cluster.addresses)
    theirs = pylibmc.Client(cluster.addresses, binary=False)
    for i in range(KEYS):
        if not ours.set(_key(i), value, 0, PREFIX, 1):
            raise RuntimeError("memcached did not store a 100 KB value")
        if not theirs.set(f"{PYLIBMC_PREFIX}:1:{_key(i)}", value):
            raise RuntimeError("memcached did not store a 100 KB value (pylibmc)")
    theirs.disconnect_all()


def run_check(backends: tuple[Backend, ...] = BACKENDS) -> list[MemoryResult | MemoryFailure]:
    """Starts a 3-node cluster, stores the values, measures each backend in a subprocess."""
    results: list[MemoryResult | MemoryFailure] = []
    with LocalCluster(nodes=3, memory_mb=NODE_MEMORY_MB) as cluster:
        _populate(cluster)
        for backend in backends:
            location = backend.location(cluster)
            command = [
                sys.executable,
                "-m",
                "bench.memory",
                "--child",
                backend.name,
                "--location",
                json.dumps(location),
            ]
            done = subprocess.run(
                command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
            )
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                results.append(MemoryFailure(backend.name, tail))
                continue
            results.append(MemoryResult(**json.loads(done.stdout.strip().splitlines()[-1])))
    return results


# -- the child -------------------------------------------------------------------------------


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _child(backend: Backend, location: str | list[str]) -> dict[str, Any]:
    import django
    from django.conf import settings
    from django.core.cache import caches

    prefix = PYLIBMC_PREFIX if backend is PYLIBMC else PREFIX
    settings.configure(CACHES={"default": backend.settings(location, key_prefix=prefix)})
    django.setup()
    cache = caches["default"]
    keys = [_key(i) for i in range(KEYS)]
    # Warm up: imports, discovery, a connection to every node.
    if len(cache.get_many(keys[:30])) != 30:
        raise RuntimeError("the warm-up get_many missed: the values are not where expected")
    gc.collect()
    peak_reset = _reset_peak()
    rss_before = _status("VmRSS")
    started = time.perf_counter()
    found = cache.get_many(keys)
    seconds = time.perf_counter() - started
    peak = _status("VmHWM")
    rss_after = _status("VmRSS")
    if not all(isinstance(v, bytes) and len(v) == VALUE_SIZE for v in found.values()):
        raise RuntimeError("a value read back is not the 100 KB value")
    return {
        "backend": backend.name,
        "rss_before": rss_before,
        "peak": peak,
        "rss_after": rss_after,
        "payload": sum(len(v) for v in found.values()),
        "found": len(found),
        "peak_reset": peak_reset,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    """The child's command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", required=True, choices=[b.name for b in BACKENDS])
    parser.add_argument("--location", required=True, help="LOCATION as JSON")
    args = parser.parse_args(argv)
    backend = next(b for b in BACKENDS if b.name == args.child)
    print(json.dumps(_child(backend, json.loads(args.location))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
