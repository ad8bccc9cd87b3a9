"""A fleet moving from Django's ``PyLibMCCache`` keeps its cache warm: with ``hashing``
"pylibmc" or "ketama" every key sits on the node pylibmc picks, and values cross both ways
with pylibmc 1.6 (libmemcached), compressed or not."""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pylibmc
import pytest
from django.core.cache.backends.memcached import PyLibMCCache

from django_elasticache_rs import Client
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster
from tests.support import pylibmc_vectors, raw

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
VECTORS = json.loads((TESTDATA / "pylibmc-hashing.json").read_text())
MODES = pylibmc_vectors.MODES


class _Point:
    """A value whose type only pickle can carry."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Point) and other.x == self.x

    def __hash__(self) -> int:
        return self.x


#: Values of every kind pylibmc stores differently (bytes, str, bool, int, pickle), small and
#: large, compressible or not.
VALUES: dict[str, Any] = {
    "bytes": b"\x00\xffraw",
    "empty-bytes": b"",
    "str": "text",
    "unicode": "é日本😀",
    "empty-str": "",
    "true": True,
    "false": False,
    "zero": 0,
    "int": 42,
    "negative": -7,
    "int64": 2**63 - 1,
    "beyond-int64": 2**100,
    "negative-big": -(10**40),
    "big-digits": 10**3000,
    "float": 1.5,
    "none": None,
    "list": [1, "a", None],
    "dict": {"a": [1, 2], "b": "é"},
    "tuple": (1, 2),
    "set": {1, 2},
    "bytearray": bytearray(b"ab"),
    "object": _Point(3),
    "large-str": "lorem ipsum dolor " * 20_000,
    "large-bytes": bytes(range(256)) * 1_000,
    "large-pickle": {"rows": list(range(20_000))},
    "noise": random.Random(8).randbytes(50_000),
}


@pytest.fixture(scope="module")
def five_nodes() -> Iterator[LocalCluster]:
    with LocalCluster(nodes=5) as cluster:
        yield cluster


def _flush(addresses: list[str]) -> None:
    Client(addresses).flush_all()


def _holders(addresses: list[str], key: str) -> list[str]:
    """The nodes that hold ``key``, each read alone."""
    return [a for a in addresses if Client([a]).get(key) is not None]


# -- placement -----------------------------------------------------------------------------


def test_the_vectors_are_what_the_installed_pylibmc_computes() -> None:
    assert pylibmc_vectors.generate() == VECTORS


def test_every_vector_through_the_python_api() -> None:
    checked = 0
    for case in VECTORS["cases"]:
        client = Client(case["nodes"], hashing=case["hashing"])
        names = client.servers  # as given, IPv6 without brackets
        for key, index in case["placement"].items():
            assert client.node_for(key) == names[index], (case["hashing"], case["nodes"], key)
            checked += 1
    assert {case["hashing"] for case in VECTORS["cases"]} == set(MODES)
    assert checked > 5000


def _layouts(addresses: list[str]) -> list[list[str]]:
    """Cluster sizes and node orders over the running nodes."""
    return [
        addresses[:2],
        addresses[:3],
        addresses,
        addresses[::-1],
        addresses[2:] + addresses[:2],
    ]


KEYS = [f"user:{i}" for i in range(120)] + ["é", "日本語", "😀-key", "Ünïcödé-ключ", "k" * 200]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", range(5))
def test_keys_pylibmccache_writes_sit_where_we_look(
    five_nodes: LocalCluster, mode: str, layout: int
) -> None:
    addresses = _layouts(five_nodes.addresses)[layout]
    _flush(five_nodes.addresses)
    theirs = PyLibMCCache(addresses, {"OPTIONS": {"behaviors": MODES[mode]}})
    ours = ElastiCache(addresses, {"OPTIONS": {"hashing": mode}})
    for key in KEYS:
        theirs.set(key, "x")
    for key in KEYS:
        made = f":1:{key}"
        assert _holders(addresses, made) == [ours.client.node_for(made)], key
    # And so every one of them reads back through our backend.
    assert ours.get_many(KEYS) == dict.fromkeys(KEYS, "x")


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", range(5))
def test_keys_we_write_sit_where_pylibmccache_looks(
    five_nodes: LocalCluster, mode: str, layout: int
) -> None:
    addresses = _layouts(five_nodes.addresses)[layout]
    _flush(five_nodes.addresses)
    theirs = PyLibMCCache(addresses, {"OPTIONS": {"behaviors": MODES[mode]}})
    ours = ElastiCache(addresses, {"OPTIONS": {"hashing": mode}})
    ours.set_many(dict.fromkeys(KEYS, "y"))
    hasher = pylibmc.Client(addresses, behaviors=MODES[mode])
    for key in KEYS:
        made = f":1:{key}"
        assert _holders(addresses, made) == [addresses[hasher.hash(made)]], key
    assert theirs.get_many(KEYS) == dict.fromkeys(KEYS, "y")


def test_pymemcache_placement_stays_the_default(memcached_cluster: LocalCluster) -> None:
    addresses = memcached_cluster.addresses
    ours = ElastiCache(addresses, {})
    assert ours.client.node_for(":1:k") == Client(addresses, hashing="pymemcache").node_for(":1:k")
    moved = [
        k
        for k in KEYS
        if ours.client.node_for(f":1:{k}")
        != Client(addresses, hashing="pylibmc").node_for(f":1:{k}")
    ]
    assert moved, "the modes place keys alike: the test shows nothing"


@pytest.mark.parametrize("mode", list(MODES))
def test_discovered_nodes_keep_the_endpoint_order(
    elasticache_cluster: LocalCluster, mode: str
) -> None:
    """With discovery the membership is the configuration reply's, in its order (as
    django-elasticache hands it to pylibmc, and as the ElastiCache cluster client for
    libmemcached applies it); nodes are named by IP, as both do by default."""
    endpoint_order = elasticache_cluster.addresses
    ours = ElastiCache(elasticache_cluster.endpoint.address, {"OPTIONS": {"hashing": mode}})
    ours.set_many(dict.fromkeys(KEYS, "z"))
    assert ours.client.servers == endpoint_order
    hasher = pylibmc.Client(endpoint_order, behaviors=MODES[mode])
    for key in KEYS:
        made = f":1:{key}"
        assert ours.client.node_for(made) == endpoint_order[hasher.hash(made)]
    theirs = PyLibMCCache(endpoint_order, {"OPTIONS": {"behaviors": MODES[mode]}})
    assert theirs.get_many(KEYS) == dict.fromkeys(KEYS, "z")


# -- values --------------------------------------------------------------------------------


def _same(got: Any, expected: Any) -> bool:
    return got == expected and type(got) is type(expected)


@pytest.mark.parametrize("compress", [0, 1], ids=["plain", "min_compress_len=1"])
def test_every_value_pylibmc_writes_reads_back_as_pylibmc_reads_it(
    memcached_cluster: LocalCluster, compress: int
) -> None:
    addresses = memcached_cluster.addresses
    theirs = pylibmc.Client(addresses)
    ours = Client(addresses, hashing="pylibmc")
    flags_seen = set()
    for name, value in VALUES.items():
        key = f"from-pylibmc:{compress}:{name}"
        assert theirs.set(key, value, min_compress_len=compress)
        expected = theirs.get(key)  # pylibmc reads bool back as int
        assert _same(ours.get(key), expected), name
        assert _same(ours.get_many([key]).get(key), expected), name
        flags_seen.add(raw.stored(ours.node_for(key), key)[1])
    # Every kind of flags pylibmc writes was read: bytes 0, pickle 1, bool 2, int 4, str 16,
    # and with bit 8 (zlib) when compressed.
    # (pylibmc keeps the compressed form only when it is smaller, as we do.)
    if compress:
        assert {8, 1 | 8, 4 | 8, 16 | 8} <= flags_seen, flags_seen
    else:
        assert flags_seen == {0, 1, 2, 4, 16}


@pytest.mark.parametrize("compress", [0, 1], ids=["plain", "min_compress_len=1"])
def test_every_value_we_write_reads_back_equal_in_pylibmc(
    memcached_cluster: LocalCluster, compress: int
) -> None:
    addresses = memcached_cluster.addresses
    theirs = pylibmc.Client(addresses)
    ours = Client(addresses, hashing="pylibmc", min_compress_len=compress)
    compressed = 0
    for name, value in VALUES.items():
        key = f"from-us:{compress}:{name}"
        assert ours.set(key, value)
        assert _same(theirs.get(key), value), name
        compressed += bool(raw.stored(ours.node_for(key), key)[1] & 8)
    many = {f"from-us-many:{compress}:{name}": v for name, v in VALUES.items()}
    assert ours.set_many(many) == []
    got = theirs.get_multi(list(many))
    assert all(_same(got[k], v) for k, v in many.items())
    # Compression was used where it helps, and only when asked for.
    assert (compressed > 5) if compress else (compressed == 0)


@pytest.mark.parametrize("mode", list(MODES))
def test_django_pylibmccache_and_ours_read_each_others_values(
    memcached_cluster: LocalCluster, mode: str
) -> None:
    addresses = memcached_cluster.addresses
    theirs = PyLibMCCache(addresses, {"OPTIONS": {"behaviors": MODES[mode]}})
    ours = ElastiCache(addresses, {"OPTIONS": {"hashing": mode, "min_compress_len": 1024}})
    for name, value in VALUES.items():
        theirs.set(f"theirs:{name}", value)
        ours.set(f"ours:{name}", value)
    for name, value in VALUES.items():
        assert _same(ours.get(f"theirs:{name}"), theirs.get(f"theirs:{name}")), name
        assert _same(theirs.get(f"ours:{name}"), value), name
    assert ours.get_many([f"theirs:{n}" for n in VALUES]) == {
        f"theirs:{n}": theirs.get(f"theirs:{n}") for n in VALUES
    }


def test_pickles_cross_at_every_protocol_pylibmc_may_use(memcached_cluster: LocalCluster) -> None:
    addresses = memcached_cluster.addresses
    ours = Client(addresses, hashing="pylibmc")
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        theirs = pylibmc.Client(addresses, behaviors={"pickle_protocol": protocol})
        theirs.set(f"pickle-{protocol}", _Point(protocol))
        assert ours.get(f"pickle-{protocol}") == _Point(protocol)
