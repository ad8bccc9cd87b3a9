"""The exceptions raised by the cache client, all under :class:`CacheError`.

Timeouts are also :class:`TimeoutError` and connection failures also :class:`ConnectionError`,
so code that already handles the builtins keeps working. A connection failure is also the more
specific builtin pymemcache raises for it, so that code written for ``PyMemcacheCache`` catches
it: a name that does not resolve is a :class:`socket.gaierror`, a refused connect a
:class:`ConnectionRefusedError`, a reset a :class:`ConnectionResetError`, a broken pipe a
:class:`BrokenPipeError` (``errno`` set as the system gave it), a failed TLS handshake an
:class:`ssl.SSLError`. An invalid key is also Django's
``InvalidCacheKey`` (a ``ValueError``) when Django is installed.
"""

from __future__ import annotations

import socket
import ssl

try:
    from django.core.cache.backends.base import InvalidCacheKey as _InvalidKeyBase
except ImportError:  # used without Django
    _InvalidKeyBase = ValueError  # type: ignore[misc,assignment]

__all__ = [
    "CacheBrokenPipeError",
    "CacheClientError",
    "CacheConnectionAbortedError",
    "CacheConnectionError",
    "CacheConnectionRefusedError",
    "CacheConnectionResetError",
    "CacheError",
    "CacheNameResolutionError",
    "CacheServerError",
    "CacheTimeoutError",
    "CacheTlsError",
    "InvalidKeyError",
    "LockNotAcquiredError",
    "ValueTooLargeError",
]


class CacheError(Exception):
    """A cache operation failed."""


class CacheTimeoutError(CacheError, TimeoutError):
    """A node did not answer in time (or no pooled connection came free in time)."""


class CacheConnectionError(CacheError, ConnectionError):
    """A node could not be reached, dropped the connection, or is marked down."""


class CacheNameResolutionError(CacheConnectionError, socket.gaierror):
    """A node's name did not resolve: what ``socket.getaddrinfo`` raises in pymemcache."""


class CacheConnectionRefusedError(CacheConnectionError, ConnectionRefusedError):
    """A node refused the connection (nothing listens on its port)."""


class CacheConnectionResetError(CacheConnectionError, ConnectionResetError):
    """A node reset the connection."""


class CacheConnectionAbortedError(CacheConnectionError, ConnectionAbortedError):
    """The connection to a node was aborted."""


class CacheBrokenPipeError(CacheConnectionError, BrokenPipeError):
    """A node closed the connection while a request was being sent."""


class CacheTlsError(CacheConnectionError, ssl.SSLError):
    """TLS with a node failed (an untrusted certificate, a plaintext peer): what pymemcache's
    users see as ``ssl.SSLError``."""

    def __str__(self) -> str:
        # ssl.SSLError shows its args as a tuple unless given (errno, strerror): the message.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class CacheServerError(CacheError):
    """A node answered with an error, or with bytes that are not the protocol."""


class CacheClientError(CacheError):
    """The request is invalid; sending it again cannot succeed."""


class InvalidKeyError(CacheClientError, _InvalidKeyBase):
    """The key is too long, or holds a control character or space."""


class ValueTooLargeError(CacheClientError, ValueError):
    """The value is over the item size limit."""


class LockNotAcquiredError(CacheError, TimeoutError):
    """``with cache.lock(...)`` waited ``blocking_timeout`` seconds without getting the lock."""
