"""A node's items as they are on the wire: bytes and flags read and written unchanged, through
pymemcache with a serde that passes them through, so tests see what each client stored."""

from __future__ import annotations

from pymemcache.client.base import Client as PymemcacheNode


class RawSerde:
    """Stores and reads ``(bytes, flags)`` exactly as given."""

    def serialize(self, key: str, value: tuple[bytes, int]) -> tuple[bytes, int]:
        return value

    def deserialize(self, key: str, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


def _node(address: str) -> PymemcacheNode:
    host, port = address.rsplit(":", 1)
    return PymemcacheNode((host, int(port)), serde=RawSerde())


def stored(address: str, key: str) -> tuple[bytes, int]:
    """The bytes and flags the node at ``address`` holds under ``key`` (which must be there)."""
    node = _node(address)
    try:
        item = node.get(key)
    finally:
        node.close()
    assert item is not None, f"{key!r} is not on {address}"
    return item


def put(address: str, key: str, data: bytes, flags: int) -> None:
    """Stores ``data`` with ``flags`` under ``key`` on the node at ``address``, as given."""
    node = _node(address)
    try:
        assert node.set(key, (data, flags), noreply=False)
    finally:
        node.close()
