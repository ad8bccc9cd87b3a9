"""``cache.handle``: the small public object that locks, stampede protection and the exporters
use instead of the backend's private attributes; the gevent driver's methods derived from the
native client's operations; the traced methods from the backend's declaration."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from django_elasticache_rs import _green
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.handle import Handle
from django_elasticache_rs.local import LocalNode


def backend(location: str, **params: Any) -> ElastiCache:
    return ElastiCache(
        location,
        {"KEY_PREFIX": uuid.uuid4().hex, "OPTIONS": {"discovery": "off"}, **params},
    )


def custom_key(key: Any, key_prefix: str, version: Any) -> str:
    return f"custom|{key_prefix}|{version}|{key}"


def test_the_handle_names_the_client_prefix_and_version(memcached: LocalNode) -> None:
    cache = backend(memcached.address, VERSION=3)
    handle = cache.handle
    assert isinstance(handle, Handle)
    assert handle.client is cache.client
    assert handle.prefix == cache.key_prefix
    assert handle.version == 3
    assert not handle.green
    assert handle.calls is cache.client
    with pytest.raises(dataclasses.FrozenInstanceError):
        handle.version = 4  # type: ignore[misc]
    # With Django's key function the native client makes the key: it is passed as given.
    assert handle.key("k") == "k"
    assert handle.scope() == (cache.key_prefix, 3)
    assert handle.scope(7) == (cache.key_prefix, 7)


def test_a_native_call_through_the_handle_sees_what_the_cache_stored(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    handle = cache.handle
    cache.set("k", "v", version=2)
    assert handle.drive(handle.client.start_get(handle.key("k", 2), None, *handle.scope(2))) == "v"
    assert handle.drive(handle.client.start_get(handle.key("k"), None, *handle.scope())) is None
    assert handle.node_for("k", 2) == memcached.address


def test_with_a_custom_key_function_the_handle_makes_the_key(memcached: LocalNode) -> None:
    cache = backend(memcached.address, KEY_FUNCTION=custom_key, VERSION=5)
    handle = cache.handle
    assert handle.prefix is None
    assert handle.key("k") == cache.make_key("k") == f"custom|{cache.key_prefix}|5|k"
    assert handle.key("k", 2) == cache.make_key("k", 2)
    cache.set("k", "v")
    assert handle.drive(handle.client.start_get(handle.key("k"), None, *handle.scope())) == "v"


def test_the_gevent_driver_has_every_command_of_the_native_client(memcached: LocalNode) -> None:
    cache = backend(memcached.address)
    green = _green.GreenClient(cache.client)
    commands = [name[len("start_") :] for name in dir(cache.client) if name.startswith("start_")]
    assert {"get", "set", "get_many", "touch", "flush_all", "get_or_lease"} <= set(commands)
    for name in commands:
        assert callable(getattr(green, name))
    # Made once, then found as a plain attribute.
    assert green.get is green.get
    assert "get" in vars(green)
    with pytest.raises(AttributeError, match="no_such_command"):
        _ = green.no_such_command
    with pytest.raises(AttributeError):
        _ = green._private


def test_the_traced_methods_are_the_declared_commands_and_exist() -> None:
    for name, operation, keys in ElastiCache.COMMANDS:
        assert callable(getattr(ElastiCache, name))
        assert callable(getattr(ElastiCache, f"a{name}"))
        assert operation
        assert keys in ("key", "keys", None)
