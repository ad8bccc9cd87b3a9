"""Values on the wire beyond pymemcache's format (docs/values.md): the zstd and lz4 compressors,
the JSON, msgpack and class serializers, and signed values, against real memcached.

Every compressor and serializer crosses the blocking, asyncio and gevent paths; readers read
every format whatever they write (a fleet switches gradually); a value whose signature does not
verify (altered, unsigned, foreign, moved to another key) reads as a logged miss and is never
unpickled; keys rotate; bombs are refused; a value the serializer cannot encode stores nothing;
pymemcache and pylibmc see our formats as plain bytes."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import pylibmc
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from pymemcache.client.hash import HashClient
from pymemcache.serde import pickle_serde

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support import raw
from tests.support.serializers import Tagged

#: A value each serializer can encode (JSON and msgpack: no tuples, no bytes inside).
VALUE = {"rows": [{"id": i, "name": f"user {i}", "active": i % 2 == 0} for i in range(300)]}
TEXT = "<li>the same few words, over and over again</li>" * 200
COMPRESSORS = ["zlib", "zstd", "lz4"]
SERIALIZERS = ["pickle", "json", "msgpack", "tests.support.serializers.Tagged"]

#: Our flag bits (format.rs): the classic bits of a value with any of them move up to 16-20.
FLAG_JSON, FLAG_MSGPACK, FLAG_CUSTOM = 1 << 8, 1 << 9, 1 << 10
FLAG_ZSTD, FLAG_LZ4, FLAG_SIGNED = 1 << 11, 1 << 12, 1 << 13
SERIALIZER_FLAG = {"pickle": 0, "json": FLAG_JSON, "msgpack": FLAG_MSGPACK}
COMPRESSOR_FLAG = {"zlib": 8, "zstd": FLAG_ZSTD, "lz4": FLAG_LZ4}


def _cache(memcached: LocalNode, **options: Any) -> ElastiCache:
    return ElastiCache(memcached.address, {"OPTIONS": {"discovery": "off", **options}})


# -- every compressor and serializer, on every path ------------------------------------------


@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("sign", [False, True], ids=["unsigned", "signed"])
def test_every_format_round_trips_on_the_blocking_path(
    memcached: LocalNode, compressor: str, serializer: str, sign: bool
) -> None:
    cache = _cache(
        memcached,
        compressor=compressor,
        serializer=serializer,
        min_compress_len=100,
        sign_values=sign,
    )
    name = f"{compressor}-{serializer}-{sign}"
    cache.set(f"{name}-value", VALUE)
    cache.set(f"{name}-text", TEXT)
    cache.set(f"{name}-n", 41)
    assert cache.get(f"{name}-value") == VALUE
    assert cache.get(f"{name}-text") == TEXT
    assert cache.incr(f"{name}-n") == 42 and cache.get(f"{name}-n") == 42
    assert cache.set_many({f"{name}-a": VALUE, f"{name}-b": "b"}) == []
    assert cache.get_many([f"{name}-a", f"{name}-b", f"{name}-none"]) == {
        f"{name}-a": VALUE,
        f"{name}-b": "b",
    }
    assert cache.get_or_set(f"{name}-computed", lambda: VALUE) == VALUE
    assert cache.get_or_set(f"{name}-computed", lambda: "not again") == VALUE
    assert cache.add(f"{name}-added", VALUE) and cache.get(f"{name}-added") == VALUE
    # What is stored: the compressor's and serializer's bits, the classic ones moved up.
    flags = raw.stored(memcached.address, f":1:{name}-value")[1]
    serializer_flag = SERIALIZER_FLAG.get(serializer, FLAG_CUSTOM)
    expected = serializer_flag | COMPRESSOR_FLAG[compressor] | (FLAG_SIGNED if sign else 0)
    if expected & 0xFF00:
        pickled = 1 if serializer == "pickle" else 0
        zlib_bit = 8 if compressor == "zlib" else 0
        assert flags == (expected & 0xFF00) | ((pickled | zlib_bit) << 16)
    else:
        assert flags == 1 | 8  # pickle and zlib: exactly what pymemcache writes
    # The counter stays digits with the int flag, whatever the format, for memcached's incr.
    assert raw.stored(memcached.address, f":1:{name}-n") == (b"42", 2)


@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_every_format_round_trips_on_the_asyncio_path(
    memcached: LocalNode, compressor: str, serializer: str
) -> None:
    cache = _cache(
        memcached,
        compressor=compressor,
        serializer=serializer,
        min_compress_len=100,
        sign_values=True,
    )
    name = f"async-{compressor}-{serializer}"

    async def run() -> None:
        await cache.aset(f"{name}-value", VALUE)
        assert await cache.aset_many({f"{name}-text": TEXT}) == []
        assert await cache.aget(f"{name}-value") == VALUE
        assert await cache.aget_many([f"{name}-value", f"{name}-text"]) == {
            f"{name}-value": VALUE,
            f"{name}-text": TEXT,
        }
        assert await cache.aget_or_set(f"{name}-computed", lambda: VALUE) == VALUE
        await cache.aset(f"{name}-n", 1)
        assert await cache.aincr(f"{name}-n", 2) == 3

    asyncio.run(run())
    assert cache.get(f"{name}-computed") == VALUE


@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_every_format_round_trips_on_the_gevent_path(
    memcached: LocalNode, compressor: str, serializer: str
) -> None:
    cache = _cache(
        memcached,
        compressor=compressor,
        serializer=serializer,
        min_compress_len=100,
        sign_values=True,
        gevent=True,
    )
    name = f"green-{compressor}-{serializer}"
    cache.set(f"{name}-value", VALUE)
    assert cache.set_many({f"{name}-text": TEXT}) == []
    assert cache.get(f"{name}-value") == VALUE
    assert cache.get_many([f"{name}-value", f"{name}-text"]) == {
        f"{name}-value": VALUE,
        f"{name}-text": TEXT,
    }
    assert cache.get_or_set(f"{name}-computed", lambda: VALUE) == VALUE
    cache.set(f"{name}-n", 5)
    assert cache.incr(f"{name}-n") == 6
    flags = raw.stored(memcached.address, f":1:{name}-value")[1]
    assert flags & COMPRESSOR_FLAG[compressor] or compressor == "zlib"
    assert flags & FLAG_SIGNED


def test_the_class_serializer_is_the_one_codec_for_every_path(memcached: LocalNode) -> None:
    cache = _cache(memcached, serializer="tests.support.serializers.Tagged")
    dumped, loaded = Tagged.dumped, Tagged.loaded
    cache.set("tagged", VALUE)
    assert raw.stored(memcached.address, ":1:tagged")[0].startswith(b"tagged:")
    assert cache.get("tagged") == VALUE
    assert asyncio.run(cache.aget("tagged")) == VALUE
    assert cache.get_many(["tagged"]) == {"tagged": VALUE}
    assert (Tagged.dumped - dumped, Tagged.loaded - loaded) == (1, 3)
    # bytes, str and int keep pymemcache's formats (no dumps): an int stays a counter.
    cache.set_many({"b": b"raw", "s": "text", "n": 7})
    assert Tagged.dumped - dumped == 1
    assert [raw.stored(memcached.address, f":1:{k}") for k in "bsn"] == [
        (b"raw", 0),
        (b"text", 16),
        (b"7", 2),
    ]


# -- defaults, and what pymemcache and pylibmc see -------------------------------------------


def test_the_defaults_write_what_pymemcache_writes(memcached: LocalNode) -> None:
    cache = _cache(memcached, min_compress_len=100)
    cache.set("d-value", VALUE)
    cache.set("d-small", {"a": 1})
    data, flags = raw.stored(memcached.address, ":1:d-value")
    assert flags == 1 | 8
    assert pickle.loads(zlib.decompress(data)) == VALUE
    assert raw.stored(memcached.address, ":1:d-small") == (
        pickle.dumps({"a": 1}, pickle.HIGHEST_PROTOCOL),
        1,
    )
    theirs = HashClient([memcached.address], serde=pickle_serde)  # as PyMemcacheCache
    try:
        assert theirs.get(":1:d-small") == {"a": 1}
    finally:
        theirs.close()
    assert pylibmc.Client([memcached.address]).get(":1:d-small") == {"a": 1}


@pytest.mark.parametrize(
    "options",
    [
        {"compressor": "zstd", "min_compress_len": 100},
        {"compressor": "lz4", "min_compress_len": 100},
        {"serializer": "json"},
        {"serializer": "msgpack"},
        {"sign_values": True},
        {"sign_values": True, "min_compress_len": 100},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_pymemcache_and_pylibmc_see_our_formats_as_the_bytes_stored(
    memcached: LocalNode, options: dict[str, Any]
) -> None:
    cache = _cache(memcached, **options)
    key = "foreign-" + "-".join(f"{k}{v}" for k, v in options.items())
    cache.set(key, VALUE)
    cache.set(key + "-text", TEXT)
    theirs = HashClient([memcached.address], serde=pickle_serde)  # as PyMemcacheCache
    try:
        assert raw.stored(memcached.address, f":1:{key}")[1] & 0xFF00
        for name, value in ((key, VALUE), (key + "-text", TEXT)):
            data, flags = raw.stored(memcached.address, f":1:{name}")
            if not flags & 0xFF00:
                # (JSON and msgpack store str as pymemcache does: it reads it.)
                assert theirs.get(f":1:{name}") == value
                assert pylibmc.Client([memcached.address]).get(f":1:{name}") == value
                continue
            assert flags & 0x1F == 0, "no bit pymemcache or pylibmc acts on"
            # pymemcache's pickle_serde: flags it does not know -> the bytes as they are.
            assert theirs.get(f":1:{name}") == data
            # pylibmc: no type bit -> the bytes, not inflated.
            assert pylibmc.Client([memcached.address]).get(f":1:{name}") == data
    finally:
        theirs.close()


# -- a fleet switching gradually -------------------------------------------------------------


def test_a_fleet_switching_format_gradually_reads_every_writers_values(
    memcached: LocalNode,
) -> None:
    # Old and new writers side by side: every reader reads what every writer wrote.
    configurations: dict[str, dict[str, Any]] = {
        "plain": {},
        "zlib": {"min_compress_len": 100},
        "zstd": {"compressor": "zstd", "min_compress_len": 100},
        "lz4": {"compressor": "lz4", "min_compress_len": 100},
        "json": {"serializer": "json", "compressor": "zstd", "min_compress_len": 100},
        "msgpack": {"serializer": "msgpack", "compressor": "lz4", "min_compress_len": 100},
        "signed": {"compressor": "zstd", "min_compress_len": 100, "sign_values": True},
    }
    caches = {name: _cache(memcached, **options) for name, options in configurations.items()}
    for name, cache in caches.items():
        cache.set(f"fleet-{name}", VALUE)
        cache.set(f"fleet-{name}-text", TEXT)
    keys = [f"fleet-{name}{suffix}" for name in caches for suffix in ("", "-text")]
    for reader_name, reader in caches.items():
        found = reader.get_many(keys)
        if reader_name == "signed":
            # Signing refuses unsigned values: the readers-first rollout turns it on last.
            assert set(found) == {"fleet-signed", "fleet-signed-text"}
        else:
            assert found == {k: TEXT if k.endswith("-text") else VALUE for k in keys}, reader_name
        for name in caches:
            if reader_name != "signed" or name == "signed":
                assert reader.get(f"fleet-{name}") == VALUE, (reader_name, name)


# -- signed values ---------------------------------------------------------------------------


class _LeavesATrace:
    """Unpickling it creates a directory: proof that a pickle was (or was not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def _evil(path: Path) -> bytes:
    return pickle.dumps(_LeavesATrace(path), pickle.HIGHEST_PROTOCOL)


def test_the_trace_of_an_unpickled_value_is_seen(memcached: LocalNode, tmp_path: Path) -> None:
    # The control of the tests below: without signing, the same bytes are unpickled.
    trace = tmp_path / "unpickled"
    raw.put(memcached.address, ":1:evil-control", _evil(trace), 1)
    _cache(memcached).get("evil-control")
    assert trace.is_dir()


def test_an_unsigned_pickle_reads_as_a_logged_miss_and_is_never_unpickled(
    memcached: LocalNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trace = tmp_path / "unpickled"
    raw.put(memcached.address, ":1:evil-unsigned", _evil(trace), 1)
    raw.put(memcached.address, ":1:evil-zlib", zlib.compress(_evil(trace)), 1 | 8)
    cache = _cache(memcached, sign_values=True)
    keys = ["evil-unsigned", "evil-zlib"]
    with caplog.at_level(logging.WARNING):
        for key in keys:
            assert cache.get(key, "miss") == "miss"
        assert cache.get_many(keys) == {}
        assert asyncio.run(cache.aget("evil-unsigned", "miss")) == "miss"
        assert _cache(memcached, sign_values=True, gevent=True).get_many(keys) == {}
        assert cache.get_or_set("evil-unsigned", lambda: "recomputed") == "recomputed"
    assert not trace.exists()
    assert sum("it is not signed" in r.getMessage() for r in caplog.records) >= 5


def test_a_tampered_signed_value_reads_as_a_logged_miss_and_is_never_unpickled(
    memcached: LocalNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trace = tmp_path / "unpickled"
    cache = _cache(memcached, sign_values=True)
    cache.set("signed", {"harmless": True})
    data, flags = raw.stored(memcached.address, ":1:signed")
    assert flags == FLAG_SIGNED | (1 << 16)
    tag = data[:32]
    # The tag kept, the bytes replaced.
    raw.put(memcached.address, ":1:swapped", tag + _evil(trace), flags)
    # A text value whose bytes are a (protocol 0, ASCII) pickle, relabelled as a pickle.
    ascii_pickle = pickle.dumps(_LeavesATrace(trace), 0).decode("ascii")
    cache.set("text", ascii_pickle)
    text_data = raw.stored(memcached.address, ":1:text")[0]
    raw.put(memcached.address, ":1:relabelled", text_data, FLAG_SIGNED | (1 << 16))
    # A genuine signed pickle moved to another key.
    cache.set("genuine", {"for": "another key"})
    raw.put(memcached.address, ":1:moved", *raw.stored(memcached.address, ":1:genuine"))
    # Signed by someone with another key.
    other = _cache(memcached, sign_values=True, signing_key="not our key")
    other.set("foreign", _LeavesATrace(trace))
    assert trace.exists() is False
    keys = ["swapped", "relabelled", "moved", "foreign"]
    with caplog.at_level(logging.WARNING):
        for key in keys:
            assert cache.get(key, "miss") == "miss", key
        assert cache.get_many(keys) == {}
        # A reader that does not sign still verifies what is signed.
        assert _cache(memcached).get_many(keys) == {}
    assert not trace.exists()
    assert sum("signature does not verify" in r.getMessage() for r in caplog.records) >= 12
    assert cache.get("text") == ascii_pickle and cache.get("genuine") == {"for": "another key"}


def test_keys_rotate_with_fallbacks(memcached: LocalNode) -> None:
    old = _cache(memcached, sign_values=True, signing_key="old")
    old.set("rotated", VALUE)
    new = _cache(memcached, sign_values=True, signing_key="new", signing_key_fallbacks=["old"])
    assert new.get("rotated") == VALUE
    new.set("fresh", VALUE)
    assert old.get("fresh") is None  # signed with the new key only
    assert _cache(memcached, sign_values=True, signing_key="new").get("rotated") is None


def test_the_key_is_derived_from_secret_key_and_its_fallbacks(memcached: LocalNode) -> None:
    with override_settings(SECRET_KEY="the old secret key"):
        _cache(memcached, sign_values=True).set("django-rotated", VALUE)
    with override_settings(
        SECRET_KEY="the new secret key", SECRET_KEY_FALLBACKS=["the old secret key"]
    ):
        assert _cache(memcached, sign_values=True).get("django-rotated") == VALUE
    with override_settings(SECRET_KEY="the new secret key", SECRET_KEY_FALLBACKS=[]):
        assert _cache(memcached, sign_values=True).get("django-rotated") is None
    # signing_key given: SECRET_KEY_FALLBACKS is not its fallbacks.
    with override_settings(SECRET_KEY_FALLBACKS=["the old secret key"]):
        reader = _cache(memcached, sign_values=True, signing_key="the new secret key")
        assert reader.get("django-rotated") is None


def test_a_signed_value_moves_between_versions(memcached: LocalNode) -> None:
    # A signature covers the key: incr_version reads the value and signs it for its new key.
    cache = _cache(memcached, sign_values=True)
    cache.set("versioned", VALUE)
    assert cache.incr_version("versioned") == 2
    assert cache.get("versioned", version=2) == VALUE
    assert cache.get("versioned", version=1) is None


def test_counters_work_with_signing_and_only_digits_pass_unsigned(memcached: LocalNode) -> None:
    cache = _cache(memcached, sign_values=True, serializer="json")
    cache.set("hits", 10)
    assert cache.incr("hits", 5) == 15 and cache.decr("hits") == 14
    assert cache.get("hits") == 14
    assert cache.incr("created", initial=3) == 3 and cache.incr("created") == 4
    assert cache.get("created") == 4
    raw.put(memcached.address, ":1:not-digits", b"14; rm -rf", 2)
    assert cache.get("not-digits") is None


# -- bombs and what will not decode ----------------------------------------------------------


@pytest.mark.parametrize("compressor", ["zstd", "lz4"])
def test_a_value_inflating_past_the_cap_is_a_logged_miss(
    memcached: LocalNode, compressor: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer = _cache(memcached, compressor=compressor, min_compress_len=1, max_value_length=8 << 20)
    writer.set(f"bomb-{compressor}", b"\0" * (4 << 20))
    data, _ = raw.stored(memcached.address, f":1:bomb-{compressor}")
    assert len(data) < 64 << 10
    reader = _cache(memcached, max_value_length=1 << 20)
    with caplog.at_level(logging.WARNING):
        assert reader.get(f"bomb-{compressor}", "miss") == "miss"
        assert reader.get_many([f"bomb-{compressor}"]) == {}
    assert any("inflates past 1048576 bytes" in r.getMessage() for r in caplog.records)
    assert writer.get(f"bomb-{compressor}") == b"\0" * (4 << 20)


def test_an_lz4_size_claim_past_the_cap_is_refused_before_allocating(
    memcached: LocalNode, caplog: pytest.LogCaptureFixture
) -> None:
    # 4 GiB - 1 claimed in the prepended size, a few bytes of block: nothing is allocated.
    raw.put(memcached.address, ":1:claim", b"\xff\xff\xff\xff" + b"\x00" * 16, FLAG_LZ4)
    with caplog.at_level(logging.WARNING):
        assert _cache(memcached).get("claim", "miss") == "miss"
    assert any("inflates past 67108864 bytes" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("flag", [FLAG_ZSTD, FLAG_LZ4, FLAG_ZSTD | FLAG_LZ4, FLAG_JSON])
def test_corrupt_values_of_our_formats_read_as_logged_misses(
    memcached: LocalNode, flag: int, caplog: pytest.LogCaptureFixture
) -> None:
    raw.put(memcached.address, f":1:corrupt-{flag}", b"\x28\xb5\x2f\xfd not really", flag)
    with caplog.at_level(logging.WARNING):
        assert _cache(memcached).get(f"corrupt-{flag}", "miss") == "miss"
    assert any("read as a miss" in r.getMessage() for r in caplog.records)


# -- what the serializer cannot encode -------------------------------------------------------


@pytest.mark.parametrize(
    ("serializer", "value", "error"),
    [
        ("json", object(), TypeError),
        ("json", {"when": {1, 2}}, TypeError),
        ("msgpack", object(), TypeError),
        ("tests.support.serializers.Tagged", {"bytes": b"inside"}, TypeError),
    ],
    ids=["json-object", "json-set", "msgpack-object", "class-bytes"],
)
def test_a_value_the_serializer_cannot_encode_raises_and_stores_nothing(
    memcached: LocalNode, serializer: str, value: Any, error: type[Exception]
) -> None:
    cache = _cache(memcached, serializer=serializer)
    # The node is the session's: other tests' keys of these names go first.
    cache.delete_many(["fine", "bad", "async", "computed"])
    cache.set("kept", "before")
    with pytest.raises(error, match=f"the {serializer} serializer cannot encode"):
        cache.set("kept", value)
    with pytest.raises(error, match="nothing was stored"):
        cache.set_many({"fine": "fine", "bad": value})
    with pytest.raises(error):
        asyncio.run(cache.aset("async", value))
    with pytest.raises(error):
        cache.get_or_set("computed", lambda: value)
    assert cache.get("kept") == "before"
    assert cache.get_many(["fine", "bad", "async", "computed"]) == {}


def test_serializer_and_serde_cannot_both_be_given(memcached: LocalNode) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="serializer"):
        _cache(memcached, serializer="json", serde=raw.RawSerde())


def test_a_class_value_is_a_logged_miss_for_a_client_without_the_class(
    memcached: LocalNode, caplog: pytest.LogCaptureFixture
) -> None:
    _cache(memcached, serializer="tests.support.serializers.Tagged").set("classy", VALUE)
    with caplog.at_level(logging.WARNING):
        assert _cache(memcached).get("classy", "miss") == "miss"
    assert any(
        "serializer class this client does not have" in r.getMessage() for r in caplog.records
    )


# -- zstd dictionary -------------------------------------------------------------------------


def _fragment(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "username": f"user{i}",
        "email": f"user{i}@example.com",
        "is_staff": False,
        "profile": {"bio": "", "timezone": "Europe/Paris", "language": "fr"},
    }


def test_a_trained_dictionary_shrinks_small_values_and_is_needed_to_read_them(
    memcached: LocalNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings_cache = {
        "default": {
            "BACKEND": "django_elasticache_rs.backend.ElastiCache",
            "LOCATION": memcached.address,
            "OPTIONS": {"discovery": "off", "serializer": "json"},
        }
    }
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join(f"sample-{i}" for i in range(400)))
    dictionary = tmp_path / "values.zstd-dict"
    with override_settings(CACHES=settings_cache):
        from django.core.cache import caches

        with pytest.raises(CommandError, match="at least 10 samples"):
            call_command(
                "elasticache", "default", train_zstd_dictionary=str(dictionary), keys=str(keys)
            )
        caches["default"].set_many({f"sample-{i}": _fragment(i) for i in range(400)})
        call_command(
            "elasticache",
            "default",
            train_zstd_dictionary=str(dictionary),
            keys=str(keys),
            dictionary_size=4096,
        )
    assert 0 < dictionary.stat().st_size <= 4096
    plain = _cache(memcached, serializer="json", compressor="zstd", min_compress_len=64)
    trained = _cache(
        memcached,
        serializer="json",
        compressor="zstd",
        min_compress_len=64,
        zstd_dictionary=str(dictionary),
    )
    plain.set("small-plain", _fragment(1000))
    trained.set("small-trained", _fragment(1000))
    plain_data = raw.stored(memcached.address, ":1:small-plain")[0]
    trained_data, trained_flags = raw.stored(memcached.address, ":1:small-trained")
    assert trained_flags & FLAG_ZSTD
    assert len(trained_data) < len(plain_data) * 0.7
    assert trained.get("small-trained") == _fragment(1000)
    assert trained.get("small-plain") == _fragment(1000)  # no dictionary needed for it
    with caplog.at_level(logging.WARNING):
        assert plain.get("small-trained", "miss") == "miss"
    assert any("zstd dictionary" in r.getMessage() for r in caplog.records)


def test_a_file_that_is_no_zstd_dictionary_is_refused(memcached: LocalNode) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="not a zstd dictionary"):
        _cache(memcached, compressor="zstd", zstd_dictionary=__file__)


# -- without the optional libraries ----------------------------------------------------------

WRITE_WITHOUT_ORJSON = """
import sys
sys.modules["orjson"] = None  # not installed
from django_elasticache_rs import Client
client = Client([sys.argv[1]], serializer="json")
client.set("stdlib-json", {"name": "caf\\u00e9", "rows": [1, 2, 3]})
assert client.get("stdlib-json") == {"name": "caf\\u00e9", "rows": [1, 2, 3]}
print(client.get("orjson-json"))
"""


def test_the_standard_librarys_json_reads_and_writes_what_orjson_does(
    memcached: LocalNode,
) -> None:
    import subprocess
    import sys

    _cache(memcached, serializer="json").client.set("orjson-json", {"from": "orjson"})
    run = subprocess.run(
        [sys.executable, "-c", WRITE_WITHOUT_ORJSON, memcached.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.strip() == "{'from': 'orjson'}"
    assert _cache(memcached).client.get("stdlib-json") == {"name": "café", "rows": [1, 2, 3]}
    data, flags = raw.stored(memcached.address, "stdlib-json")
    assert flags == FLAG_JSON and data == '{"name":"café","rows":[1,2,3]}'.encode()
