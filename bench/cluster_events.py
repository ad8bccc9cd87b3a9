"""What cluster events cost the database (issue 21): run as a script, not a timed test.

    python bench/cluster_events.py [--scenario kill|freeze|stale-set|all] [--json]

A local cluster of 3 memcached nodes, one process, 8 threads calling ``get_or_set`` over 5,000
keys (Zipf, s=0.9), each compute a 2 ms "database" call counted per key; a writer bumps 100
keys a second in the "database", then deletes them from the cache; ``ignore_exc`` on,
``dead_timeout`` 5 s. A stale read is a read returning a value older than the database's
version after the delete that invalidated it.

- ``kill``: one node of three SIGKILLed for 8 s, then restarted empty on its port.
- ``freeze``: one node SIGSTOPped for 5 s, then SIGCONT.
- ``stale-set``: 10 trials of a delete landing while ``get_or_set`` computes (0.3 s): how
  often the computed (old) value is left in the cache.

For kill and freeze it prints the database computes beyond the steady rate (measured over the
seconds before the event) per distinct key read in the window (the event and 10 s after it),
and the stale reads in the window and after it. Run it on a build of the code before a change
(``git stash``, rebuild) and after, to compare; extra options go to ``OPTIONS`` as JSON with
``--options '{"gutter": false}'``.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(USE_TZ=True)
    django.setup()

from django_elasticache_rs.backend import ElastiCache

KEYS = 5_000
THREADS = 8
ZIPF_S = 0.9
COMPUTE_SECONDS = 0.002
WRITES_PER_SECOND = 100
DEAD_TIMEOUT = 5.0
STEADY_SECONDS = 6.0
AFTER_SECONDS = 10.0


class Node:
    """A memcached process on a fixed port, which can be killed, restarted, frozen."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        executable = shutil.which("memcached")
        if executable is None:
            sys.exit("memcached is not installed")
        args = [executable, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-t", "1"]
        args += ["-m", "64"] + (["-u", "root"] if os.geteuid() == 0 else [])
        deadline = time.monotonic() + 10
        while True:
            self.process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                    return
                except OSError:
                    time.sleep(0.01)
            if time.monotonic() >= deadline:
                sys.exit(f"memcached did not start on {self.port}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
            self.process = None

    def signal(self, sig: int) -> None:
        if self.process is not None:
            self.process.send_signal(sig)


class Database:
    """The "database": a version per key; a compute reads it in 2 ms and is counted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions = [0] * KEYS
        #: Per key, the version the last completed delete invalidated the cache for.
        self.invalidated = [0] * KEYS
        self.log: list[tuple[float, int]] = []  # (when, key) of each compute

    def compute(self, key: int) -> tuple[int, int]:
        time.sleep(COMPUTE_SECONDS)
        with self.lock:
            self.log.append((time.monotonic(), key))
            return (key, self.versions[key])

    def bump(self, key: int) -> int:
        with self.lock:
            self.versions[key] += 1
            return self.versions[key]


class Workload:
    def __init__(self, cache: ElastiCache, database: Database) -> None:
        self.cache, self.database = cache, database
        self.stop = threading.Event()
        self.reads: list[tuple[float, int]] = []  # (when, key)
        self.stale: list[float] = []  # when a stale read ended
        self.lock = threading.Lock()
        weights = [1 / (rank**ZIPF_S) for rank in range(1, KEYS + 1)]
        self.cumulative = list(itertools.accumulate(weights))

    def pick(self, rng: random.Random) -> int:
        at = rng.random() * self.cumulative[-1]
        return min(bisect.bisect_left(self.cumulative, at), KEYS - 1)

    def reader(self, seed: int) -> None:
        rng = random.Random(seed)
        reads: list[tuple[float, int]] = []
        stale: list[float] = []
        while not self.stop.is_set():
            key = self.pick(rng)
            floor = self.database.invalidated[key]
            value = self.cache.get_or_set(
                f"k{key}", lambda key=key: self.database.compute(key), timeout=3600
            )
            now = time.monotonic()
            reads.append((now, key))
            if value is not None and value[1] < floor:
                stale.append(now)
        with self.lock:
            self.reads.extend(reads)
            self.stale.extend(stale)

    def writer(self) -> None:
        rng = random.Random(0)
        interval = 1 / WRITES_PER_SECOND
        next_at = time.monotonic()
        while not self.stop.is_set():
            key = self.pick(rng)
            version = self.database.bump(key)
            self.cache.delete(f"k{key}")
            self.database.invalidated[key] = max(self.database.invalidated[key], version)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def run_event(scenario: str, options: dict[str, Any]) -> dict[str, Any]:
    nodes = [Node() for _ in range(3)]
    for node in nodes:
        node.start()
    try:
        cache = ElastiCache(
            [n.address for n in nodes],
            {
                "OPTIONS": {
                    "discovery": "off",
                    "ignore_exc": True,
                    "dead_timeout": DEAD_TIMEOUT,
                    **options,
                }
            },
        )
        database = Database()
        # Warm: every key cached, so the steady rate is the writer's invalidations only.
        for start in range(0, KEYS, 500):
            cache.set_many(
                {f"k{key}": (key, 0) for key in range(start, min(start + 500, KEYS))},
                timeout=3600,
            )
        work = Workload(cache, database)
        threads = [threading.Thread(target=work.reader, args=(i,)) for i in range(THREADS)]
        threads.append(threading.Thread(target=work.writer))
        for thread in threads:
            thread.start()
        time.sleep(2.0)  # settle
        steady_start = time.monotonic()
        time.sleep(STEADY_SECONDS)
        event_start = time.monotonic()
        victim = nodes[0]
        if scenario == "kill":
            victim.kill()
            time.sleep(8.0)
            victim.start()
        else:
            victim.signal(signal.SIGSTOP)
            time.sleep(5.0)
            victim.signal(signal.SIGCONT)
        event_end = time.monotonic()
        time.sleep(AFTER_SECONDS)
        window_end = time.monotonic()
        time.sleep(5.0)  # stale reads after the window count too
        work.stop.set()
        for thread in threads:
            thread.join()
        end = time.monotonic()

        def computes(start: float, stop: float) -> int:
            return sum(1 for when, _ in database.log if start <= when < stop)

        steady_rate = computes(steady_start, event_start) / (event_start - steady_start)
        window = window_end - event_start
        in_window = computes(event_start, window_end)
        extra = in_window - steady_rate * window
        keys_read = len({key for when, key in work.reads if event_start <= when < window_end})
        metrics = cache.metrics()
        return {
            "scenario": scenario,
            "event_seconds": round(event_end - event_start, 1),
            "window_seconds": round(window, 1),
            "steady_computes_per_second": round(steady_rate, 1),
            "computes_in_window": in_window,
            "distinct_keys_read_in_window": keys_read,
            "extra_computes_per_distinct_key": round(extra / max(keys_read, 1), 3),
            "stale_reads": len([t for t in work.stale if event_start <= t < end]),
            "stale_reads_before_event": len([t for t in work.stale if t < event_start]),
            "reads": len(work.reads),
            "counters": {
                name: metrics.get(name)
                for name in (
                    "gutter_reads",
                    "gutter_writes",
                    "invalidations_replayed",
                    "invalidations_dropped",
                    "ignored_failures",
                )
            },
        }
    finally:
        for node in nodes:
            node.kill()


def run_stale_set(options: dict[str, Any], trials: int = 10) -> dict[str, Any]:
    node = Node()
    node.start()
    try:
        cache = ElastiCache(
            node.address, {"OPTIONS": {"discovery": "off", "ignore_exc": True, **options}}
        )
        left = 0
        for trial in range(trials):
            key = f"stale-set-{trial}"
            computing = threading.Event()

            def slow(computing: threading.Event = computing) -> str:
                computing.set()
                time.sleep(0.3)
                return "old"

            caller = threading.Thread(target=cache.get_or_set, args=(key, slow))
            caller.start()
            computing.wait(10)
            time.sleep(0.1)  # the delete lands in the middle of the computation
            cache.delete(key)
            caller.join()
            if cache.get(key) == "old":
                left += 1
        return {"scenario": "stale-set", "trials": trials, "old_value_left": left}
    finally:
        node.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["kill", "freeze", "stale-set", "all"], default="all")
    parser.add_argument("--options", default="{}", help="extra OPTIONS, as JSON")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    options = json.loads(args.options)
    scenarios = ["kill", "freeze", "stale-set"] if args.scenario == "all" else [args.scenario]
    for scenario in scenarios:
        result = run_stale_set(options) if scenario == "stale-set" else run_event(scenario, options)
        print(json.dumps(result, indent=None if args.json else 2), flush=True)


if __name__ == "__main__":
    main()
