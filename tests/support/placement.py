"""Where keys live: finding keys that a given node owns, for tests that need a key on a
particular node (a frozen one, a healthy one)."""

from __future__ import annotations

from typing import Any


def keys_on(cache: Any, node: str, count: int, tag: str) -> list[str]:
    """``count`` keys (``tag-0``, ``tag-1``, ...) that ``node`` owns in ``cache``'s ring."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        key = f"{tag}-{i}"
        if cache._native.node_for(key, cache._prefix, cache.version) == node:
            found.append(key)
        i += 1
        assert i < 100_000, f"no keys found for {node}"
    return found
