"""What a scale-out and a move to a new cluster cost the database, before and after warm-up and
migration (design section 17; issue 21's workload). Run it as a script::

    python bench/cluster_moves.py [--seconds 10] [--steady 5]
    PYTHONPATH=<a build of main> python bench/cluster_moves.py --main   # main's code

One process, 8 threads calling ``get_or_set`` over 5,000 keys drawn by Zipf (s=0.9), each
miss a 2 ms "database" computation counted per key; a writer bumping 100 keys a second in the
"database" and deleting them from the cache; ``ignore_exc`` on. For each event, the computes
beyond the steady rate per distinct key read in the window after it, and the stale reads (a
read returning a version older than one whose delete had completed before the read began).

Rows:

* "a 4th node joins through discovery": a local 3-node cluster behind its configuration
  endpoint gains a node; "before" is ``warmup_window=0`` (main's behaviour: the moved keys are
  cold; ``--main`` measures main's own build), "after" the default window.
* "the app moves to a new, cold cluster": the threads switch from a warm local cluster to a new
  cold one; "before" without ``migrate_from`` (everything is recomputed), "after" with the old
  cluster as ``migrate_from``.

Not a timed test: a measurement, printed as a markdown table.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(CACHES={}, USE_TZ=True)
    django.setup()

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster

KEYS = 5_000
THREADS = 8
ZIPF_S = 0.9
COMPUTE_SECONDS = 0.002
DELETES_PER_SECOND = 100
TTL = 3_600

_WEIGHTS = list(itertools.accumulate(1.0 / (rank**ZIPF_S) for rank in range(1, KEYS + 1)))


def zipf(rng: random.Random) -> int:
    """A key index by Zipf's law (index 0 the most read)."""
    return bisect.bisect_left(_WEIGHTS, rng.random() * _WEIGHTS[-1])


class Database:
    """The "database": a version per key, and its computations counted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = [0] * KEYS
        #: The newest version whose cache delete has completed, per key: a read starting after
        #: that must not return an older one.
        self.invalidated = [0] * KEYS
        self.computes = 0

    def compute(self, index: int) -> str:
        time.sleep(COMPUTE_SECONDS)
        with self.lock:
            self.computes += 1
            return f"{index}:{self.version[index]}"


@dataclass
class Phase:
    """What the readers saw during one phase."""

    reads: int = 0
    stale: int = 0
    keys: set[int] = field(default_factory=set)
    computes: int = 0
    seconds: float = 0.0


class Workload:
    """The readers and the writer, on whichever cache ``self.cache`` is."""

    def __init__(self, cache: ElastiCache) -> None:
        self.cache = cache
        self.db = Database()
        self.phase = Phase()
        self.phase_lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._read, args=(seed,), daemon=True)
            for seed in range(THREADS)
        ]
        self.threads.append(threading.Thread(target=self._write, daemon=True))

    def _read(self, seed: int) -> None:
        rng = random.Random(seed)
        reads, stale = 0, 0
        keys: set[int] = set()
        while not self.stop.is_set():
            index = zipf(rng)
            floor = self.db.invalidated[index]
            value = self.cache.get_or_set(
                f"k{index}", lambda i=index: self.db.compute(i), timeout=TTL
            )
            if int(str(value).rsplit(":", 1)[1]) < floor:
                stale += 1
            reads += 1
            keys.add(index)
            if reads % 64 == 0:
                self._tally(reads, stale, keys)
                reads, stale, keys = 0, 0, set()
        self._tally(reads, stale, keys)

    def _tally(self, reads: int, stale: int, keys: set[int]) -> None:
        with self.phase_lock:
            self.phase.reads += reads
            self.phase.stale += stale
            self.phase.keys |= keys

    def _write(self) -> None:
        rng = random.Random(1_000)
        period = 1.0 / DELETES_PER_SECOND
        next_at = time.monotonic()
        while not self.stop.is_set():
            index = zipf(rng)
            with self.db.lock:
                self.db.version[index] += 1
                version = self.db.version[index]
            self.cache.delete(f"k{index}")
            self.db.invalidated[index] = max(self.db.invalidated[index], version)
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def measure(self, seconds: float) -> Phase:
        """The phase of the next ``seconds``."""
        with self.phase_lock:
            self.phase = Phase()
            computes = self.db.computes
        started = time.monotonic()
        time.sleep(seconds)
        with self.phase_lock:
            phase, self.phase = self.phase, Phase()
        phase.computes = self.db.computes - computes
        phase.seconds = time.monotonic() - started
        return phase

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def backend(location: str | list[str], **options: Any) -> ElastiCache:
    return ElastiCache(
        location,
        {"OPTIONS": {"ignore_exc": True, "discovery_interval": 1.0, **options}},
    )


def warm(cache: ElastiCache) -> None:
    """Every key computed once (version 0), as a long-running application's cache holds them."""
    cache.set_many({f"k{i}": f"{i}:0" for i in range(KEYS)}, TTL)


