"""Values over the item size (issue 22, item 4): with ``OPTIONS["large_values"]`` a value longer
than the chunk length is stored as chunks (spread over the nodes by their own keys) plus an
index item holding a random generation, against real memcached with its default 1 MB item
size. Overwrites and deletes never leave a reader with a torn value: a reader gets the whole
old value, the whole new one, or a miss. ``max_large_value_length`` bounds a value."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pymemcache.client.base import Client as PymemcacheNode
from pymemcache.client.hash import HashClient
from pymemcache.serde import pickle_serde

from django_elasticache_rs import ValueTooLargeError
from django_elasticache_rs._native import LARGE_FLAG
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support import raw

MB = 1024 * 1024
BIG = os.urandom(20 * MB)
# Two distinct values of 3 MB, for the overwrite races.
FIRST = os.urandom(3 * MB)
SECOND = os.urandom(3 * MB)
DIGESTS = {hashlib.sha256(FIRST).digest(), hashlib.sha256(SECOND).digest()}


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[LocalNode]]:
    """Three memcached nodes of this module's own, with the default item size (1 MB) and room
    for the races' chunks that an overwrite leaves to expire."""
    with LocalNode(memory_mb=256) as a, LocalNode(memory_mb=256) as b:
        with LocalNode(memory_mb=256) as c:
            yield [a, b, c]


def _cache(nodes: list[LocalNode], **options: Any) -> ElastiCache:
    location = [node.address for node in nodes]
    opts = {"large_values": True, "timeout": 10, **options}
    return ElastiCache(location, {"OPTIONS": opts})


def _index(nodes: list[LocalNode], made: str) -> tuple[bytes, int]:
    """The index item of ``made`` as stored, from whichever node holds it."""
    for node in nodes:
        try:
            return raw.stored(node.address, made)
        except AssertionError:
            continue
    raise AssertionError(f"{made!r} is on no node")


