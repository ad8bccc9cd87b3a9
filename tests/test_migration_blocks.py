"""django-elastipymemcache's settings blocks, as its READMEs give them (2.x and 3.x), run
unchanged but for ``BACKEND`` against a local cluster; other backends' options that mean
nothing here are refused naming the replacement."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from django.core.cache import BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from django_elasticache_rs.local import LocalCluster
from django_elasticache_rs.options import MIGRATING

BACKEND = "django_elasticache_rs.backend.ElastiCache"

#: OPTIONS of each release's README (and 1.x/2.x's cluster_timeout).
BLOCKS: dict[str, dict[str, Any]] = {
    "2.x": {"ignore_exc": True, "ignore_cluster_errors": True},
    "2.x-cluster-timeout": {"cluster_timeout": 1, "ignore_cluster_errors": False},
    # django-elasticache (pylibmc): its own option, in capitals.
    "django-elasticache": {"IGNORE_CLUSTER_ERRORS": True},
    "3.x": {"ignore_exc": True},
    "3.x-pooling": {
        "use_pooling": True,
        "max_pool_size": 50,
        "pool_idle_timeout": 30,
        "connect_timeout": 0.3,
        "timeout": 0.5,
        "ignore_exc": True,
    },
    "3.x-discovery": {
        "use_pooling": True,
        "discovery_interval": 60.0,
        "discovery_retry_delay": 2.0,
        "ignore_exc": True,
    },
}


def build(location: str, options: dict[str, Any]) -> BaseCache:
    """The cache Django builds for a ``CACHES`` entry with our ``BACKEND``."""
    backend = import_string(BACKEND)
    cache: BaseCache = backend(location, {"OPTIONS": options, "KEY_PREFIX": "migration"})
    return cache


@pytest.mark.parametrize("release", list(BLOCKS))
def test_the_settings_block_runs_unchanged_but_for_backend(
    memcached_cluster: LocalCluster, release: str
) -> None:
    cache = build(memcached_cluster.configuration_endpoint, dict(BLOCKS[release]))
    cache.set("smoke", {"release": release}, 30)
    assert cache.get("smoke") == {"release": release}
    assert cache.add("smoke", "other") is False
    cache.set("count", 1)
    assert cache.incr("count", 2) == 3
    cache.set_many({"a": 1, "b": 2})
    assert cache.get_many(["a", "b", "missing"]) == {"a": 1, "b": 2}
    assert cache.delete("smoke") is True
    assert cache.get("smoke") is None
    # Discovery found the cluster's nodes (the endpoint is not a node of its own).
    assert sorted(cache.servers) == sorted(memcached_cluster.addresses)  # type: ignore[attr-defined]


def test_pymemcaches_serializer_function_is_refused_naming_the_replacement() -> None:
    # OPTIONS["serializer"] is a format's name here; pymemcache's is a function.
    with pytest.raises(ImproperlyConfigured) as refused:
        build("10.0.0.1:11211", {"serializer": pickle.dumps})
    message = str(refused.value)
    assert "OPTIONS['serializer']" in message
    assert "OPTIONS['serde']" in message
    assert MIGRATING in message


@pytest.mark.parametrize(
    ("option", "replacement"),
    [
        ("deserializer", "OPTIONS['serde']"),
        ("binary", "text protocol"),
        ("behaviors", "OPTIONS['hashing']"),
        ("username", "SASL"),
        # django-elasticache's default OPTIONS (pylibmc behaviors given directly).
        ("ketama", "OPTIONS['hashing'] = 'ketama'"),
        ("tcp_nodelay", "OPTIONS['no_delay']"),
        ("send_timeout", "OPTIONS['timeout']"),
    ],
)
def test_another_backends_option_is_refused_naming_the_replacement(
    option: str, replacement: str
) -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        build("10.0.0.1:11211", {option: True})
    message = str(refused.value)
    assert f"OPTIONS[{option!r}]" in message
    assert replacement in message
    assert MIGRATING in message
    assert "did you mean" not in message
