"""Backends the tests build with a native client of their own, and what they read of a node."""

from __future__ import annotations

import uuid
from typing import Any

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode


def own_backend(location: str | list[str], tag: str, **options: Any) -> ElastiCache:
    """A backend whose native client no other test shares (a unique ``KEY_PREFIX``, ``tag``
    and a random suffix, makes its configuration one of its own). ``options`` are its
    ``OPTIONS`` besides ``discovery: "off"``."""
    return ElastiCache(
        location,
        {
            "KEY_PREFIX": f"{tag}-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"discovery": "off", **options},
        },
    )


def cmd_get(node: LocalNode) -> int:
    """The ``get`` requests ``node`` has served (memcached's ``cmd_get``)."""
    return int(node.stats()["cmd_get"])