def _chunk_keys(nodes: list[LocalNode], made: str) -> list[str]:
    """The chunk keys the index of ``made`` names (its format: docs/configuration.md)."""
    data, _ = _index(nodes, made)
    generation = int.from_bytes(data[5:13], "little")
    total = int.from_bytes(data[17:25], "little")
    chunk_len = int.from_bytes(data[25:29], "little")
    count = -(-total // chunk_len)
    return [f"{made}:large:{generation:016x}:{n}" for n in range(count)]


def _totals(nodes: list[LocalNode]) -> list[int]:
    """Each node's count of items ever stored."""
    totals = []
    for node in nodes:
        host, port = node.address.rsplit(":", 1)
        client = PymemcacheNode((host, int(port)))
        totals.append(int(client.stats()[b"total_items"]))
        client.close()
    return totals


# -- a 20 MB value through the 1 MB item size ----------------------------------------------


def test_a_20_mb_value_is_stored_in_chunks_over_the_nodes_and_read_back(
    nodes: list[LocalNode],
) -> None:
    cache = _cache(nodes)
    cache.set("big", BIG, 300)
    assert cache.get("big") == BIG
    data, flags = _index(nodes, ":1:big")
    assert flags == LARGE_FLAG
    assert data.startswith(b"ECLV\x01") and len(data) == 33
    chunks = _chunk_keys(nodes, ":1:big")
    assert len(chunks) == 21  # chunks of 1 MiB - 1 KiB
    holders = set()
    for key in chunks:
        holders |= {n.address for n in nodes if _has(n, key)}
    assert len(holders) == 3, "chunks route by their own keys, over every node"
    assert cache.delete("big") is True
    assert cache.get("big") is None


def _has(node: LocalNode, key: str) -> bool:
    try:
        raw.stored(node.address, key)
    except AssertionError:
        return False
    return True


def test_a_20_mb_value_through_asyncio(nodes: list[LocalNode]) -> None:
    cache = _cache(nodes)

    async def scenario() -> tuple[Any, Any, bool]:
        await cache.aset("abig", BIG, 300)
        found = await cache.aget("abig")
        many = await cache.aget_many(["abig", "amissing"])
        added = await cache.aadd("abig", b"x" * (2 * MB))
        return found, many, added

    found, many, added = asyncio.run(scenario())
    assert found == BIG
    assert many == {"abig": BIG}
    assert added is False
    assert cache.get("abig") == BIG


def test_a_20_mb_value_through_gevent(nodes: list[LocalNode]) -> None:
    cache = _cache(nodes, gevent=True)
    cache.set("gbig", BIG, 300)
    assert cache.get("gbig") == BIG
    assert cache.get_many(["gbig"]) == {"gbig": BIG}
    assert cache.get_or_set("gbig", lambda: b"computed", 300) == BIG


def test_pickled_and_text_values_keep_their_format(nodes: list[LocalNode]) -> None:
    cache = _cache(nodes)
    text = "é" * (2 * MB)
    structured = {"rows": [list(range(100))] * 5_000, "name": "x" * MB}
    cache.set_many({"text": text, "structured": structured}, 300)
    assert cache.get_many(["text", "structured"]) == {"text": text, "structured": structured}


# -- get_many and set_many mixing large and small keys -------------------------------------


def test_get_many_mixes_large_and_small_keys(nodes: list[LocalNode]) -> None:
    cache = _cache(nodes)
    large_a, large_b = os.urandom(3 * MB), os.urandom(2 * MB + 5)
    failed = cache.set_many(
        {"m:small1": "one", "m:large_a": large_a, "m:small2": 2, "m:large_b": large_b}, 300
    )
    assert failed == []
    cache.delete("m:missing")
    keys = ["m:large_a", "m:small1", "m:missing", "m:large_b", "m:small2", "m:large_a"]
    expected = {"m:small1": "one", "m:large_a": large_a, "m:small2": 2, "m:large_b": large_b}
    before = _get_many_requests(cache)
    assert cache.get_many(keys) == expected
    # Two round trips, each at most one request per node: the keys, then all 7 chunks at once.
    assert _get_many_requests(cache) - before <= 2 * len(nodes)
    assert asyncio.run(cache.aget_many(keys)) == expected


def _get_many_requests(cache: ElastiCache) -> int:
    """The ``get_many`` requests sent so far, over every node."""
    return sum(node["requests"]["get_many"] for node in cache.metrics()["nodes"].values())


def test_add_writes_the_index_only_where_there_is_none(nodes: list[LocalNode]) -> None:
    cache = _cache(nodes)
    cache.delete("added")
    first = os.urandom(2 * MB)
    assert cache.add("added", first, 300) is True
    assert cache.add("added", os.urandom(2 * MB), 300) is False
    assert cache.get("added") == first


def test_get_or_set_reads_a_large_value_without_computing_it(nodes: list[LocalNode]) -> None:
    cache = _cache(nodes)
    cache.delete("computed")
    calls: list[int] = []

    def compute() -> bytes:
        calls.append(1)
        return BIG

    assert cache.get_or_set("computed", compute, 300) == BIG
    assert cache.get_or_set("computed", compute, 300) == BIG
    assert asyncio.run(cache.aget_or_set("computed", compute, 300)) == BIG
    assert calls == [1]


# -- no torn value -------------------------------------------------------------------------


def _race(
    nodes: list[LocalNode], write: Any, rounds: int, readers: int = 3
) -> tuple[int, list[str]]:
    """Runs ``write(cache, round)`` ``rounds`` times on each of two writer threads while
    ``readers`` threads read ``"race"`` until the writers are done; returns how many reads
    found a value, and every read that was neither value nor a miss."""
    done = threading.Event()
    wrong: list[str] = []
    found = [0]
    lock = threading.Lock()

    def writer(offset: int) -> None:
        cache = _cache(nodes)
        for n in range(rounds):
            write(cache, n + offset)

    def reader() -> None:
        cache = _cache(nodes)
        while not done.is_set():
            value = cache.get("race")
            if value is None:
                continue
            with lock:
                found[0] += 1
                if hashlib.sha256(value).digest() not in DIGESTS:
                    wrong.append(f"{len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()}")

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    writers = [threading.Thread(target=writer, args=(offset,)) for offset in (0, 1)]
    for thread in threads + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=300)
    done.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads + writers)
    return found[0], wrong


def test_concurrent_overwrites_never_give_a_torn_value(nodes: list[LocalNode]) -> None:
    _cache(nodes).set("race", FIRST, 300)

    def overwrite(cache: ElastiCache, n: int) -> None:
        cache.set("race", FIRST if n % 2 else SECOND, 300)

    found, wrong = _race(nodes, overwrite, rounds=40)
    assert wrong == []
    assert found > 0


