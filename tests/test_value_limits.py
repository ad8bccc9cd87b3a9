"""A value too large is one error whoever refuses it: the client (over ``max_value_length``) or
memcached (over its item size, 1 MiB by default). Either way the old value is gone, ``set_many``
names the key, and under ``ignore_exc`` it is simply not stored."""

from __future__ import annotations

from typing import Any

import pytest

from django_elasticache_rs import ValueTooLargeError
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode

# Under the client's default cap (1 MiB + 64 KiB): memcached itself refuses it.
REFUSED_BY_MEMCACHED = "m" * (1024 * 1024 + 1)
# Over the client's cap: never sent.
REFUSED_BY_THE_CLIENT = b"c" * (2 * 1024 * 1024)


def backend(node: LocalNode, **options: Any) -> ElastiCache:
    return ElastiCache(node.address, {"OPTIONS": options})


@pytest.mark.parametrize(
    "value", [REFUSED_BY_MEMCACHED, REFUSED_BY_THE_CLIENT], ids=["memcached", "client"]
)
def test_a_value_too_large_raises_value_too_large_and_removes_the_old_value(
    memcached: LocalNode, value: object
) -> None:
    cache = backend(memcached)
    cache.delete("limits:other")
    cache.set("limits:big", "old")
    with pytest.raises(ValueTooLargeError):
        cache.set("limits:big", value)
    assert cache.get("limits:big") is None
    with pytest.raises(ValueTooLargeError):
        cache.add("limits:other", value)
    assert cache.get("limits:other") is None


@pytest.mark.parametrize(
    "value", [REFUSED_BY_MEMCACHED, REFUSED_BY_THE_CLIENT], ids=["memcached", "client"]
)
def test_under_ignore_exc_a_value_too_large_is_not_stored(
    memcached: LocalNode, value: object
) -> None:
    cache = backend(memcached, ignore_exc=True)
    cache.set("limits:ignored", "old")
    cache.set("limits:ignored", value)
    assert cache.get("limits:ignored") is None
    assert cache.add("limits:ignored", value) is False
    assert cache.get("limits:ignored") is None


def test_set_many_reports_values_too_large_for_either_limit(memcached: LocalNode) -> None:
    cache = backend(memcached)
    cache.set_many({"limits:a": "old", "limits:b": "old", "limits:c": "old"})
    failed = cache.set_many(
        {"limits:a": "new", "limits:b": REFUSED_BY_MEMCACHED, "limits:c": REFUSED_BY_THE_CLIENT}
    )
    assert sorted(failed) == ["limits:b", "limits:c"]
    assert cache.get_many(["limits:a", "limits:b", "limits:c"]) == {"limits:a": "new"}
