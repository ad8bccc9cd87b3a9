"""Compression (zlib, flag bit 8): every read honours it whatever the settings; writes are
compressed from ``OPTIONS["min_compress_len"]`` at ``compress_level``, only when that makes
them smaller, on every write path (blocking, asyncio, gevent, ``set_many``), and read by
pymemcache's ``CompressedSerde`` and pylibmc. A value that will not inflate (corrupt, or a
bomb past the cap) reads as a miss, logged, and is never allocated whole."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import subprocess
import sys
import zlib
from typing import Any

import pylibmc
import pytest
from pymemcache.client.hash import HashClient
from pymemcache.serde import CompressedSerde

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support import raw

TEXT = "the same few words, over and over again; " * 2_500  # ~100 KB, compresses well
NOISE = random.Random(8).randbytes(20_000)  # does not compress


def _cache(memcached: LocalNode, **options: Any) -> ElastiCache:
    return ElastiCache(memcached.address, {"OPTIONS": {"discovery": "off", **options}})


# -- what is written -----------------------------------------------------------------------


def test_off_by_default_so_old_pymemcache_workers_still_read(memcached: LocalNode) -> None:
    cache = _cache(memcached)
    cache.set("plain", TEXT)
    data, flags = raw.stored(memcached.address, ":1:plain")
    assert flags == 16 and data == TEXT.encode()


@pytest.mark.parametrize("level", [1, 6, 9])
def test_values_from_min_compress_len_are_compressed(memcached: LocalNode, level: int) -> None:
    cache = _cache(memcached, min_compress_len=1000, compress_level=level)
    cache.set("big", TEXT)
    cache.set("small", "x" * 999)
    data, flags = raw.stored(memcached.address, ":1:big")
    assert flags == 16 | 8
    assert len(data) < len(TEXT) // 10
    assert zlib.decompress(data) == TEXT.encode()
    assert raw.stored(memcached.address, ":1:small") == (b"x" * 999, 16)
    # At exactly min_compress_len bytes it is compressed (as pylibmc does).
    cache.set("edge", "y" * 1000)
    assert raw.stored(memcached.address, ":1:edge")[1] == 16 | 8
    assert cache.get("big") == TEXT


def test_the_compressed_form_is_kept_only_when_smaller(memcached: LocalNode) -> None:
    cache = _cache(memcached, min_compress_len=1)
    cache.set("noise", NOISE)
    assert raw.stored(memcached.address, ":1:noise") == (NOISE, 0)
    cache.set("tiny", "ab")
    assert raw.stored(memcached.address, ":1:tiny") == (b"ab", 16)
    assert cache.get("noise") == NOISE


def test_every_write_path_compresses(memcached: LocalNode) -> None:
    cache = _cache(memcached, min_compress_len=1000)
    value = {"rows": [f"{i}:{TEXT[:500]}" for i in range(200)]}  # pickled
    cache.set("set", value)
    cache.add("add", value)
    assert cache.set_many({"many-1": value, "many-2": TEXT}) == []

    async def asynchronous() -> None:
        await cache.aset("aset", value)
        await cache.aadd("aadd", value)
        assert await cache.aset_many({"amany": value}) == []
        assert await cache.aget("aset") == value
        assert await cache.aget_many(["aadd", "amany"]) == {"aadd": value, "amany": value}

    asyncio.run(asynchronous())
    for key in ("set", "add", "many-1", "aset", "aadd", "amany"):
        assert raw.stored(memcached.address, f":1:{key}")[1] == 1 | 8, key
    assert raw.stored(memcached.address, ":1:many-2")[1] == 16 | 8
    assert cache.get_many(["set", "many-2"]) == {"set": value, "many-2": TEXT}


def test_the_gevent_path_compresses_and_decompresses(memcached: LocalNode) -> None:
    cache = _cache(memcached, min_compress_len=1000, gevent=True)
    cache.set("green", TEXT)
    assert raw.stored(memcached.address, ":1:green")[1] == 16 | 8
    assert cache.get("green") == TEXT
    assert cache.get_many(["green"]) == {"green": TEXT}


# -- both ways with the other clients ------------------------------------------------------


@pytest.mark.parametrize("ours_compress", [0, 400])
def test_pymemcache_compressed_serde_reads_ours_and_we_read_its(
    memcached: LocalNode, ours_compress: int
) -> None:
    theirs = HashClient([memcached.address], serde=CompressedSerde(min_compress_len=400))
    cache = _cache(memcached, min_compress_len=ours_compress)
    values: dict[str, Any] = {
        "text": TEXT,
        "bytes": TEXT.encode() * 2,
        "pickle": {"rows": list(range(5_000))},
        # (not a long int: CompressedSerde hands zlib the str pickle_serde makes of it, and fails)
        "small": "short",
        "noise": NOISE,
    }
    try:
        for name, value in values.items():
            theirs.set(f":1:theirs-{name}", value)
            cache.set(f"ours-{name}", value)
        for name, value in values.items():
            assert cache.get(f"theirs-{name}") == value, name
            assert theirs.get(f":1:ours-{name}") == value, name
        assert raw.stored(memcached.address, ":1:theirs-text")[1] & 8
        assert bool(raw.stored(memcached.address, ":1:ours-text")[1] & 8) == bool(ours_compress)
    finally:
        theirs.close()


def test_compressed_serde_as_our_serde_is_not_compressed_twice(memcached: LocalNode) -> None:
    cache = _cache(memcached, serde=CompressedSerde(min_compress_len=400), min_compress_len=10)
    cache.set("k", TEXT)
    data, flags = raw.stored(memcached.address, ":1:k")
    assert flags == 16 | 8 and zlib.decompress(data) == TEXT.encode()
    # Bit 8 is taken off before the serde sees the flags, so it does not inflate again.
    assert cache.get("k") == TEXT


@pytest.mark.parametrize("ours_compress", [0, 400])
def test_pylibmc_min_compress_len_reads_ours_and_we_read_its(
    memcached: LocalNode, ours_compress: int
) -> None:
    theirs = pylibmc.Client([memcached.address])
    cache = _cache(memcached, hashing="pylibmc", min_compress_len=ours_compress)
    values: dict[str, Any] = {
        "text": TEXT,
        "bytes": TEXT.encode(),
        "pickle": {"rows": [f"{i}:{TEXT[:100]}" for i in range(100)]},
        "int": 10**2000,
        "noise": NOISE,
    }
    for name, value in values.items():
        assert theirs.set(f":1:theirs-{name}", value, min_compress_len=400)
        cache.set(f"ours-{name}", value)
    for name, value in values.items():
        assert cache.get(f"theirs-{name}") == value, name
        assert theirs.get(f":1:ours-{name}") == value, name
    assert raw.stored(memcached.address, ":1:theirs-text")[1] == 16 | 8


# -- what will not inflate -----------------------------------------------------------------


def test_corrupt_or_truncated_zlib_reads_as_a_logged_miss(
    memcached: LocalNode, caplog: pytest.LogCaptureFixture
) -> None:
    cache = _cache(memcached)
    good = zlib.compress(TEXT.encode())
    raw.put(memcached.address, ":1:garbage", b"this is not zlib", 16 | 8)
    raw.put(memcached.address, ":1:truncated", good[: len(good) // 2], 16 | 8)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x55
    raw.put(memcached.address, ":1:flipped", bytes(flipped), 16 | 8)
    raw.put(memcached.address, ":1:fine", good, 16 | 8)
    keys = ["garbage", "truncated", "flipped"]
    with caplog.at_level(logging.WARNING):
        for key in keys:
            assert cache.get(key, "default") == "default", key
        assert cache.get_many([*keys, "fine"]) == {"fine": TEXT}
        assert asyncio.run(cache.aget("garbage", "d")) == "d"
    assert sum("cannot decompress" in r.getMessage() for r in caplog.records) >= 5


def test_a_value_inflating_past_max_value_length_is_a_logged_miss(
    memcached: LocalNode, caplog: pytest.LogCaptureFixture
) -> None:
    cache = _cache(memcached, max_value_length=2 << 20)
    raw.put(memcached.address, ":1:over", zlib.compress(b"\0" * ((2 << 20) + 1)), 8)
    raw.put(memcached.address, ":1:at", zlib.compress(b"\0" * (2 << 20)), 8)
    with caplog.at_level(logging.WARNING):
        assert cache.get("over") is None
    assert cache.get("at") == b"\0" * (2 << 20)
    assert any("inflates past 2097152 bytes" in r.getMessage() for r in caplog.records)


def _bomb(size: int) -> bytes:
    deflater = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    return b"".join(deflater.compress(chunk) for _ in range(size >> 20)) + deflater.flush()


READ_IN_A_FRESH_PROCESS = """
import json, resource, sys
from django_elasticache_rs import Client
client = Client([sys.argv[1]])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
value = client.get(sys.argv[2], "miss")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"value": value, "grew_kib": after - before}))
"""


def test_a_decompression_bomb_is_refused_without_being_allocated(memcached: LocalNode) -> None:
    # 256 MiB of zeros in about 260 KB: with max_value_length unset, the cap is 64 MiB.
    bomb = _bomb(256 << 20)
    assert len(bomb) < 512 << 10
    raw.put(memcached.address, ":1:bomb", bomb, 16 | 8)
    # In a fresh process, so that its peak memory says what this read allocated.
    run = subprocess.run(
        [sys.executable, "-c", READ_IN_A_FRESH_PROCESS, memcached.address, ":1:bomb"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome = json.loads(run.stdout)
    assert outcome["value"] == "miss"
    assert outcome["grew_kib"] < 128 << 10, outcome  # not the 256 MiB it would inflate to
    assert "inflates past 67108864 bytes" in run.stderr
