"""The workloads: what one operation is, the data it needs, and a check that the backend really
does it (a misconfigured backend that always misses would look fast).

Each workload's ``prepare(alias, context)`` stores its data through the backend under test,
checks it, and returns a :class:`Prepared`: the runner to time, and the check again (run before
timing and after the last repetition, so a value that vanished mid-run is noticed).
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.signals import request_finished

from bench.compression import (
    MIN_COMPRESS_LEN,
    compressible_value,
    compressing_cache,
    stored_flags,
)
from bench.measure import Runner, Sample, async_runner, loop_runner
from bench.threads import WorkerPool

VALUE_100 = "v" * 100
"""The 100-byte ``str`` value."""
VALUE_10K = "w" * 10_240
"""The 10 KB ``str`` value."""
BATCH = 100
"""Keys per multi-key operation, and keys cycled through by the round-robin workloads."""


class BenchmarkError(Exception):
    """A backend did not do what a workload needs (a miss where a hit was expected, ...)."""


@dataclass
class Context:
    """What workloads share."""

    pool: WorkerPool


@dataclass(frozen=True)
class Prepared:
    """A workload ready to time on one backend."""

    run: Runner
    verify: Callable[[], None]


@dataclass(frozen=True)
class Workload:
    """One row of the table."""

    name: str
    """For ``--only``."""
    title: str
    prepare: Callable[[str, Context], Prepared]
    nodes: int = 3
    """The cluster it runs on."""
    pinned: bool = True
    """Whether it runs pinned to one CPU (when pinning is on)."""
    unit: str = "op"
    asyncio: bool = False
    """Whether it measures the async API (``a*`` methods); the others are the blocking API."""


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise BenchmarkError(what)


def _keys(tag: str, count: int = BATCH) -> list[str]:
    return [f"{tag}:{i}" for i in range(count)]


def batch_keys() -> list[str]:
    """The keys of the batch reads compared with each other (``get_many``, ``aget_many`` and
    the gevent rows' ``get_many``): one set, so each row reads the same shares of the same
    nodes (another set splits differently over the nodes, and costs differently)."""
    return _keys("many")


def _store(cache: BaseCache, keys: list[str], value: Any) -> Callable[[], None]:
    """Stores ``value`` under every key; returns the check that every key reads it back."""
    failed = cache.set_many(dict.fromkeys(keys, value))
    _expect(not failed, f"set_many did not store {failed[:3]}")

    def verify() -> None:
        found = cache.get_many(keys)
        _expect(len(found) == len(keys), f"{len(keys) - len(found)} of {len(keys)} keys missing")
        _expect(all(v == value for v in found.values()), "a value read back differs")

    verify()
    return verify


# -- single-key ------------------------------------------------------------------------------


def get_hit(alias: str, context: Context) -> Prepared:
    """``get`` of one present key (a 100-byte ``str``)."""
    cache = caches[alias]
    cache.set("hit", VALUE_100)

    def verify() -> None:
        _expect(cache.get("hit") == VALUE_100, "get of a present key did not return its value")

    verify()
    get = cache.get

    def body(n: int) -> None:
        for _ in range(n):
            get("hit")

    return Prepared(loop_runner(body), verify)


def get_or_set_hit(alias: str, context: Context) -> Prepared:
    """``get_or_set`` of one present key with a callable default (a 100-byte ``str``): for us the
    stampede-protected path (``mg`` on memcached 1.6), to set next to ``get, hit``."""
    cache = caches[alias]
    cache.set("gos-hit", VALUE_100)

    def never() -> str:
        raise BenchmarkError("get_or_set of a present key called its default")

    def verify() -> None:
        _expect(cache.get_or_set("gos-hit", never) == VALUE_100, "get_or_set missed a present key")

    verify()
    get_or_set = cache.get_or_set

    def body(n: int) -> None:
        for _ in range(n):
            get_or_set("gos-hit", never)

    return Prepared(loop_runner(body), verify)


def get_miss(alias: str, context: Context) -> Prepared:
    """``get`` of a key that is not there."""
    cache = caches[alias]
    cache.delete("miss")

    def verify() -> None:
        _expect(cache.get("miss", "default") == "default", "get of an absent key found a value")

    verify()
    get = cache.get

    def body(n: int) -> None:
        for _ in range(n):
            get("miss")

    return Prepared(loop_runner(body), verify)


def _set(tag: str, value: str) -> Callable[[str, Context], Prepared]:
    def prepare(alias: str, context: Context) -> Prepared:
        cache = caches[alias]
        keys = _keys(tag)
        verify = _store(cache, keys, value)
        set_ = cache.set

        def body(n: int) -> None:
            for i in range(n):
                set_(keys[i % BATCH], value)

        return Prepared(loop_runner(body), verify)

    prepare.__doc__ = f"``set`` of a {len(value)}-byte ``str``, {BATCH} keys in turn."
    return prepare


def incr(alias: str, context: Context) -> Prepared:
    """``incr`` of a present counter."""
    cache = caches[alias]
    cache.set("counter", 0)
    _expect(cache.incr("counter") == 1, "incr of a counter at 0 did not return 1")

    def verify() -> None:
        _expect(isinstance(cache.get("counter"), int), "the counter is gone")

    increment = cache.incr

    def body(n: int) -> None:
        for _ in range(n):
            increment("counter")

    return Prepared(loop_runner(body), verify)


# -- multi-key -------------------------------------------------------------------------------


def get_many(alias: str, context: Context) -> Prepared:
    """``get_many`` of 100 present keys (100-byte values), spread over the nodes."""
    cache = caches[alias]
    keys = batch_keys()
    verify = _store(cache, keys, VALUE_100)
    get_many_ = cache.get_many

    def body(n: int) -> None:
        for _ in range(n):
            get_many_(keys)

    return Prepared(loop_runner(body), verify)


def set_many(alias: str, context: Context) -> Prepared:
    """``set_many`` of 100 keys (100-byte values)."""
    cache = caches[alias]
    keys = _keys("setmany")
    data = dict.fromkeys(keys, VALUE_100)
    verify = _store(cache, keys, VALUE_100)
    set_many_ = cache.set_many

    def body(n: int) -> None:
        for _ in range(n):
            set_many_(data)

    return Prepared(loop_runner(body), verify)


def delete_many(alias: str, context: Context) -> Prepared:
    """``delete_many`` of 100 keys. Deleted by the first operation, the keys are absent for the
    rest (memcached answers ``NOT_FOUND``): the same work for every backend, and no ``set`` in
    the timed loop."""
    cache = caches[alias]
    keys = _keys("delmany")
    _store(cache, keys, VALUE_100)
    cache.delete_many(keys)

    def verify() -> None:
        _expect(not cache.get_many(keys), "delete_many left keys behind")

    verify()
    delete_many_ = cache.delete_many

    def body(n: int) -> None:
        for _ in range(n):
            delete_many_(keys)

    return Prepared(loop_runner(body), verify)


# -- a request -------------------------------------------------------------------------------

_closing: list[BaseCache] = []


def _close_cache_under_test(**kwargs: Any) -> None:
    for cache in _closing:
        cache.close()


def install_request_finished() -> None:
    """Makes ``request_finished`` close only the cache under test.

    Django's own receivers close every initialized cache alias (all backends of the benchmark
    would pay for each other's ``close()``) and touch the database connections; they are
    replaced by one that does what Django's ``close_caches`` does in an app with one cache.
    """
    from django.core.cache import close_caches
    from django.db import close_old_connections

    request_finished.disconnect(close_caches)
    request_finished.disconnect(close_old_connections)
    request_finished.connect(_close_cache_under_test, dispatch_uid="bench-close-cache")


def request_cycle(alias: str, context: Context) -> Prepared:
    """One request: ``request_finished`` (the backend's ``close()``), then 10 ``get`` hits."""
    cache = caches[alias]
    keys = _keys("request", 10)
    check = _store(cache, keys, VALUE_100)
    send = request_finished.send

    def verify() -> None:
        _closing[:] = [cache]
        send(sender=None)
        check()

    verify()
    get = cache.get

    def body(n: int) -> None:
        _closing[:] = [cache]
        for _ in range(n):
            send(sender=None)
            for key in keys:
                get(key)

    return Prepared(loop_runner(body), verify)


# -- threads and asyncio ---------------------------------------------------------------------


def threads(alias: str, context: Context) -> Prepared:
    """8 threads, each with its own Django cache object (as Django gives each thread), doing
    9 ``get`` hits for each ``set`` over 100 keys; per-op times are over all threads' ops."""
    keys = _keys("mixed")
    verify = _store(caches[alias], keys, VALUE_100)
    pool = context.pool

    def job(n: int, index: int) -> None:
        cache = caches[alias]
        get, set_ = cache.get, cache.set
        offset = index * 13
        for i in range(n):
            key = keys[(i + offset) % BATCH]
            if i % 10 == 9:
                set_(key, VALUE_100)
            else:
                get(key)

    def run(n: int) -> Sample:
        gc.collect()
        return pool.run(job, max(1, n // pool.size))

    return Prepared(run, verify)


def aget(alias: str, context: Context) -> Prepared:
    """``await cache.aget(key)`` of a present key; one ``asyncio.run`` per measurement."""
    cache = caches[alias]
    cache.set("hit", VALUE_100)

    def verify() -> None:
        found = asyncio.run(cache.aget("hit"))
        _expect(found == VALUE_100, "aget of a present key did not return its value")

    verify()

    async def many(n: int) -> None:
        for _ in range(n):
            await cache.aget("hit")

    return Prepared(async_runner(many), verify)


def aget_many(alias: str, context: Context) -> Prepared:
    """``await cache.aget_many(keys)`` of 100 present keys; one ``asyncio.run`` per
    measurement."""
    cache = caches[alias]
    keys = batch_keys()
    _store(cache, keys, VALUE_100)

    def verify() -> None:
        found = asyncio.run(cache.aget_many(keys))
        _expect(len(found) == BATCH, f"aget_many found {len(found)} of {BATCH} keys")

    verify()

    async def many(n: int) -> None:
        for _ in range(n):
            await cache.aget_many(keys)

    return Prepared(async_runner(many), verify)


def aset(alias: str, context: Context) -> Prepared:
    """``await cache.aset(key, value)`` of a 100-byte ``str``, 100 keys in turn; one
    ``asyncio.run`` per measurement."""
    cache = caches[alias]
    keys = _keys("aset")
    verify = _store(cache, keys, VALUE_100)

    async def many(n: int) -> None:
        for i in range(n):
            await cache.aset(keys[i % BATCH], VALUE_100)

    return Prepared(async_runner(many), verify)


def aincr(alias: str, context: Context) -> Prepared:
    """``await cache.aincr(key)`` of a present counter; one ``asyncio.run`` per measurement."""
    cache = caches[alias]
    cache.set("acounter", 0)
    _expect(asyncio.run(cache.aincr("acounter")) == 1, "aincr of a counter at 0 did not return 1")

    def verify() -> None:
        _expect(isinstance(cache.get("acounter"), int), "the counter is gone")

    async def many(n: int) -> None:
        for _ in range(n):
            await cache.aincr("acounter")

    return Prepared(async_runner(many), verify)


def adelete(alias: str, context: Context) -> Prepared:
    """``await cache.adelete(key)``; one ``asyncio.run`` per measurement. Deleted by the first
    operation, the key is absent for the rest (memcached answers ``NOT_FOUND``): the same work
    for every backend, and no ``set`` in the timed loop."""
    cache = caches[alias]
    cache.set("adeleted", VALUE_100)
    _expect(bool(asyncio.run(cache.adelete("adeleted"))), "adelete of a present key failed")

    def verify() -> None:
        _expect(cache.get("adeleted", "default") == "default", "adelete left its key behind")

    verify()

    async def many(n: int) -> None:
        for _ in range(n):
            await cache.adelete("adeleted")

    return Prepared(async_runner(many), verify)


# -- cluster size ----------------------------------------------------------------------------


def get_round_robin(alias: str, context: Context) -> Prepared:
    """``get`` hits of 100 keys in turn, so that every node of the cluster serves some."""
    cache = caches[alias]
    keys = _keys("spread")
    verify = _store(cache, keys, VALUE_100)
    get = cache.get

    def body(n: int) -> None:
        for i in range(n):
            get(keys[i % BATCH])

    return Prepared(loop_runner(body), verify)


# -- compression -----------------------------------------------------------------------------


def _compressed(operation: str) -> Callable[[str, Context], Prepared]:
    def prepare(alias: str, context: Context) -> Prepared:
        cache = compressing_cache(alias)
        value = compressible_value()
        keys = _keys(f"zlib-{operation}", 10)
        stored = _store(cache, keys, value)

        def verify() -> None:
            stored()
            # Stored compressed (flag 8) on exactly one node: a backend that skipped
            # compression would look fast.
            for key in keys:
                flags = stored_flags(alias, cache, key)
                _expect(len(flags) == 1 and flags[0] & 8 != 0, f"{key} stored with {flags}")

        verify()
        call = cache.get if operation == "get" else functools.partial(cache.set, value=value)

        def body(n: int) -> None:
            for i in range(n):
                call(keys[i % 10])

        return Prepared(loop_runner(body), verify)

    prepare.__doc__ = (
        f"``{operation}`` of a 100 KB compressible ``str`` with zlib on (values from "
        f"{MIN_COMPRESS_LEN} bytes, level 6), 10 keys in turn."
    )
    return prepare


WORKLOADS: tuple[Workload, ...] = (
    Workload("get_hit", "get, hit (100 B str)", get_hit),
    Workload("get_or_set_hit", "get_or_set, hit, callable default (100 B str)", get_or_set_hit),
    Workload("get_miss", "get, miss", get_miss),
    Workload("set_100b", "set, 100 B", _set("set100", VALUE_100)),
    Workload("set_10kb", "set, 10 KB", _set("set10k", VALUE_10K)),
    Workload("get_many", "get_many, 100 keys", get_many, unit="call"),
    Workload("set_many", "set_many, 100 keys", set_many, unit="call"),
    Workload("delete_many", "delete_many, 100 keys (absent)", delete_many, unit="call"),
    Workload("incr", "incr", incr),
    Workload(
        "request_cycle",
        "request cycle: `request_finished` (close) + 10 gets",
        request_cycle,
        unit="request",
    ),
    Workload("threads", "8 threads, 90% get / 10% set (unpinned)", threads, pinned=False),
    Workload("aget", "aget (asyncio)", aget, asyncio=True),
    Workload("aget_many", "aget_many, 100 keys (asyncio)", aget_many, unit="call", asyncio=True),
    Workload("aset", "aset, 100 B (asyncio)", aset, asyncio=True),
    Workload("aincr", "aincr (asyncio)", aincr, asyncio=True),
    Workload("adelete", "adelete (absent) (asyncio)", adelete, asyncio=True),
    Workload("get_hit_10_nodes", "get, hit, 10 nodes (one key)", get_hit, nodes=10),
    Workload("get_3_nodes", "get, 3 nodes (100 keys in turn)", get_round_robin),
    Workload("get_10_nodes", "get, 10 nodes (100 keys in turn)", get_round_robin, nodes=10),
    Workload("zlib_set_100kb", "set, 100 KB compressible, zlib on", _compressed("set")),
    Workload("zlib_get_100kb", "get, 100 KB compressible, zlib on", _compressed("get")),
)
