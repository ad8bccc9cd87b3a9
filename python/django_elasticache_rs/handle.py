"""``cache.handle``: what the modules built on the backend (locks, stampede protection, the
exporters) need of it, as one small public object rather than the backend's private attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django_elasticache_rs import _green
from django_elasticache_rs._native import Client, Operation
from django_elasticache_rs._polling import FIRST_POLL, LONGEST_POLL, pauses

__all__ = ["FIRST_POLL", "LONGEST_POLL", "MAX_RELATIVE_EXPIRY", "Handle", "pauses"]

#: memcached reads an expiry over 30 days as a Unix time.
MAX_RELATIVE_EXPIRY = 60 * 60 * 24 * 30


@dataclass(frozen=True, slots=True)
class Handle:
    """A backend's native side: the shared native client, how a key and a version reach it,
    and how a blocking call waits. ``cache.handle``, made with the backend object.

    * ``client``: the process's native client of this configuration (``_native.Client``),
      shared by every backend object of it.
    * ``prefix``: the ``KEY_PREFIX`` the native client makes keys with (Django's key function),
      or ``None`` with a custom ``KEY_FUNCTION``, whose finished keys are passed as they are.
    * ``version``: the backend's ``VERSION``, for calls that give none.
    * ``green``: whether blocking calls run on the gevent driver (yielding to the hub) rather
      than blocking the thread; ``calls`` is what they call: the client, or its gevent driver
      (``_green.GreenClient``), with the client's blocking methods.

    ``key(key, version)`` and ``scope(version)`` are what a native call takes for a Django key
    and version: ``client.start_ttl(handle.key(k, v), *handle.scope(v))``; ``drive(operation)``
    runs a native operation the way the backend's blocking methods wait, ``pause(seconds)``
    waits that way (an asyncio caller awaits ``_futures.run(operation)`` and
    ``asyncio.sleep``).
    """

    client: Client
    prefix: str | None
    version: int
    green: bool
    calls: Client | _green.GreenClient
    #: With a custom ``KEY_FUNCTION`` (``prefix`` None): it, and Django's ``KEY_PREFIX``.
    key_func: Callable[[Any, str, int], Any] | None = None
    key_prefix: str = ""

    def key(self, key: Any, version: int | None = None) -> Any:
        """``key`` as the native client takes it: as given when it makes keys itself (with
        ``prefix`` and the version of ``scope``), else the custom key function's key."""
        if self.key_func is None:
            return key
        return self.key_func(key, self.key_prefix, self.version if version is None else version)

    def scope(self, version: int | None = None) -> tuple[str | None, int]:
        """The ``(prefix, version)`` a native call takes after its own arguments."""
        return self.prefix, self.version if version is None else version

    def node_for(self, key: Any, version: int | None = None) -> str:
        """The node (``host:port``) that holds ``key``."""
        return self.client.node_for(self.key(key, version), *self.scope(version))

    def drive(self, operation: Operation) -> Any:
        """Runs ``operation`` the way the backend's blocking methods wait: on this thread, or
        under gevent yielding to the hub; returns its result."""
        if self.green:
            return _green.run(operation)
        return operation.wait()

    def pause(self, seconds: float) -> None:
        """Waits ``seconds`` the way ``drive`` waits."""
        if self.green:
            _green.sleep(seconds)
        else:
            time.sleep(seconds)