@dataclass
class Row:
    event: str
    variant: str
    extra_per_key: float
    stale_window: int
    stale_steady: int
    reads: int
    distinct: int
    unreached: int = 0


def outcome(event: str, variant: str, steady: Phase, window: Phase) -> Row:
    rate = steady.computes / steady.seconds
    extra = window.computes - rate * window.seconds
    return Row(
        event,
        variant,
        extra / max(1, len(window.keys)),
        window.stale,
        steady.stale,
        window.reads,
        len(window.keys),
    )


def scale_out(warmup: bool, steady_s: float, window_s: float, main: bool = False) -> Row:
    with LocalCluster(3) as cluster:
        options: dict[str, Any] = {} if warmup or main else {"warmup_window": 0}
        cache = backend(cluster.configuration_endpoint, **options)
        warm(cache)
        load = Workload(cache)
        load.start()
        try:
            steady = load.measure(steady_s)
            new = cluster.add_node()
            window = load.measure(window_s)
            assert new.address in cache.servers, "the new node was not discovered"
        finally:
            load.finish()
        unreached = cache.metrics().get("detour_delete_failures", 0)
    variant = "after (warmup_window 60 s)" if warmup else "before (warmup_window 0)"
    if main:
        variant = "before (main's build)"
    row = outcome("a 4th node joins through discovery", variant, steady, window)
    row.unreached = unreached
    return row


def migration(migrate: bool, steady_s: float, window_s: float) -> Row:
    with LocalCluster(3) as old, LocalCluster(3) as new:
        before = backend(old.configuration_endpoint)
        warm(before)
        options = {"migrate_from": old.configuration_endpoint} if migrate else {}
        after = backend(new.configuration_endpoint, **options)
        load = Workload(before)
        load.start()
        try:
            steady = load.measure(steady_s)
            load.cache = after
            window = load.measure(window_s)
        finally:
            load.finish()
        unreached = after.metrics().get("detour_delete_failures", 0)
    variant = "after (migrate_from the old one)" if migrate else "before (no migrate_from)"
    row = outcome("the app moves to a new, cold cluster", variant, steady, window)
    row.unreached = unreached
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="the window measured")
    parser.add_argument("--steady", type=float, default=5.0, help="the steady phase before")
    parser.add_argument(
        "--main",
        action="store_true",
        help="only the 'before' rows, without the options main's code lacks: to measure a "
        "build of main put first on PYTHONPATH",
    )
    arguments = parser.parse_args()
    steady, seconds = arguments.steady, arguments.seconds
    runs: list[Callable[[], Row]] = [
        lambda: scale_out(False, steady, seconds, main=arguments.main),
        lambda: migration(False, steady, seconds),
    ]
    if not arguments.main:
        runs.insert(1, lambda: scale_out(True, steady, seconds))
        runs.append(lambda: migration(True, steady, seconds))
    rows = []
    for run in runs:
        rows.append(run())
        print(rows[-1], file=sys.stderr, flush=True)
    print(
        f"\n{THREADS} threads, get_or_set over {KEYS:,} keys (Zipf s={ZIPF_S}), "
        f"{COMPUTE_SECONDS * 1000:.0f} ms compute, {DELETES_PER_SECOND} deletes/s, ignore_exc; "
        f"window {arguments.seconds:g} s after the event, steady rate from the "
        f"{arguments.steady:g} s before\n"
    )
    print(
        "| event | variant | extra computes per distinct key read | stale reads "
        "(window / steady) | reads in window | distinct keys | deletes that missed the other copy |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.event} | {row.variant} | {row.extra_per_key:.3f} | "
            f"{row.stale_window} / {row.stale_steady} | {row.reads:,} | {row.distinct:,} | "
            f"{row.unreached} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
