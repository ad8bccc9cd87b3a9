"""Django cache backend for Amazon ElastiCache (memcached), with a Rust engine.

``django_elasticache_rs.backend.ElastiCache`` is the Django backend; :class:`Client` is the
native client, usable without Django.
"""

from __future__ import annotations

from django_elasticache_rs._native import Client, __version__, murmur3_32
from django_elasticache_rs.exceptions import (
    CacheClientError,
    CacheConnectionError,
    CacheError,
    CacheServerError,
    CacheTimeoutError,
    InvalidKeyError,
    LockNotAcquiredError,
    ValueTooLargeError,
)

__all__ = [
    "CacheClientError",
    "CacheConnectionError",
    "CacheError",
    "CacheServerError",
    "CacheTimeoutError",
    "Client",
    "InvalidKeyError",
    "LockNotAcquiredError",
    "ValueTooLargeError",
    "__version__",
    "murmur3_32",
]
