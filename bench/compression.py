"""The compression rows: ``set`` and ``get`` of a 100 KB compressible value with zlib on in
every backend, each the way its users turn it on.

- ours: ``OPTIONS["min_compress_len"]``;
- django-elastipymemcache and ``PyMemcacheCache``: ``OPTIONS["serde"]`` = pymemcache's
  ``CompressedSerde``;
- ``PyLibMCCache``: pylibmc's ``min_compress_len`` argument of ``set``, which Django's backend
  has no option for: a subclass passes it.

Every backend compresses from the same length at zlib's default level (6). Each row builds its
own cache instance from the alias's ``CACHES`` entry with compression added, so the other rows
keep theirs uncompressed.
"""

from __future__ import annotations

import random
from typing import Any

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.memcached import PyLibMCCache
from django.utils.module_loading import import_string
from pymemcache.client.base import Client as PymemcacheNode
from pymemcache.serde import CompressedSerde

MIN_COMPRESS_LEN = 1024
"""Values from this many bytes are compressed, in every backend."""


def compressible_value(size: int = 100 * 1024) -> str:
    """``size`` characters of words in random order: text that zlib shrinks about 3-fold, as it
    does rendered HTML or JSON."""
    rng = random.Random(100)
    words = [f"{rng.choice(['item', 'user', 'page', 'row'])}-{i}" for i in range(400)]
    text = " ".join(rng.choice(words) for _ in range(size // 5))
    return text[:size]


class CompressingPyLibMCCache(PyLibMCCache):
    """Django's ``PyLibMCCache`` whose ``set`` and ``set_many`` pass pylibmc's
    ``min_compress_len``."""

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        key = self.make_and_validate_key(key, version=version)
        timeout = self.get_backend_timeout(timeout)
        if not self._cache.set(key, value, timeout, min_compress_len=MIN_COMPRESS_LEN):
            self._cache.delete(key)

    def set_many(
        self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        made = {self.make_and_validate_key(key, version=version): key for key in data}
        failed = self._cache.set_multi(
            {safe: data[key] for safe, key in made.items()},
            self.get_backend_timeout(timeout),
            min_compress_len=MIN_COMPRESS_LEN,
        )
        return [made[key] for key in failed]


class _Raw:
    """A pymemcache serde that hands back bytes and flags as stored."""

    def serialize(self, key: str, value: Any) -> tuple[bytes, int]:
        raise NotImplementedError

    def deserialize(self, key: str, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


def stored_flags(alias: str, cache: BaseCache, key: str) -> list[int]:
    """The flags ``key`` is stored with, as each node of ``alias``'s cluster holding it says
    (the node list is the static ``LOCATION`` of another alias on the same cluster)."""
    suffix = "_" + alias.rsplit("_", 1)[1]
    nodes = next(
        entry["LOCATION"]
        for name, entry in settings.CACHES.items()
        if name.endswith(suffix) and isinstance(entry["LOCATION"], list)
    )
    made = cache.make_key(key)
    flags = []
    for node in nodes:
        host, port = node.rsplit(":", 1)
        client = PymemcacheNode((host, int(port)), serde=_Raw())
        try:
            found = client.get(made)
        finally:
            client.close()
        if found is not None:
            flags.append(found[1])
    return flags


def compressing_cache(alias: str) -> BaseCache:
    """A new cache like ``alias``'s, with compression on as its backend's users turn it on."""
    entry = dict(settings.CACHES[alias])
    options = dict(entry.get("OPTIONS", {}))
    backend = entry["BACKEND"]
    if backend == "django_elasticache_rs.backend.ElastiCache":
        options["min_compress_len"] = MIN_COMPRESS_LEN
    elif backend == "django.core.cache.backends.memcached.PyLibMCCache":
        backend = f"{__name__}.{CompressingPyLibMCCache.__name__}"
    else:  # pymemcache underneath: PyMemcacheCache, django-elastipymemcache
        options["serde"] = CompressedSerde(min_compress_len=MIN_COMPRESS_LEN)
    entry["OPTIONS"] = options
    cache: BaseCache = import_string(backend)(entry["LOCATION"], entry)
    return cache
