"""A mixed fleet shares one cache: values and key placement agree with pymemcache 4.0.0."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from django.core.cache.backends.memcached import PyMemcacheCache
from pymemcache.client.base import Client as PymemcacheNode
from pymemcache.client.hash import HashClient

from django_elasticache_rs import Client, murmur3_32
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster
from tests.support import raw

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
SERDE_CASES = json.loads((TESTDATA / "pymemcache-serde.json").read_text())["cases"]
HASHING = json.loads((TESTDATA / "pymemcache-hashing.json").read_text())


@pytest.fixture
def ours(memcached_cluster: LocalCluster) -> ElastiCache:
    cache = ElastiCache(memcached_cluster.addresses, {})
    cache.clear()
    return cache


@pytest.fixture
def theirs(memcached_cluster: LocalCluster) -> PyMemcacheCache:
    return PyMemcacheCache(memcached_cluster.addresses, {})


def _value(case: dict[str, Any]) -> Any:
    return eval(case["python_repr"])  # the vectors' own reprs of plain literals


LARGE = {
    "large-bytes": bytes(range(256)) * 2000,
    "large-str": "é日本" * 60_000,
    "large-pickle": {"rows": list(range(60_000))},
}


def _all_values() -> list[tuple[str, Any]]:
    return [(case["name"], _value(case)) for case in SERDE_CASES] + list(LARGE.items())


@pytest.mark.parametrize(("name", "value"), _all_values(), ids=[n for n, _ in _all_values()])
def test_values_written_by_pymemcache_read_back_equal(
    ours: ElastiCache, theirs: PyMemcacheCache, name: str, value: Any
) -> None:
    theirs.set(name, value)
    got = ours.get(name)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(("name", "value"), _all_values(), ids=[n for n, _ in _all_values()])
def test_values_written_by_us_read_back_equal_in_pymemcache(
    ours: ElastiCache, theirs: PyMemcacheCache, name: str, value: Any
) -> None:
    ours.set(name, value)
    got = theirs.get(name)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize("case", SERDE_CASES, ids=[c["name"] for c in SERDE_CASES])
def test_flags_and_bytes_on_the_wire_are_pymemcaches(
    ours: ElastiCache, memcached_cluster: LocalCluster, case: dict[str, Any]
) -> None:
    ours.set("wire", _value(case))
    node = ours.client.node_for("wire", "", 1)
    data, flags = raw.stored(node, ":1:wire")
    assert flags == case["flags"]
    if case["flags"] == 1:
        assert pickle.loads(data) == _value(case)  # any pickle protocol may be used
    else:
        assert data.hex() == case["payload_hex"]


def test_keys_sit_on_the_node_pymemcache_picks(
    ours: ElastiCache, memcached_cluster: LocalCluster
) -> None:
    servers = memcached_cluster.addresses
    hasher = HashClient(servers)
    singles = {n.address: PymemcacheNode(("127.0.0.1", n.port)) for n in memcached_cluster.nodes}
    keys = [f"user:{i}" for i in range(150)] + ["é", "日本", "😀-key"]
    for key in keys:
        ours.set(key, "x")
    try:
        for key in keys:
            made = f":1:{key}"
            expected = hasher.hasher.get_node(made)
            holders = [
                addr for addr, node in singles.items() if node.get(made.encode()) is not None
            ]
            assert holders == [expected], key
    finally:
        for node in singles.values():
            node.close()


def test_every_hashing_vector_through_the_python_api() -> None:
    for case in HASHING["murmur3_32"]:
        assert murmur3_32(case["input"]) == case["murmur3_32"], case["input"]
    checked = 0
    for cluster in HASHING["rendezvous"]:
        client = Client(cluster["nodes"])
        for key, node in cluster["placement"].items():
            assert client.node_for(key) == node, key
            checked += 1
    assert checked > 1000


def test_the_raw_client_is_the_native_one(ours: ElastiCache, theirs: PyMemcacheCache) -> None:
    """``cache._cache``, the raw client third-party code reaches for on Django's memcached
    backends, is ours: what it stores plainly, pymemcache's raw client reads."""
    assert ours._cache is ours.client
    ours._cache.set("raw-key", b"raw bytes")
    assert theirs._cache.get("raw-key") == b"raw bytes"
    assert ours._cache.get("raw-key") == b"raw bytes"
    ours._cache.flush_all()
    assert theirs._cache.get("raw-key") is None
