"""TLS through the Django backend, against memcached started with -Z and certificates made in
the test: nodes are reached by IP and verified against their hostname; bad certificates are
clear errors (misses under ignore_exc), never a fall-back to plaintext."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_elasticache_rs import CacheConnectionError
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster, LocalNode
from django_elasticache_rs.local.certs import Certificates, make_certificates

OPTIONS = {"timeout": 2, "connect_timeout": 2}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(nodes=3, tls=True) as cluster:
        yield cluster


def _exercise(cache: ElastiCache) -> None:
    cache.set("k", "secret")
    assert cache.get("k") == "secret"
    keys = [f"key-{i}-{'x' * 200}" for i in range(300)]  # more than one 16 KB get line
    assert cache.set_many({key: key for key in keys}) == []
    assert cache.get_many(keys) == {key: key for key in keys}
    large = "L" * (200 * 1024)  # many TLS records
    cache.set("large", large)

    async def agets() -> list[Any]:
        return await asyncio.gather(*(cache.aget(k) for k in ["k", "large", "absent"] * 10))

    for _ in range(2):  # from a cold pool, then on the event loop with pooled connections
        assert asyncio.run(agets()) == ["secret", large, None] * 10
    cache.clear()
    assert cache.get("k") is None


def test_discovery_and_every_node_over_tls_with_a_ca_file(tls_cluster: LocalCluster) -> None:
    settings = tls_cluster.caches_setting(**OPTIONS)["default"]
    assert settings["LOCATION"].startswith("localhost:")
    cache = ElastiCache(settings["LOCATION"], settings)
    _exercise(cache)
    # Nodes are reached at their IP; their certificates name only "localhost".
    assert sorted(cache.servers) == sorted(tls_cluster.addresses)
    assert all(server.startswith("127.0.0.1:") for server in cache.servers)


def test_tls_context_is_honoured(tls_cluster: LocalCluster) -> None:
    options = {**OPTIONS, "tls_context": tls_cluster.ssl_context(), "max_pool_size": 7}
    cache = ElastiCache(tls_cluster.configuration_endpoint, {"OPTIONS": options})
    _exercise(cache)


def test_pooled_tls_connections_are_reused_and_later_ones_resume(tls_cluster: LocalCluster) -> None:
    options = {**OPTIONS, "tls_context": tls_cluster.ssl_context(), "max_pool_size": 5}
    cache = ElastiCache(tls_cluster.configuration_endpoint, {"OPTIONS": options})
    for i in range(50):
        cache.set(f"k{i}", i)
    opened = {node: count for node, count, _ in cache.client.connections_opened()}
    assert all(count == 1 for count in opened.values()), opened
    cache.client.close_idle()
    for i in range(50):
        cache.get(f"k{i}")
    resumed = {node: count for node, _, count in cache.client.connections_opened()}
    assert all(count == 1 for count in resumed.values()), resumed


def _node_backend(node: LocalNode, ca: Path, **options: Any) -> ElastiCache:
    options = {**OPTIONS, "tls_ca_file": str(ca), "discovery": "off", **options}
    return ElastiCache(f"localhost:{node.port}", {"OPTIONS": options})


@pytest.mark.parametrize("variant", ["other-ca", "expired", "other-name"])
@pytest.mark.parametrize("ignore_exc", [False, True])
def test_untrusted_certificates_are_refused(
    good: Certificates, tmp_path: Path, variant: str, ignore_exc: bool
) -> None:
    if variant == "other-ca":
        served = make_certificates(tmp_path / "served")
    elif variant == "expired":
        served = make_certificates(tmp_path / "served", ca=good, expired=True)
    else:
        served = make_certificates(tmp_path / "served", ca=good, hostnames=("other.example",))
    # The node serves `served`; the client trusts `good`'s CA and expects "localhost".
    with LocalNode(tls=served, verify_certificate=False) as node:
        cache = _node_backend(node, good.ca_cert, ignore_exc=ignore_exc)
        if ignore_exc:
            assert cache.get("k", "miss") == "miss"
            cache.set("k", 1)
        else:
            with pytest.raises(CacheConnectionError, match=r"TLS with .* failed"):
                cache.get("k")


def test_a_plaintext_node_is_an_error_not_a_plaintext_exchange(
    good: Certificates, memcached: LocalNode
) -> None:
    before = int(memcached.stats()["cmd_get"])
    cache = _node_backend(memcached, good.ca_cert)
    with pytest.raises(CacheConnectionError, match="TLS"):
        cache.get("k")
    assert int(memcached.stats()["cmd_get"]) == before


def test_client_certificates(tmp_path: Path) -> None:
    with LocalCluster(nodes=1, tls=True, require_client_cert=True) as cluster:
        certs = cluster.certificates
        without = ElastiCache(
            cluster.configuration_endpoint,
            {"OPTIONS": {**OPTIONS, "tls_ca_file": str(certs.ca_cert)}},
        )
        with pytest.raises(CacheConnectionError):
            without.set("k", 1)
        settings = cluster.caches_setting(**OPTIONS)["default"]
        assert "tls_cert_file" in settings["OPTIONS"]
        with_cert = ElastiCache(settings["LOCATION"], settings)
        with_cert.set("k", 1)
        assert with_cert.get("k") == 1


def test_a_serverless_like_endpoint_is_one_static_tls_node(good: Certificates) -> None:
    """ElastiCache Serverless: one TLS endpoint that answers ERROR to discovery."""
    with LocalNode(tls=good) as node:
        options = {**OPTIONS, "tls_ca_file": str(good.ca_cert)}
        cache = ElastiCache(f"localhost:{node.port}", {"OPTIONS": options})
        _exercise(cache)
        assert cache.servers == [f"localhost:{node.port}"]


def test_verification_can_be_turned_off_only_explicitly(good: Certificates, tmp_path: Path) -> None:
    misnamed = make_certificates(tmp_path / "misnamed", ca=good, hostnames=("other.example",))
    with LocalNode(tls=misnamed, verify_certificate=False) as node:
        context = ssl.create_default_context(cafile=str(good.ca_cert))
        context.check_hostname = False
        options = {**OPTIONS, "tls_context": context, "discovery": "off"}
        ElastiCache(f"localhost:{node.port}", {"OPTIONS": options}).set("k", 1)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        options = {**OPTIONS, "tls_context": context, "discovery": "off"}
        ElastiCache(f"localhost:{node.port}", {"OPTIONS": options}).set("k", 1)