def test_deletes_during_reads_never_give_a_torn_value(nodes: list[LocalNode]) -> None:
    def set_or_delete(cache: ElastiCache, n: int) -> None:
        if n % 3 == 0:
            cache.delete("race")
        else:
            cache.set("race", FIRST if n % 3 == 1 else SECOND, 300)

    found, wrong = _race(nodes, set_or_delete, rounds=60)
    assert wrong == []
    assert found > 0


# -- the bound, and what is read as a miss -------------------------------------------------


def test_a_value_over_the_bound_is_refused_and_nothing_is_stored(nodes: list[LocalNode]) -> None:
    cache = _cache(nodes, max_large_value_length=4 * MB)
    cache.set("bounded", "old", 300)
    before = _totals(nodes)
    with pytest.raises(ValueTooLargeError) as refused:
        cache.set("bounded", os.urandom(4 * MB + 1), 300)
    assert isinstance(refused.value, ValueError)
    assert _totals(nodes) == before, "no chunk and no index was stored"
    assert cache.get("bounded") is None, "the old value is gone, as for any refused set"
    with pytest.raises(ValueTooLargeError):
        cache.add("bounded", os.urandom(5 * MB), 300)
    assert cache.set_many({"bounded": os.urandom(5 * MB), "fits": b"x"}, 300) == ["bounded"]
    assert _totals(nodes) == [t + n for t, n in zip(before, _stored_one(nodes), strict=True)]
    assert cache.get_many(["bounded", "fits"]) == {"fits": b"x"}


def _stored_one(nodes: list[LocalNode]) -> list[int]:
    """1 for the node that holds ``:1:fits``, 0 for the others."""
    return [int(_has(node, ":1:fits")) for node in nodes]


def test_under_ignore_exc_a_value_over_the_bound_is_not_stored(nodes: list[LocalNode]) -> None:
    cache = _cache(nodes, max_large_value_length=4 * MB, ignore_exc=True)
    assert cache.add("ignored", os.urandom(5 * MB), 300) is False
    cache.set("ignored", os.urandom(5 * MB), 300)
    assert cache.get("ignored") is None


def test_a_missing_or_altered_chunk_reads_as_a_miss(
    nodes: list[LocalNode], caplog: pytest.LogCaptureFixture
) -> None:
    cache = _cache(nodes)
    theirs = HashClient([node.address for node in nodes])
    cache.set("holed", FIRST, 300)
    cache.set("altered", SECOND, 300)
    assert theirs.delete(_chunk_keys(nodes, ":1:holed")[1], noreply=False)
    chunk = _chunk_keys(nodes, ":1:altered")[2]
    original = theirs.get(chunk)
    assert theirs.set(chunk, bytes([original[0] ^ 1]) + original[1:], 300, noreply=False)
    with caplog.at_level(logging.WARNING):
        assert cache.get("holed") is None
        assert cache.get("altered") is None
        assert cache.get_many(["holed", "altered"]) == {}
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "lacks 1 of its 4 chunks" in messages
    assert "does not match its checksum" in messages


def test_foreign_readers_see_the_index_bytes_and_ours_without_large_values_a_miss(
    nodes: list[LocalNode],
) -> None:
    cache = _cache(nodes)
    cache.set("foreign", FIRST, 300)
    pymemcache = HashClient([node.address for node in nodes], serde=pickle_serde)
    seen = pymemcache.get(":1:foreign")
    assert isinstance(seen, bytes) and seen.startswith(b"ECLV\x01") and len(seen) == 33
    off = _cache(nodes, large_values=False)
    assert off.get("foreign") is None
    assert off.get_many(["foreign"]) == {}


def _ttl(cache: ElastiCache, made: str) -> int:
    """The seconds ``made`` (a key as stored) has left."""
    seconds = cache.handle.client.start_ttl(made).wait()
    assert isinstance(seconds, int)
    return seconds


def test_touch_moves_the_chunks_expiry_with_the_index(nodes: list[LocalNode]) -> None:
    cache = _cache(nodes)
    cache.set("touched", FIRST, 300)
    chunks = _chunk_keys(nodes, ":1:touched")
    assert all(_ttl(cache, chunk) <= 300 for chunk in chunks)
    assert cache.touch("touched", 3000) is True
    assert asyncio.run(cache.atouch("touched", 4000)) is True
    assert all(3000 < _ttl(cache, key) <= 4000 for key in [":1:touched", *chunks])
    assert cache.get("touched") == FIRST
    cache.delete("touched")
    assert cache.touch("touched", 3000) is False
