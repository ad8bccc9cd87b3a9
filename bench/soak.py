"""The soak test (not in CI): mixed sync, async and gevent traffic through the Django backend,
with ``ignore_exc`` off and on, against a local cluster whose nodes are killed, restarted on the
same port, added and removed, for ``--duration`` seconds; one line of figures every
``--interval``. The gevent greenlets run in a monkey-patched process of their own
(``bench/soak_greenlets.py``), as a gunicorn gevent worker would.

Every value written is derived from its key, so a wrong value read is detected. The exit status
is 1 if any wrong value was read, or any exception other than the cache's own (and Django's
``ValueError`` for ``incr`` of a missing key) escaped; else 0.

Run it with ``scripts/soak.sh`` (``--help`` lists the options). Loopback only: memcached
processes on random 127.0.0.1 ports, stopped at the end.

What a report line holds (``key=value``):

* ``t``, ``ops``, ``rate``: seconds since the start, operations done, operations per second in
  the last interval;
* ``err``: exceptions raised with ``ignore_exc`` off, by class; ``lenient_err``: exceptions that
  escaped ``ignore_exc`` (only ``InvalidKeyError`` may, and this test uses valid keys);
* ``wrong``: values read that are not the value written for their key;
* ``rss_mb``, ``fds``, ``threads`` (the OS's count, native workers included), ``py_threads``;
* ``heap_mb``/``heap_free_mb``: glibc malloc's bytes in use / held free in its arenas
  (``mallinfo2``), which tells a leak (in use grows) from fragmentation and arena retention
  (free grows); ``py_blocks``: Python's allocated memory blocks; ``gc_objects``: objects the
  garbage collector tracks; ``conns``: the native clients' open connections;
* ``nodes``, ``down``, ``config``: members, members killed and not yet restarted, config version;
* ``log_records``: log records so far (counted by logger and level in the summary, written to
  ``--log-file`` if given, never to the terminal).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRICT = "strict"
LENIENT = "lenient"
JOIN_BOUND = 30.0
"""Seconds the workers get to finish their current operation at the end (a hang guard)."""


# -- values -----------------------------------------------------------------------------------


def value_for(key: str) -> str:
    """The one value ever written under ``key``: the key itself, padded to a size that depends
    on the key (mostly small, some 4 KB, a few 100 KB), so that a value read under the wrong key
    or cut short is seen."""
    digest = format(hash_key(key), "08x")
    bucket = hash_key(key) % 100
    size = 64 if bucket < 70 else 4096 if bucket < 95 else 100 * 1024
    unit = f"{key}|{digest}|"
    return (unit * (size // len(unit) + 1))[:size]


def hash_key(key: str) -> int:
    """A stable hash (not Python's per-process ``hash``): FNV-1a, 32 bits."""
    value = 0x811C9DC5
    for byte in key.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


# -- measurements -----------------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> Callable[[], tuple[int, int]] | None:
    """glibc's ``mallinfo2`` as ``() -> (bytes in use, bytes free in the arenas)``; ``None``
    without glibc 2.33+."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2

    def read() -> tuple[int, int]:
        info = function()
        return info.uordblks + info.hblkhd, info.fordblks

    return read


MALLINFO = _mallinfo()


def _status_field(name: str) -> int:
    """A number from ``/proc/self/status`` (``VmRSS`` in kB, ``Threads``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return -1


@dataclass
class Sample:
    """The process's figures at one moment."""

    rss_mb: float
    fds: int
    threads: int
    py_threads: int
    heap_mb: float
    heap_free_mb: float
    py_blocks: int
    gc_objects: int

    @classmethod
    def take(cls) -> Sample:
        heap, free = MALLINFO() if MALLINFO is not None else (-1, -1)
        return cls(
            rss_mb=_status_field("VmRSS") / 1024,
            fds=len(os.listdir("/proc/self/fd")),
            threads=_status_field("Threads"),
            py_threads=threading.active_count(),
            heap_mb=heap / 2**20,
            heap_free_mb=free / 2**20,
            py_blocks=sys.getallocatedblocks(),
            gc_objects=len(gc.get_objects()),
        )

    def line(self) -> str:
        return (
            f"rss_mb={self.rss_mb:.1f} fds={self.fds} threads={self.threads} "
            f"py_threads={self.py_threads} heap_mb={self.heap_mb:.1f} "
            f"heap_free_mb={self.heap_free_mb:.1f} py_blocks={self.py_blocks} "
            f"gc_objects={self.gc_objects}"
        )


# -- log records --------------------------------------------------------------------------------


class LogTally(logging.Handler):
    """Counts every log record by logger and level (the cache's failure logging is part of what
    a soak shows), and writes them to ``path`` if given, instead of the terminal."""

    def __init__(self, path: str | None) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()
        self._file = open(path, "a") if path else None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.name}:{record.levelname}"] += 1
        if self._file is not None:
            self._file.write(self.format(record) + "\n")

    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def capture_logs(path: str | None) -> LogTally:
    """Sends every record at INFO and above to a :class:`LogTally` only."""
    tally = LogTally(path)
    root = logging.getLogger()
    root.handlers[:] = [tally]
    root.setLevel(logging.INFO)
    return tally


# -- what the workers count -------------------------------------------------------------------


@dataclass
class Tally:
    """One worker's counts (read by the reporter without a lock: each field is replaced
    atomically under the GIL, and a report a few operations behind is fine)."""

    ops: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    wrong: int = 0
    examples: list[str] = field(default_factory=list)

    def check(self, key: str, value: Any) -> None:
        """Counts ``value`` as wrong unless it is a miss or the value written for ``key``."""
        if value is not None and value != value_for(key):
            self.note_wrong(f"{key!r} read {str(value)[:60]!r}")

    def note_wrong(self, example: str) -> None:
        self.wrong += 1
        if len(self.examples) < 5:
            self.examples.append(example)


def _classify(tally: Tally, mode: str, error: Exception, cache_errors: tuple[type, ...]) -> None:
    name = type(error).__name__
    if " is marked down; next try in " in str(error):
        # A fast failure: no request was sent to a node marked down. Counted apart, so that
        # failures of requests that were sent stand out.
        name += "(marked down)"
    if isinstance(error, cache_errors):
        tally.errors[f"{mode}:{name}"] += 1
    else:
        tally.unexpected[f"{mode}:{name}: {str(error)[:80]}"] += 1


# -- traffic ----------------------------------------------------------------------------------


OPS = ("get", "set", "get_many", "set_many", "delete", "add", "incr", "touch", "has_key")
WEIGHTS = (30, 20, 12, 6, 6, 6, 8, 6, 6)
COUNTERS = 50


class Traffic:
    """Picks operations and checks what they read, for sync and async workers alike."""

    def __init__(self, keys: int, seed: int) -> None:
        self.keys = [f"soak:{i}" for i in range(keys)]
        self.counters = [f"ctr:{i}" for i in range(COUNTERS)]
        self.seed = seed

    def rng(self, worker: int) -> random.Random:
        return random.Random(self.seed * 10_000 + worker)

    def plan(self, rng: random.Random) -> tuple[str, list[str]]:
        """An operation and its keys."""
        op = rng.choices(OPS, WEIGHTS)[0]
        if op in ("get_many", "set_many"):
            return op, rng.sample(self.keys, 8)
        if op == "incr":
            return op, [rng.choice(self.counters)]
        return op, [rng.choice(self.keys)]

    def run_sync(self, cache: Any, op: str, keys: list[str], tally: Tally) -> None:
        key = keys[0]
        if op == "get":
            tally.check(key, cache.get(key))
        elif op == "set":
            cache.set(key, value_for(key), 300)
        elif op == "get_many":
            self._check_many(keys, cache.get_many(keys), tally)
        elif op == "set_many":
            cache.set_many({k: value_for(k) for k in keys}, 300)
        elif op == "delete":
            cache.delete(key)
        elif op == "add":
            cache.add(key, value_for(key), 300)
        elif op == "incr":
            try:
                cache.incr(key)
            except ValueError as error:  # Django's "Key ... not found" (a miss, or ignored)
                if type(error) is not ValueError:
                    raise
                cache.add(key, 0, 300)
        elif op == "touch":
            cache.touch(key, 300)
        elif op == "has_key":
            cache.has_key(key)

    async def run_async(self, cache: Any, op: str, keys: list[str], tally: Tally) -> None:
        key = keys[0]
        if op == "get":
            tally.check(key, await cache.aget(key))
        elif op == "set":
            await cache.aset(key, value_for(key), 300)
        elif op == "get_many":
            self._check_many(keys, await cache.aget_many(keys), tally)
        elif op == "set_many":
            await cache.aset_many({k: value_for(k) for k in keys}, 300)
        elif op == "delete":
            await cache.adelete(key)
        elif op == "add":
            await cache.aadd(key, value_for(key), 300)
        elif op == "incr":
            try:
                await cache.aincr(key)
            except ValueError as error:
                if type(error) is not ValueError:
                    raise
                await cache.aadd(key, 0, 300)
        elif op == "touch":
            await cache.atouch(key, 300)
        elif op == "has_key":
            await cache.ahas_key(key)

    @staticmethod
    def _check_many(keys: list[str], found: dict[str, Any], tally: Tally) -> None:
        for key, value in found.items():
            if key not in keys:
                tally.note_wrong(f"get_many of {keys} returned key {key!r}")
            else:
                tally.check(key, value)


# -- chaos ------------------------------------------------------------------------------------


class Chaos:
    """Kills nodes (restarting each on the same port a few seconds later), adds and removes
    nodes; one action every ``every`` seconds.

    A node is restarted by starting memcached on its port here (``LocalNode`` picks a new port
    on start); the cluster's node object then holds no process, so this class stops what it
    restarted."""

    def __init__(
        self, cluster: Any, rng: random.Random, every: float, min_nodes: int, max_nodes: int
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.every = every
        self.min_nodes = min_nodes
        self.max_nodes = max_nodes
        self.down: dict[int, float] = {}  # port -> when to restart it
        self.restarted: dict[int, subprocess.Popen[bytes]] = {}
        self.actions: Counter[str] = Counter()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            try:
                self.step()
            except Exception as error:  # a chaos failure must not end the soak silently
                self.actions[f"failed:{type(error).__name__}"] += 1
                print(f"chaos: {type(error).__name__}: {error}", flush=True)

    def step(self) -> None:
        now = time.monotonic()
        for port, due in list(self.down.items()):
            if now >= due:
                self.restart(port)
        nodes = self.cluster.nodes
        live = [node for node in nodes if node.port not in self.down]
        choices = ["kill"] * 3 + ["scale_out", "scale_in", "rest"]
        action = self.rng.choice(choices)
        if action == "kill" and len(live) > 1 and len(self.down) < 2:
            node = self.rng.choice(live)
            self.kill(node.port, node)
            self.down[node.port] = now + self.rng.uniform(1.0, 6.0)
        elif action == "scale_out" and len(nodes) < self.max_nodes:
            self.cluster.add_node()
        elif action == "scale_in" and len(nodes) > self.min_nodes:
            node = self.rng.choice(nodes)
            self.cluster.remove_node(node.address)
            self.kill(node.port, None)
            self.down.pop(node.port, None)
        else:
            action = "rest"
        self.actions[action] += 1

    def kill(self, port: int, node: Any) -> None:
        """Kills the memcached on ``port``: ours if we restarted it, else the node's own."""
        process = self.restarted.pop(port, None)
        if process is not None:
            process.kill()
            process.wait()
        elif node is not None:
            node.stop()

    def restart(self, port: int) -> None:
        """Starts memcached on ``port`` again; if the port was taken meanwhile, removes the
        node from the cluster instead."""
        del self.down[port]
        process = start_memcached(port)
        if process is not None:
            self.restarted[port] = process
            self.actions["restart"] += 1
            return
        self.actions["restart_failed"] += 1
        if len(self.cluster.nodes) > 1:
            self.cluster.remove_node(f"127.0.0.1:{port}")

    def stop(self) -> None:
        for port in list(self.restarted):
            self.kill(port, None)


def start_memcached(port: int, memory_mb: int = 64) -> subprocess.Popen[bytes] | None:
    """memcached on ``127.0.0.1:port`` as ``LocalNode`` starts it, once it serves; ``None`` if it
    cannot bind the port."""
    executable = shutil.which("memcached")
    if executable is None:
        raise RuntimeError("memcached is not installed")
    args = [executable, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"]
    args += ["-m", str(memory_mb)]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"stats\r\n")
                if f"STAT pid {process.pid}\r\n".encode() in conn.recv(65536):
                    return process
        except OSError:
            pass
        time.sleep(0.02)  # polling a process that is still starting
    process.kill()
    process.wait()
    return None


# -- the run ----------------------------------------------------------------------------------


def configure_django(endpoint: str, args: argparse.Namespace) -> None:
    import django
    from django.conf import settings

    options = {
        "discovery_interval": args.discovery_interval,
        "timeout": args.timeout,
        "connect_timeout": args.timeout,
        "dead_timeout": args.dead_timeout,
        "retry_attempts": 2,
        "retry_timeout": 0,
    }
    backend = "django_elasticache_rs.backend.ElastiCache"
    settings.configure(
        USE_TZ=True,
        CACHES={
            STRICT: {"BACKEND": backend, "LOCATION": endpoint, "OPTIONS": options},
            LENIENT: {
                "BACKEND": backend,
                "LOCATION": endpoint,
                "OPTIONS": {**options, "ignore_exc": True},
            },
        },
    )
    django.setup()


def sync_worker(
    index: int, traffic: Traffic, tally: Tally, stop: threading.Event, errors: tuple[type, ...]
) -> None:
    from django.core.cache import caches

    rng = traffic.rng(index)
    while not stop.is_set():
        mode = STRICT if rng.random() < 0.5 else LENIENT
        op, keys = traffic.plan(rng)
        try:
            traffic.run_sync(caches[mode], op, keys, tally)
        except Exception as error:
            _classify(tally, mode, error, errors)
        tally.ops += 1


def async_workers(
    tasks: int,
    traffic: Traffic,
    tallies: list[Tally],
    stop: threading.Event,
    errors: tuple[type, ...],
) -> None:
    from django.core.cache import caches

    async def task(index: int) -> None:
        rng = traffic.rng(1000 + index)
        tally = tallies[index]
        while not stop.is_set():
            mode = STRICT if rng.random() < 0.5 else LENIENT
            op, keys = traffic.plan(rng)
            try:
                await traffic.run_async(caches[mode], op, keys, tally)
            except Exception as error:
                _classify(tally, mode, error, errors)
            tally.ops += 1

    async def main() -> None:
        await asyncio.gather(*(task(i) for i in range(tasks)))

    asyncio.run(main())


GREENLETS_CHILD = Path(__file__).resolve().parent / "soak_greenlets.py"


class GeventWorkers:
    """The gevent workers: greenlets in a monkey-patched process of their own
    (``bench/soak_greenlets.py``), whose tally a reader thread keeps up to date here from the
    lines it prints. Closing its stdin stops it; its last line is its final tally."""

    def __init__(self, endpoint: str, args: argparse.Namespace, started: float) -> None:
        self._started = started
        #: The process's figures as they came, by seconds since the soak's start.
        self.samples: list[tuple[float, Sample]] = []
        spec = {
            "endpoint": endpoint,
            "greenlets": args.greenlets,
            "keys": args.keys,
            "seed": args.seed,
            "interval": min(args.interval, 1.0),
            "log_file": args.log_file,
            "options": {
                "discovery_interval": args.discovery_interval,
                "timeout": args.timeout,
                "dead_timeout": args.dead_timeout,
            },
        }
        self.tally = Tally()
        #: Its log records, by logger and level.
        self.logs: Counter[str] = Counter()
        self.final = False
        self._process = subprocess.Popen(
            [sys.executable, str(GREENLETS_CHILD), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="soak-gevent-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            found = json.loads(line)
            tally = Tally(
                ops=found["ops"],
                errors=Counter(found["errors"]),
                unexpected=Counter(found["unexpected"]),
                wrong=found["wrong"],
                examples=found["examples"],
            )
            self.tally, self.logs, self.final = tally, Counter(found["logs"]), found["final"]
            self.samples.append((time.monotonic() - self._started, Sample(**found["sample"])))

    def stop(self, bound: float) -> bool:
        """Stops the greenlets; whether the process ended with its final tally within
        ``bound`` seconds."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(bound)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(bound)
        return self.final and self._process.returncode == 0


def _sum(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for tally in tallies:
        total.ops += tally.ops
        total.errors.update(tally.errors)
        total.unexpected.update(tally.unexpected)
        total.wrong += tally.wrong
        total.examples.extend(tally.examples)
    return total


def _counts(counter: Counter[str]) -> str:
    return ",".join(f"{name}:{n}" for name, n in sorted(counter.items())) or "-"


def _connections() -> int:
    from django.core.cache import caches

    from django_elasticache_rs.backend import ElastiCache

    total = 0
    for mode in (STRICT, LENIENT):
        cache = caches[mode]
        assert isinstance(cache, ElastiCache)
        total += sum(count for _, count in cache.client.open_connections())
    return total


def run(args: argparse.Namespace) -> int:
    from django_elasticache_rs import _native
    from django_elasticache_rs.exceptions import CacheError
    from django_elasticache_rs.local import LocalCluster

    print(
        f"soak: {args.duration:g} s, {args.threads} threads + {args.tasks} async tasks + "
        f"{args.greenlets} greenlets, "
        f"{args.keys} keys, chaos every {args.chaos_every:g} s"
        f"{' (off)' if args.no_chaos else ''}, MALLOC_ARENA_MAX="
        f"{os.environ.get('MALLOC_ARENA_MAX', 'unset')}, pid {os.getpid()}, "
        f"native module {_native.__file__}",
        flush=True,
    )
    logs = capture_logs(args.log_file)
    cluster = LocalCluster(nodes=args.nodes)
    cluster.start()
    chaos = Chaos(
        cluster,
        random.Random(args.seed),
        args.chaos_every,
        min_nodes=max(1, args.nodes - 1),
        max_nodes=args.nodes + 2,
    )
    stop = threading.Event()
    threads: list[threading.Thread] = []
    green: GeventWorkers | None = None
    hung: list[str] = []
    try:
        configure_django(cluster.configuration_endpoint, args)
        traffic = Traffic(args.keys, args.seed)
        errors = (CacheError,)
        sync_tallies = [Tally() for _ in range(args.threads)]
        async_tallies = [Tally() for _ in range(args.tasks)]
        for index, tally in enumerate(sync_tallies):
            threads.append(
                threading.Thread(
                    target=sync_worker,
                    args=(index, traffic, tally, stop, errors),
                    name=f"soak-sync-{index}",
                )
            )
        if args.tasks:
            threads.append(
                threading.Thread(
                    target=async_workers,
                    args=(args.tasks, traffic, async_tallies, stop, errors),
                    name="soak-async",
                )
            )
        if not args.no_chaos:
            threads.append(threading.Thread(target=chaos.run, args=(stop,), name="soak-chaos"))
        if args.tracemalloc:
            tracemalloc.start(10)
        started = time.monotonic()
        if args.greenlets:
            green = GeventWorkers(cluster.configuration_endpoint, args, started)
        for thread in threads:
            thread.start()

        def tallies() -> list[Tally]:
            return sync_tallies + async_tallies + ([green.tally] if green else [])

        def log_records() -> int:
            return logs.total() + (sum(green.logs.values()) if green else 0)

        samples = _report(args, started, tallies, cluster, chaos, log_records)
    finally:
        stop.set()
        deadline = time.monotonic() + JOIN_BOUND
        if green is not None and not green.stop(JOIN_BOUND):
            hung.append("soak-gevent (no final tally)")
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        hung += [thread.name for thread in threads if thread.is_alive()]
        chaos.stop()
        cluster.stop()
    logs.close()
    if green is not None:
        logs.counts.update(green.logs)
    drivers = {
        "threads": _sum(sync_tallies).ops,
        "asyncio tasks": _sum(async_tallies).ops,
        "greenlets": green.tally.ops if green else 0,
    }
    green_samples = green.samples if green else []
    return _summary(args, samples, green_samples, _sum(tallies()), drivers, chaos, hung, logs)


def _report(
    args: argparse.Namespace,
    started: float,
    tallies: Callable[[], list[Tally]],
    cluster: Any,
    chaos: Chaos,
    log_records: Callable[[], int],
) -> list[tuple[float, Sample]]:
    """Prints a line every ``--interval`` seconds until ``--duration``; returns the samples."""
    samples = [(0.0, Sample.take())]
    snapshot: tracemalloc.Snapshot | None = None
    last_ops, last_t = 0, 0.0
    while (elapsed := time.monotonic() - started) < args.duration:
        try:
            time.sleep(min(args.interval, args.duration - elapsed))  # the report's pace
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop early, still with a summary
            print("interrupted: stopping", flush=True)
            break
        elapsed = time.monotonic() - started
        total = _sum(tallies())
        sample = Sample.take()
        samples.append((elapsed, sample))
        lenient = Counter({k: n for k, n in total.errors.items() if k.startswith(LENIENT)})
        strict = Counter({k: n for k, n in total.errors.items() if k.startswith(STRICT)})
        rate = (total.ops - last_ops) / max(elapsed - last_t, 1e-9)
        last_ops, last_t = total.ops, elapsed
        print(
            f"t={elapsed:.0f}s ops={total.ops} rate={rate:.0f}/s "
            f"err={_counts(Counter({k.split(':', 1)[1]: n for k, n in strict.items()}))} "
            f"lenient_err={_counts(lenient)} unexpected={sum(total.unexpected.values())} "
            f"wrong={total.wrong} {sample.line()} conns={_connections()} "
            f"nodes={len(cluster.nodes)} down={len(chaos.down)} config={cluster.version} "
            f"log_records={log_records()}",
            flush=True,
        )
        if args.tracemalloc and snapshot is None and elapsed >= args.warmup:
            snapshot = tracemalloc.take_snapshot()
    if args.tracemalloc and snapshot is not None:
        _tracemalloc_growth(snapshot)
    return samples


def _tracemalloc_growth(baseline: tracemalloc.Snapshot) -> None:
    current = tracemalloc.take_snapshot()
    traced, peak = tracemalloc.get_traced_memory()
    print(
        f"tracemalloc: {traced / 2**20:.1f} MB traced now (peak {peak / 2**20:.1f} MB); "
        "largest growth since the warm-up snapshot:"
    )
    for stat in current.compare_to(baseline, "lineno")[:10]:
        print(f"  {stat}")


def _summary(
    args: argparse.Namespace,
    samples: list[tuple[float, Sample]],
    green_samples: list[tuple[float, Sample]],
    total: Tally,
    drivers: dict[str, int],
    chaos: Chaos,
    hung: list[str],
    logs: LogTally,
) -> int:
    first, last = samples[0][1], samples[-1][1]
    warm = [sample for t, sample in samples if t >= args.warmup] or [last]
    rss = [sample.rss_mb for sample in warm]
    print("== summary")
    by_driver = ", ".join(f"{name} {ops}" for name, ops in drivers.items())
    print(f"operations: {total.ops} ({by_driver}); chaos: {_counts(chaos.actions)}")
    print(f"errors (ignore_exc off): {_counts(total.errors)}")
    print(f"exceptions that are not the cache's: {_counts(total.unexpected)}")
    print(f"wrong values: {total.wrong}")
    for example in total.examples[:10]:
        print(f"  {example}")
    print(
        f"rss_mb: start {first.rss_mb:.1f}, after the {args.warmup:g} s warm-up "
        f"{warm[0].rss_mb:.1f}, min {min(rss):.1f}, max {max(rss):.1f}, end {last.rss_mb:.1f}"
    )
    print(
        f"heap_mb (malloc in use): {warm[0].heap_mb:.1f} -> {last.heap_mb:.1f}; heap_free_mb: "
        f"{warm[0].heap_free_mb:.1f} -> {last.heap_free_mb:.1f}; gc_objects: "
        f"{warm[0].gc_objects} -> {last.gc_objects}; py_blocks: {warm[0].py_blocks} -> "
        f"{last.py_blocks}"
    )
    print(f"fds: {first.fds} -> {last.fds}; threads: {first.threads} -> {last.threads}")
    if green_samples:
        # The gevent process's own, from the warm-up on.
        settled = [sample for t, sample in green_samples if t >= args.warmup] or [
            green_samples[-1][1]
        ]
        start, end = settled[0], settled[-1]
        print(
            f"gevent process: rss_mb {start.rss_mb:.1f} -> {end.rss_mb:.1f} (max "
            f"{max(sample.rss_mb for sample in settled):.1f}); heap_mb {start.heap_mb:.1f} -> "
            f"{end.heap_mb:.1f}; gc_objects {start.gc_objects} -> {end.gc_objects}; fds "
            f"{start.fds} -> {end.fds}"
        )
    print(f"log records: {_counts(logs.counts)}")
    failed = total.wrong > 0 or bool(total.unexpected) or bool(hung)
    if hung:
        print(f"threads still running after {JOIN_BOUND:g} s: {', '.join(hung)}")
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/soak.sh",
        description=(
            "Soak test (not in CI): sync threads, asyncio tasks and gevent greenlets use the "
            "Django backend "
            "(ignore_exc off and on) against a local cluster while nodes are killed and "
            "restarted on the same port, added and removed. Prints one line of figures every "
            "--interval seconds and a summary; exits 1 if a wrong value was read or an "
            "exception other than the cache's escaped. For the memory question, compare runs "
            "with MALLOC_ARENA_MAX=2 in the environment, --no-chaos, and --tracemalloc."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds to run")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between lines")
    parser.add_argument("--threads", type=int, default=8, help="sync worker threads")
    parser.add_argument("--tasks", type=int, default=32, help="asyncio tasks (one loop)")
    parser.add_argument(
        "--greenlets",
        type=int,
        default=16,
        help="gevent greenlets (a monkey-patched process of their own; 0: none)",
    )
    parser.add_argument("--keys", type=int, default=2000, help="distinct keys")
    parser.add_argument("--nodes", type=int, default=3, help="nodes at the start")
    parser.add_argument(
        "--chaos-every", type=float, default=3.0, help="seconds between chaos actions"
    )
    parser.add_argument("--no-chaos", action="store_true", help="traffic only, no node changes")
    parser.add_argument("--timeout", type=float, default=0.5, help="backend timeout")
    parser.add_argument("--dead-timeout", type=float, default=2.0, help="backend dead_timeout")
    parser.add_argument(
        "--discovery-interval", type=float, default=2.0, help="backend discovery_interval"
    )
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="seconds before the memory baseline"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace Python allocations; print the largest growth since the warm-up at the end",
    )
    parser.add_argument(
        "--log-file", help="write the log records there (they are only counted otherwise)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.interval <= 0 or args.threads < 0 or args.tasks < 0:
        parser.error("--duration and --interval must be positive, --threads/--tasks >= 0")
    if args.nodes < 2:
        parser.error("--nodes must be at least 2 (one is killed at a time)")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM ends the run early like Ctrl-C: the cluster is stopped, the summary printed.
    signal.signal(signal.SIGTERM, _interrupt)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
